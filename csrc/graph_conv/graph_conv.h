#pragma once
// Shared checks of the graph convolution kernels (CPU and CUDA).
#include <ATen/ATen.h>

namespace skelfast {

// per_sample_A: the kernel also takes one adjacency per sample, A (N, K, V, V) (2s-AGCN's
// data-dependent graphs), without a bias.
inline void check_graph_conv_inputs(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, const at::Tensor& A,
                                    bool per_sample_A = false) {
  TORCH_CHECK(x.dim() == 4, "graph_conv: x must be (N, C_in, T, V), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2, "graph_conv: weight must be (K*C_out, C_in), got ", weight.sizes());
  if (per_sample_A && A.dim() == 4) {
    TORCH_CHECK(A.size(0) == x.size(0) && A.size(2) == A.size(3), "graph_conv: a per-sample A must be (N, K, V, V) with N=",
                x.size(0), ", got ", A.sizes());
    TORCH_CHECK(!bias.has_value(), "graph_conv: a per-sample A (N, K, V, V) takes no bias (add it to the output)");
  } else {
    TORCH_CHECK(A.dim() == 3 && A.size(1) == A.size(2), "graph_conv: A must be (K, V, V)",
                per_sample_A ? " or (N, K, V, V)" : "", ", got ", A.sizes());
  }
  const int64_t K = A.size(-3), V = A.size(-1);
  TORCH_CHECK(x.size(3) == V, "graph_conv: x has V=", x.size(3), " joints but A has V=", V);
  TORCH_CHECK(K > 0 && weight.size(0) % K == 0, "graph_conv: weight rows (", weight.size(0),
              ") must be K*C_out with K=", K);
  TORCH_CHECK(weight.size(1) == x.size(1), "graph_conv: weight has C_in=", weight.size(1), " but x has ",
              x.size(1), " channels");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && A.scalar_type() == x.scalar_type(),
              "graph_conv: x, weight and A must share one dtype");
  TORCH_CHECK(weight.device() == x.device() && A.device() == x.device(),
              "graph_conv: x, weight and A must be on one device");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "graph_conv: bias must be (K*C_out,), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "graph_conv: bias must match x in dtype and device");
  }
}

// The bias enters every output as sum_k b_k[o] * colsum(A_k)[w]: an (O, V) table, broadcast over t.
inline at::Tensor graph_conv_bias_table(const at::Tensor& bias, const at::Tensor& A, int64_t K, int64_t O) {
  return at::matmul(bias.view({K, O}).t(), A.sum(1));  // (O, K) @ (K, V)
}

// The gradients that flow through that table, from gsum (O, V) = grad summed over n and t:
// db[k*O + o] = sum_w gsum[o, w] colsum(A_k)[w], and dA[k, v, w] gains sum_o b_k[o] gsum[o, w].
inline at::Tensor graph_conv_bias_grad(const at::Tensor& A, const at::Tensor& gsum, int64_t K, int64_t O) {
  return at::matmul(A.sum(1), gsum.t()).reshape({K * O}).contiguous();
}

inline at::Tensor graph_conv_bias_adjacency_grad(const at::Tensor& bias, const at::Tensor& gsum, int64_t K,
                                                 int64_t O) {
  return at::matmul(bias.view({K, O}), gsum).unsqueeze(1);  // (K, 1, V), the same for every v
}

}  // namespace skelfast
