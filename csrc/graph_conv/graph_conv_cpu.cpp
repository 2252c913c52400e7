// CPU kernels of skelfast::graph_conv, forward and backward.
//
// The op is y_n = sum_k (W_k x_n + b_k) A_k per sample n, with x_n viewed as (C, T*V). It is
// computed sample by sample, so the only intermediate is one sample's (K, *, T, V) buffer per
// thread (cache-sized) instead of the reference's (N, K, C_out, T, V) tensor, and every product
// is a GEMM. Two contraction orders, chosen from the channel counts:
//   aggregate-first (C_in <= C_out): X_k = x_n A_k (K small GEMMs over C_in*T rows), then one
//     GEMM y_n = [W_0 .. W_{K-1}] [X_0; ..; X_{K-1}] with inner dimension K*C_in;
//   mix-first (C_out < C_in): Z = W x_n (one GEMM), then y_n = sum_k Z_k A_k over C_out*T rows.
// The small aggregation GEMMs scale with whichever channel count is smaller.
// Samples are split into fixed contiguous chunks, one per thread, each with its own gradient
// accumulators, so results do not depend on scheduling.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "graph_conv.h"

// The kernels call ATen ops on tensors that may require grad; autograd is the caller's business
// (registered in Python), so every thread runs below it.
#define SKELFAST_BELOW_AUTOGRAD at::AutoDispatchBelowADInplaceOrView below_autograd_guard

namespace skelfast {
namespace {

using at::Tensor;

// out = a @ b, written into a (view of a) preallocated buffer.
void mm_into(Tensor out, const Tensor& a, const Tensor& b) { at::mm_out(out, a, b); }

bool aggregate_first(int64_t c_in, int64_t c_out) { return c_in <= c_out; }

// The graph aggregation with the (V x V) joint matrices B_k. BLAS runs these skinny products
// (rows x 25 x 25) at about the rate of the channel mix here; a hand-vectorised kernel that kept
// all K*V outputs of a few rows in registers measured no faster, so BLAS it is.

// dst[k] = src @ B[k] for every k. src (R, V), dst (K, R, V).
void rows_times_each(const Tensor& src, const Tensor& B, const Tensor& dst) {
  for (int64_t k = 0; k < B.size(0); ++k) mm_into(dst[k], src, B[k]);
}

// dst = sum_k src[k] @ B[k]. src (K, R, V), dst (R, V).
void sum_rows_times(const Tensor& src, const Tensor& B, const Tensor& dst) {
  mm_into(dst, src[0], B[0]);
  for (int64_t k = 1; k < B.size(0); ++k) dst.addmm_(src[k], B[k]);
}

void check_cpu(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "graph_conv (cpp CPU kernel): x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "graph_conv (cpp CPU kernel): supports float32 and float64, got ", x.scalar_type());
}

// Run fn(chunk, begin, end) over [0, n) split into at most num_threads contiguous chunks.
template <typename Fn>
int64_t for_each_chunk(int64_t n, const Fn& fn) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n, at::get_num_threads()));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, c * n / chunks, (c + 1) * n / chunks);
  });
  return chunks;
}

Tensor graph_conv_cpu(const Tensor& x_in, const Tensor& weight_in, const std::optional<Tensor>& bias,
                      const Tensor& A_in) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in);
  check_cpu(x_in);
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3), K = A.size(0);
  const int64_t O = weight.size(0) / K;
  Tensor y = at::empty({N, O, T, V}, x.options());
  if (y.numel() == 0) return y;
  std::optional<Tensor> bias_table;
  if (bias.has_value()) bias_table = graph_conv_bias_table(*bias, A, K, O).unsqueeze(1);  // (O, 1, V)

  const bool agg = aggregate_first(C, O);
  // Wp[o, k*C + c] = W[k*O + o, c]: the channel mix over all subsets becomes one GEMM.
  const Tensor Wp = agg ? weight.view({K, O, C}).permute({1, 0, 2}).reshape({O, K * C}) : weight;
  SKELFAST_BELOW_AUTOGRAD;
  for_each_chunk(N, [&](int64_t, int64_t begin, int64_t end) {
    SKELFAST_BELOW_AUTOGRAD;
    Tensor buf = at::empty({K, (agg ? C : O) * T, V}, x.options());
    for (int64_t n = begin; n < end; ++n) {
      Tensor yn = y[n];
      if (agg) {
        rows_times_each(x[n].view({C * T, V}), A, buf);
        mm_into(yn.view({O, T * V}), Wp, buf.view({K * C, T * V}));
      } else {
        mm_into(buf.view({K * O, T * V}), weight, x[n].view({C, T * V}));
        sum_rows_times(buf, A, yn.view({O * T, V}));
      }
      if (bias_table) yn.add_(*bias_table);
    }
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> graph_conv_backward_cpu(const Tensor& grad_in, const Tensor& x_in,
                                                                   const Tensor& weight_in,
                                                                   const std::optional<Tensor>& bias,
                                                                   const Tensor& A_in, std::array<bool, 4> mask) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in);
  check_cpu(x_in);
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3), K = A.size(0);
  const int64_t O = weight.size(0) / K;
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef({N, O, T, V}), "graph_conv_backward: grad must be ",
              at::IntArrayRef({N, O, T, V}), ", got ", grad_in.sizes());
  SKELFAST_BELOW_AUTOGRAD;
  const Tensor g = grad_in.contiguous().to(x.scalar_type());
  const auto opts = x.options();
  const bool need_x = mask[0], need_w = mask[1], need_b = mask[2] && bias.has_value(), need_A = mask[3];
  const bool need_gsum = need_b || (need_A && bias.has_value());
  const bool agg = aggregate_first(C, O);
  const Tensor Wp = agg ? weight.view({K, O, C}).permute({1, 0, 2}).reshape({O, K * C}) : weight;

  Tensor dx = need_x ? at::empty_like(x) : at::empty({0}, opts);
  const Tensor A_t = A.transpose(1, 2);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(N, at::get_num_threads()));
  // Per-chunk accumulators, summed in chunk order afterwards (deterministic).
  Tensor dW_acc = need_w ? at::zeros({chunks, agg ? O : K * O, agg ? K * C : C}, opts) : Tensor();
  Tensor dA_acc = need_A ? at::zeros({chunks, K, V, V}, opts) : Tensor();
  Tensor gsum_acc = need_gsum ? at::zeros({chunks, O, V}, opts) : Tensor();

  if (N > 0 && T > 0 && (need_x || need_w || need_A || need_gsum)) {
    for_each_chunk(N, [&](int64_t c, int64_t begin, int64_t end) {
      SKELFAST_BELOW_AUTOGRAD;
      Tensor buf = at::empty({K, (agg ? C : O) * T, V}, opts);   // X_k (agg) or Z_k (mix), recomputed
      Tensor dbuf = at::empty({K, (agg ? C : O) * T, V}, opts);  // dX_k (agg) or P_k = g A_k^T (mix)
      for (int64_t n = begin; n < end; ++n) {
        if (agg) {
          const Tensor gn = g[n].view({O, T * V});
          const Tensor xm = x[n].view({C * T, V});
          if (need_w) {
            rows_times_each(xm, A, buf);
            dW_acc[c].addmm_(gn, buf.view({K * C, T * V}).t());
          }
          if (need_x || need_A) {
            mm_into(dbuf.view({K * C, T * V}), Wp.t(), gn);
            if (need_x) sum_rows_times(dbuf, A_t, dx[n].view({C * T, V}));
            if (need_A) {
              for (int64_t k = 0; k < K; ++k) dA_acc[c][k].addmm_(xm.t(), dbuf[k]);
            }
          }
        } else {
          const Tensor gm = g[n].view({O * T, V});
          const Tensor xm = x[n].view({C, T * V});
          if (need_x || need_w) {
            rows_times_each(gm, A_t, dbuf);
            const Tensor pm = dbuf.view({K * O, T * V});
            if (need_w) dW_acc[c].addmm_(pm, xm.t());
            if (need_x) mm_into(dx[n].view({C, T * V}), weight.t(), pm);
          }
          if (need_A) {
            mm_into(buf.view({K * O, T * V}), weight, xm);
            for (int64_t k = 0; k < K; ++k) dA_acc[c][k].addmm_(buf[k].t(), gm);
          }
        }
        if (need_gsum) gsum_acc[c].add_(g[n].sum(1));
      }
    });
  }

  Tensor dW = at::empty({0}, opts), db = at::empty({0}, opts), dA = at::empty({0}, opts);
  if (need_w) {
    dW = dW_acc.sum(0);
    if (agg) dW = dW.view({O, K, C}).permute({1, 0, 2}).reshape({K * O, C}).contiguous();
  }
  const Tensor gsum = need_gsum ? gsum_acc.sum(0) : Tensor();  // (O, V): grad summed over n and t
  if (need_b) db = at::matmul(A.sum(1), gsum.t()).reshape({K * O}).contiguous();
  if (need_A) {
    dA = dA_acc.sum(0);
    if (bias.has_value()) dA.add_(at::matmul(bias->view({K, O}), gsum).unsqueeze(1));
  }
  return {dx, dW, db, dA};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) {
  m.impl("graph_conv", &graph_conv_cpu);
  m.impl("graph_conv_backward", &graph_conv_backward_cpu);
}

}  // namespace skelfast
