// CUDA kernels of skelfast::graph_conv, forward and backward.
//
// The channel mix Z = W x (K*C_out x C_in times C_in x T*V per sample) runs on cuBLAS through
// ATen. The graph aggregation, which the reference does as permute copies plus a batched GEMM
// with inner dimension V, is a custom kernel here: each output row (n, o, t) reads its K*V
// inputs once into shared memory, A sits in shared memory for the whole block, and the sum over
// (k, v) is accumulated in float (opmath) for every dtype. The same shape of kernel computes the
// backward's dZ = g A_k^T, and a block-tiled reduction computes dA without materialising the
// (N*C_out*T, K*V) products.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>

#include "graph_conv.h"

namespace skelfast {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
constexpr int kRowsPerTile = 16;  // rows of the dA reduction staged in shared memory at once

// y[row, w] = sum_k sum_v z[k-slice of row, v] * A[k, v, w] (+ bias_table[o, w]).
// Rows are (n, o, t); z is (N, K, O, T, V), y is (N, O, T, V). One thread per output element.
template <typename scalar_t>
__global__ void aggregate_forward_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ A,
                                         const scalar_t* __restrict__ bias_table, scalar_t* __restrict__ y,
                                         int64_t N, int K, int64_t O, int64_t T, int V) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* A_s = reinterpret_cast<acc_t*>(smem_raw);  // K * V * V
  for (int i = threadIdx.x; i < K * V * V; i += blockDim.x) A_s[i] = static_cast<acc_t>(A[i]);
  __syncthreads();

  const int64_t total = N * O * T * V;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int w = static_cast<int>(idx % V);
  const int64_t row = idx / V;  // (n, o, t)
  const int64_t t = row % T;
  const int64_t o = (row / T) % O;
  const int64_t n = row / (T * O);
  acc_t acc = bias_table != nullptr ? static_cast<acc_t>(bias_table[o * V + w]) : acc_t(0);
  for (int k = 0; k < K; ++k) {
    const scalar_t* zrow = z + (((n * K + k) * O + o) * T + t) * V;
    const acc_t* Ak = A_s + k * V * V;
    for (int v = 0; v < V; ++v) acc += static_cast<acc_t>(zrow[v]) * Ak[v * V + w];
  }
  y[idx] = static_cast<scalar_t>(acc);
}

// dz[n, k, o, t, v] = sum_w g[n, o, t, w] * A[k, v, w]. One thread per dz element.
template <typename scalar_t>
__global__ void aggregate_backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ A,
                                          scalar_t* __restrict__ dz, int64_t N, int K, int64_t O, int64_t T,
                                          int V) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* A_s = reinterpret_cast<acc_t*>(smem_raw);
  for (int i = threadIdx.x; i < K * V * V; i += blockDim.x) A_s[i] = static_cast<acc_t>(A[i]);
  __syncthreads();

  const int64_t total = N * K * O * T * V;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int v = static_cast<int>(idx % V);
  const int64_t t = (idx / V) % T;
  const int64_t o = (idx / (V * T)) % O;
  const int k = static_cast<int>((idx / (V * T * O)) % K);
  const int64_t n = idx / (V * T * O * K);
  const scalar_t* grow = g + ((n * O + o) * T + t) * V;
  const acc_t* Akv = A_s + (k * V + v) * V;
  acc_t acc = 0;
  for (int w = 0; w < V; ++w) acc += static_cast<acc_t>(grow[w]) * Akv[w];
  dz[idx] = static_cast<scalar_t>(acc);
}

// dA[k, v, w] += sum over rows (n, o, t) of z[n, k, o, t, v] * g[n, o, t, w].
// Grid (row chunks, K); each block stages kRowsPerTile rows of z and g in shared memory, each
// thread owns some (v, w) pairs, and block partial sums go to dA_acc (float) with atomics.
template <typename scalar_t>
__global__ void adjacency_grad_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ g,
                                      at::opmath_type<scalar_t>* __restrict__ dA_acc, int64_t N, int K, int64_t O,
                                      int64_t T, int V, int64_t rows_per_block) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* z_s = reinterpret_cast<acc_t*>(smem_raw);  // kRowsPerTile * V
  acc_t* g_s = z_s + kRowsPerTile * V;              // kRowsPerTile * V
  const int k = blockIdx.y;
  const int64_t rows = N * O * T;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t row_end = rows < row_begin + rows_per_block ? rows : row_begin + rows_per_block;
  constexpr int kMaxPairsPerThread = 16;  // V*V <= kThreads * 16, checked on the host
  acc_t partial[kMaxPairsPerThread];
  for (int p = 0; p < kMaxPairsPerThread; ++p) partial[p] = 0;

  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowsPerTile) {
    const int tile = static_cast<int>(row_end - r0 < kRowsPerTile ? row_end - r0 : kRowsPerTile);
    for (int i = threadIdx.x; i < tile * V; i += blockDim.x) {
      const int64_t row = r0 + i / V;
      const int v = i % V;
      const int64_t t = row % T, o = (row / T) % O, n = row / (T * O);
      z_s[i] = static_cast<acc_t>(z[(((n * K + k) * O + o) * T + t) * V + v]);
      g_s[i] = static_cast<acc_t>(g[row * V + v]);
    }
    __syncthreads();
    for (int p = 0, pair = threadIdx.x; pair < V * V; ++p, pair += blockDim.x) {
      const int v = pair / V, w = pair % V;
      acc_t acc = 0;
      for (int r = 0; r < tile; ++r) acc += z_s[r * V + v] * g_s[r * V + w];
      partial[p] += acc;
    }
    __syncthreads();
  }
  for (int p = 0, pair = threadIdx.x; pair < V * V; ++p, pair += blockDim.x) {
    atomicAdd(dA_acc + static_cast<int64_t>(k) * V * V + pair, partial[p]);
  }
}

int64_t blocks_for(int64_t total) { return (total + kThreads - 1) / kThreads; }

void check_cuda(const Tensor& x, const Tensor& A) {
  TORCH_CHECK(x.is_cuda(), "graph_conv (cpp CUDA kernel): x must be a CUDA tensor");
  const int64_t K = A.size(0), V = A.size(1);
  TORCH_CHECK(V * V <= kThreads * 16, "graph_conv (cpp CUDA kernel): V=", V, " joints is more than supported (64)");
  TORCH_CHECK(K * V * V * 8 <= 48 * 1024, "graph_conv (cpp CUDA kernel): A of shape ", A.sizes(),
              " does not fit in shared memory");
}

// Z = W x per sample: (N, K*O, T*V), on cuBLAS through ATen.
Tensor channel_mix(const Tensor& x, const Tensor& weight) {
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  return at::matmul(weight, x.reshape({N, C, T * V}));
}

Tensor graph_conv_cuda(const Tensor& x_in, const Tensor& weight_in, const std::optional<Tensor>& bias,
                       const Tensor& A_in) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in);
  check_cuda(x_in, A_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const int64_t N = x.size(0), T = x.size(2), V = x.size(3), K = A.size(0), O = weight.size(0) / K;
  Tensor y = at::empty({N, O, T, V}, x.options());
  if (y.numel() == 0) return y;
  const Tensor z = channel_mix(x, weight);
  Tensor bias_table;
  if (bias.has_value()) bias_table = graph_conv_bias_table(*bias, A, K, O).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "graph_conv_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = sizeof(acc_t) * K * V * V;
    aggregate_forward_kernel<scalar_t><<<blocks_for(y.numel()), kThreads, smem, stream>>>(
        z.const_data_ptr<scalar_t>(), A.const_data_ptr<scalar_t>(),
        bias.has_value() ? bias_table.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(), N,
        static_cast<int>(K), O, T, static_cast<int>(V));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> graph_conv_backward_cuda(const Tensor& grad_in, const Tensor& x_in,
                                                                    const Tensor& weight_in,
                                                                    const std::optional<Tensor>& bias,
                                                                    const Tensor& A_in, std::array<bool, 4> mask) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in);
  check_cuda(x_in, A_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3), K = A.size(0);
  const int64_t O = weight.size(0) / K;
  const Tensor g = grad_in.contiguous().to(x.scalar_type());
  const auto opts = x.options();
  const bool need_x = mask[0], need_w = mask[1], need_b = mask[2] && bias.has_value(), need_A = mask[3];
  Tensor dx = at::empty({0}, opts), dW = at::empty({0}, opts), db = at::empty({0}, opts), dA = at::empty({0}, opts);
  auto stream = c10::cuda::getCurrentCUDAStream();

  if (need_x || need_w) {
    Tensor dz = at::empty({N, K * O, T * V}, opts);
    if (dz.numel() > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "graph_conv_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        aggregate_backward_kernel<scalar_t><<<blocks_for(dz.numel()), kThreads, sizeof(acc_t) * K * V * V, stream>>>(
            g.const_data_ptr<scalar_t>(), A.const_data_ptr<scalar_t>(), dz.mutable_data_ptr<scalar_t>(), N,
            static_cast<int>(K), O, T, static_cast<int>(V));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    } else {
      dz.zero_();
    }
    if (need_x) dx = at::matmul(weight.t(), dz).view({N, C, T, V});
    if (need_w) dW = at::matmul(dz, x.reshape({N, C, T * V}).transpose(1, 2)).sum(0);
  }
  const Tensor gsum = (need_b || (need_A && bias.has_value())) ? g.sum({0, 2}) : Tensor();  // (O, V)
  if (need_b) db = graph_conv_bias_grad(A, gsum, K, O);
  if (need_A) {
    Tensor dA_acc = at::zeros({K, V, V}, opts.dtype(at::toOpMathType(x.scalar_type())));
    const int64_t rows = N * O * T;
    if (rows > 0 && C > 0) {
      const Tensor z = channel_mix(x, weight);
      const int64_t rows_per_block = 256;
      const dim3 grid(static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block), static_cast<unsigned>(K));
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "graph_conv_adjacency_grad", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        adjacency_grad_kernel<scalar_t><<<grid, kThreads, sizeof(acc_t) * 2 * kRowsPerTile * V, stream>>>(
            z.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), dA_acc.mutable_data_ptr<acc_t>(), N,
            static_cast<int>(K), O, T, static_cast<int>(V), rows_per_block);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    if (bias.has_value()) {
      dA_acc.add_(graph_conv_bias_adjacency_grad(*bias, gsum, K, O).to(dA_acc.scalar_type()));
    }
    dA = dA_acc.to(x.scalar_type());
  }
  return {dx, dW, db, dA};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CUDA, m) {
  m.impl("graph_conv", &graph_conv_cuda);
  m.impl("graph_conv_backward", &graph_conv_backward_cuda);
}

}  // namespace skelfast
