// CPU kernels of skelfast::graph_conv, forward and backward.
//
// The op is y_n = sum_k (W_k x_n + b_k) A_k per sample n, with x_n viewed as (C, T*V); A is one
// (K, V, V) for the batch, or one per sample, (N, K, V, V) without a bias (2s-AGCN's data-dependent
// graphs: A_nk in place of A_k, and dA written per sample instead of accumulated). It is
// computed sample by sample, so the only intermediate is one sample's (K, *, T, V) buffer per
// thread (cache-sized) instead of the reference's (N, K, C_out, T, V) tensor, and every product
// is a GEMM on raw pointers (blas_cpu.h), except the products with all K subsets' A_k (or A_k^T):
// the sums sum_k M_k A_k and the spreads M A_0, .., M A_{K-1} run as one AVX-512 pass each where
// the CPU has it (aggregate_avx512.h). Two contraction orders:
//   aggregate-first: X_k = x_n A_k over C_in*T rows (one spread pass, else K skinny GEMMs), then one GEMM
//     y_n = [W_0 .. W_{K-1}] [X_0; ..; X_{K-1}] with inner dimension K*C_in (K*(C_in+1) with a
//     bias, which rides in it as a constant input channel);
//   mix-first: Z = W x_n (one GEMM), then y_n = sum_k Z_k A_k over C_out*T rows.
// Forward and backward pick their order separately, from a cost model (aggregate_first_*).
// Tried and not kept: AVX-512 kernels for one subset's product X_k = x A_k at a time (MKL's equal;
// all K at once is what is faster) and for dA (MKL's faster); MKL's batched sgemm_batch_ for the K
// products (slower inside the per-thread chunks); batching several samples per ATen call.
// Samples are split into fixed contiguous chunks, one per thread, each with its own gradient
// accumulators, so results do not depend on scheduling.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "aggregate_avx512.h"
#include "../blas_cpu.h"
#include "graph_conv.h"

namespace skelfast {
namespace {

using at::Tensor;
using cpu::gemm;

// The skinny aggregation GEMMs (inner dimension V) run at about 0.6 of the channel-mix GEMMs' rate:
// 100 against 150-190 GFLOP/s a core at HiCLR's 16 channels (AVX-512 Xeon, MKL), so the cost model
// weighs each aggregation flop 1 / kAggregationRate times a mix flop.
constexpr double kAggregationRate = 0.6;

// Whether aggregate-first is the cheaper order, given each order's aggregation and mix flops (per
// sample and subset, in units of T*V: an aggregation over c channels is c*V, a channel mix C*O).
bool cheaper_to_aggregate_first(double agg_order_agg, double agg_order_mix, double mix_order_agg,
                                double mix_order_mix) {
  return agg_order_agg / kAggregationRate + agg_order_mix <= mix_order_agg / kAggregationRate + mix_order_mix;
}

// Forward: one aggregation (over C_in or C_out rows) and one mix either way, so the order that
// aggregates the fewer channels.
bool aggregate_first_forward(int64_t c_in, int64_t c_out) { return c_in <= c_out; }

// Backward, from the products backward_kernel computes for the gradients asked for. Aggregate-first
// recomputes X_k for dW (agg + mix), takes dX = Wp^T g (mix), then dx and dA from it (an agg each);
// mix-first takes P_k = g A_k^T (agg) for dW and dx (a mix each), and Z = W x for dA (mix + agg).
// At HiCLR's 16 and 32 channels mix-first wins (measured 1.16x and 1.06x forward+backward at
// N = 64, T = 50, V = 25); from 64 channels on, and for the 3-channel input layer, aggregate-first.
bool aggregate_first_backward(int64_t c_in, int64_t c_out, int64_t V, std::array<bool, 4> need) {
  const bool need_x = need[0], need_w = need[1], need_A = need[3];
  const double agg_in = static_cast<double>(c_in * V), agg_out = static_cast<double>(c_out * V);
  const double mix = static_cast<double>(c_in * c_out);
  return cheaper_to_aggregate_first(
      (need_w ? agg_in : 0) + (need_x ? agg_in : 0) + (need_A ? agg_in : 0),
      (need_w ? mix : 0) + (need_x || need_A ? mix : 0),
      (need_x || need_w ? agg_out : 0) + (need_A ? agg_out : 0),
      (need_w ? mix : 0) + (need_x ? mix : 0) + (need_A ? mix : 0));
}

void check_cpu(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "graph_conv (cpp CPU kernel): x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "graph_conv (cpp CPU kernel): supports float32 and float64, got ", x.scalar_type());
}

enum class Panel { kSum, kSpread };

// The subsets' matrices (A_k, or A_k^T when `transpose`) of one (K, V, V) adjacency at A, packed for
// the AVX-512 kernel of `kind` (cpu::subset_sum or cpu::subset_spread), or empty where the kernels do
// not apply (float64, K > 3, V > 32, no AVX-512F): sum_over_subsets and spread_over_subsets then use
// GEMMs.
template <typename scalar_t>
std::vector<float> pack_panel(const scalar_t* A, int64_t K, int64_t V, bool transpose, Panel kind) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu::subset_sum_kernel_applies(K, V))
      return kind == Panel::kSum ? cpu::pack_subset_panel(A, K, V, transpose) : cpu::pack_spread_panel(A, K, V, transpose);
  }
  return {};
}

// The panel of a batch-wide A (K, V, V), packed once per call; for one A per sample (N, K, V, V)
// empty here, and the kernels pack each sample's own (SamplePanel).
template <typename scalar_t>
std::vector<float> subset_panel(const Tensor& A, bool transpose, Panel kind) {
  if (A.dim() != 3) return {};
  return pack_panel<scalar_t>(A.const_data_ptr<scalar_t>(), A.size(0), A.size(1), transpose, kind);
}

// Which panel a sample's products use: the batch's (`shared`), or with one A per sample, that
// sample's, packed on the thread when `wanted` (~2K values against the tens of thousands of rows
// each product streams: 5-10% off a 64-channel per-sample call, as with a shared A).
template <typename scalar_t>
struct SamplePanel {
  const std::vector<float>& shared;
  bool per_sample, wanted, transpose;
  Panel kind;
  std::vector<float> own;
  const std::vector<float>& at(const scalar_t* A, int64_t K, int64_t V) {
    if (!per_sample || !wanted) return shared;
    own = pack_panel<scalar_t>(A, K, V, transpose, kind);
    return own;
  }
};

// out (R x V) = sum_k in_k @ B_k over the K subsets, in_k (R x V) at in + k*stride_in and B_k = A_k
// (A_k^T when `transpose`): one AVX-512 pass with `panel` (subset_panel kSum), else K accumulating GEMMs.
template <typename scalar_t>
void sum_over_subsets(int64_t K, int64_t R, int64_t V, const scalar_t* in, int64_t stride_in, const scalar_t* A,
                      bool transpose, const std::vector<float>& panel, scalar_t* out) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!panel.empty()) {
      cpu::subset_sum(K, R, V, in, stride_in, panel.data(), out, false);
      return;
    }
  }
  for (int64_t k = 0; k < K; ++k) gemm(false, transpose, R, V, V, in + k * stride_in, V, A + k * V * V, V, out, V, k > 0);
}

// out_k (R x V) = in @ B_k for each subset k, out_k at out + k*stride_out and B_k = A_k (A_k^T when
// `transpose`): one AVX-512 pass over `in` with `panel` (subset_panel kSpread), else K GEMMs.
template <typename scalar_t>
void spread_over_subsets(int64_t K, int64_t R, int64_t V, const scalar_t* in, const scalar_t* A, bool transpose,
                         const std::vector<float>& panel, scalar_t* out, int64_t stride_out) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!panel.empty()) {
      cpu::subset_spread(K, R, V, in, panel.data(), out, stride_out);
      return;
    }
  }
  for (int64_t k = 0; k < K; ++k) gemm(false, transpose, R, V, V, in, V, A + k * V * V, V, out + k * stride_out, V, false);
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

// The shapes of one call, and the weights rearranged for the aggregate-first order:
// Wp[o, k*C + c] = W[k*O + o, c], so the channel mix over all subsets is one GEMM.
struct Problem {
  int64_t N, C, T, V, K, O;
  int64_t A_stride;  // between samples' adjacencies: K*V*V for a per-sample A (N, K, V, V), else 0
  bool agg;
  Tensor Wp;
  Problem(const Tensor& x, const Tensor& weight, const Tensor& A, bool aggregate_first)
      : N(x.size(0)), C(x.size(1)), T(x.size(2)), V(x.size(3)), K(A.size(-3)), O(weight.size(0) / A.size(-3)),
        A_stride(A.dim() == 4 ? A.size(1) * A.size(2) * A.size(3) : 0), agg(aggregate_first) {
    Wp = agg ? weight.view({K, O, C}).permute({1, 0, 2}).reshape({O, K * C}).contiguous() : weight;
  }
  int64_t rows() const { return (agg ? C : O) * T; }  // rows of each subset's buffer
};

// Aggregate-first with a bias folds it into the channel mix: the buffer of every subset k gets one
// more channel whose rows are colsum(A_k) (the aggregation of a constant 1), written once per
// thread, and Wb[o, k*(C+1) + C] = b[k*O + o]. (W_k x + b_k 1) A_k = W_k x A_k + b_k colsum(A_k),
// so the mix GEMM adds the bias term with no pass of its own over y.
template <typename scalar_t>
void forward_kernel(const Problem& p, const scalar_t* x, const scalar_t* W, const scalar_t* Wmix, const scalar_t* A0,
                    const scalar_t* colsum, const scalar_t* bias_table, const std::vector<float>& panel,
                    const std::vector<float>& spread, scalar_t* y) {
  const int64_t C = p.C, T = p.T, V = p.V, K = p.K, O = p.O, TV = T * V, R = p.rows();
  const int64_t Cb = C + (colsum != nullptr ? 1 : 0);  // channels per subset block of the buffer
  for_each_chunk(p.N, [&](int64_t, int64_t begin, int64_t end) {
    const bool per_sample = p.A_stride != 0;
    SamplePanel<scalar_t> sum_panel{panel, per_sample, !p.agg, false, Panel::kSum, {}};
    SamplePanel<scalar_t> spread_panel{spread, per_sample, p.agg, false, Panel::kSpread, {}};
    std::vector<scalar_t> buf(p.agg ? K * Cb * TV : K * R * V);
    for (int64_t k = 0; colsum != nullptr && k < K; ++k)
      for (int64_t t = 0; t < T; ++t) std::copy(colsum + k * V, colsum + (k + 1) * V, &buf[(k * Cb + C) * TV + t * V]);
    for (int64_t n = begin; n < end; ++n) {
      const scalar_t* xn = x + n * C * TV;
      const scalar_t* A = A0 + n * p.A_stride;
      scalar_t* yn = y + n * O * TV;
      if (p.agg) {
        spread_over_subsets(K, R, V, xn, A, false, spread_panel.at(A, K, V), buf.data(), Cb * TV);
        gemm(false, false, O, TV, K * Cb, Wmix, K * Cb, buf.data(), TV, yn, TV, false);
      } else {
        gemm(false, false, K * O, TV, C, W, C, xn, TV, buf.data(), TV, false);
        sum_over_subsets(K, R, V, buf.data(), R * V, A, false, sum_panel.at(A, K, V), yn);
      }
      if (bias_table != nullptr) {
        for (int64_t o = 0; o < O; ++o)
          for (int64_t t = 0; t < T; ++t)
            for (int64_t v = 0; v < V; ++v) yn[(o * T + t) * V + v] += bias_table[o * V + v];
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const Problem& p, const scalar_t* g, const scalar_t* x, const scalar_t* W, const scalar_t* Wp,
                     const scalar_t* A0, std::array<bool, 4> need, bool need_gsum, scalar_t* dx, scalar_t* dW_acc,
                     scalar_t* dA_acc, scalar_t* gsum_acc, const std::vector<float>& panel,
                     const std::vector<float>& spread) {
  const int64_t C = p.C, T = p.T, V = p.V, K = p.K, O = p.O, TV = T * V, R = p.rows();
  const bool need_x = need[0], need_w = need[1], need_A = need[3];
  const int64_t dW_size = K * O * C;
  for_each_chunk(p.N, [&](int64_t c, int64_t begin, int64_t end) {
    std::vector<scalar_t> buf(K * R * V);   // X_k (agg) or Z_k (mix), recomputed
    std::vector<scalar_t> dbuf(K * R * V);  // dX_k (agg) or P_k = g A_k^T (mix)
    scalar_t* dW = need_w ? dW_acc + c * dW_size : nullptr;
    // dA: a per-chunk accumulator over the chunk's samples, or for a per-sample A each sample's own
    // gradient, overwritten by its first product
    const bool per_sample = p.A_stride != 0;
    // the panels backward_kernel's caller packed for a shared A, the same ones per sample here
    SamplePanel<scalar_t> sum_panel{panel, per_sample, p.agg && need_x, true, Panel::kSum, {}};
    SamplePanel<scalar_t> spread_panel{spread, per_sample, p.agg ? need_w : need_x || need_w, !p.agg,
                                       Panel::kSpread, {}};
    scalar_t* gsum = need_gsum ? gsum_acc + c * O * V : nullptr;
    for (int64_t n = begin; n < end; ++n) {
      const scalar_t* gn = g + n * O * TV;
      const scalar_t* xn = x + n * C * TV;
      const scalar_t* A = A0 + n * p.A_stride;
      scalar_t* dA = need_A ? (per_sample ? dA_acc + n * K * V * V : dA_acc + c * K * V * V) : nullptr;
      if (p.agg) {
        if (need_w) {
          spread_over_subsets(K, R, V, xn, A, false, spread_panel.at(A, K, V), buf.data(), R * V);
          gemm(false, true, O, K * C, TV, gn, TV, buf.data(), TV, dW, K * C, true);  // dWp += g X^T
        }
        if (need_x || need_A) {
          gemm(true, false, K * C, TV, O, Wp, K * C, gn, TV, dbuf.data(), TV, false);  // dX = Wp^T g
          if (need_x)  // dX_k A_k^T
            sum_over_subsets(K, R, V, dbuf.data(), R * V, A, true, sum_panel.at(A, K, V), dx + n * C * TV);
          for (int64_t k = 0; need_A && k < K; ++k)
            gemm(true, false, V, V, R, xn, V, &dbuf[k * R * V], V, dA + k * V * V, V, !per_sample);
        }
      } else {
        if (need_x || need_w) {
          spread_over_subsets(K, R, V, gn, A, true, spread_panel.at(A, K, V), dbuf.data(), R * V);
          if (need_w) gemm(false, true, K * O, C, TV, dbuf.data(), TV, xn, TV, dW, C, true);  // dW += P x^T
          if (need_x) gemm(true, false, C, TV, K * O, W, C, dbuf.data(), TV, dx + n * C * TV, TV, false);
        }
        if (need_A) {
          gemm(false, false, K * O, TV, C, W, C, xn, TV, buf.data(), TV, false);  // Z = W x
          for (int64_t k = 0; k < K; ++k)
            gemm(true, false, V, V, R, &buf[k * R * V], V, gn, V, dA + k * V * V, V, !per_sample);
        }
      }
      if (gsum != nullptr) {
        for (int64_t o = 0; o < O; ++o)
          for (int64_t t = 0; t < T; ++t)
            for (int64_t v = 0; v < V; ++v) gsum[o * V + v] += gn[(o * T + t) * V + v];
      }
    }
  });
}

Tensor graph_conv_cpu(const Tensor& x_in, const Tensor& weight_in, const std::optional<Tensor>& bias,
                      const Tensor& A_in) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in, /*per_sample_A=*/true);
  check_cpu(x_in);
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // autograd is registered in Python
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const Problem p(x, weight, A, aggregate_first_forward(x.size(1), weight.size(0) / A.size(-3)));
  Tensor y = at::empty({p.N, p.O, p.T, p.V}, x.options());
  if (y.numel() == 0) return y;
  if (p.C == 0) {  // no input channels: the output is the bias term alone
    return bias.has_value() ? graph_conv_bias_table(*bias, A, p.K, p.O).unsqueeze(1).expand_as(y).contiguous()
                            : y.zero_();
  }
  // the bias: folded into the mix (aggregate-first), else a table (O, V) added after
  const bool fold = bias.has_value() && p.agg;
  Tensor Wmix = p.Wp, colsum, bias_table;
  if (fold) {
    // Wp (O, K*C) with a bias column after each subset's C: (O, K*(C+1))
    Wmix = at::cat({p.Wp.view({p.O, p.K, p.C}), bias->reshape({p.K, p.O}).t().unsqueeze(2)}, 2)
               .reshape({p.O, p.K * (p.C + 1)});
    colsum = A.sum(1).contiguous();  // (K, V)
  } else if (bias.has_value()) {
    bias_table = graph_conv_bias_table(*bias, A, p.K, p.O).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_conv_cpu", [&] {
    forward_kernel<scalar_t>(p, x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                             Wmix.const_data_ptr<scalar_t>(), A.const_data_ptr<scalar_t>(),
                             fold ? colsum.const_data_ptr<scalar_t>() : nullptr,
                             bias_table.defined() ? bias_table.const_data_ptr<scalar_t>() : nullptr,
                             p.agg ? std::vector<float>() : subset_panel<scalar_t>(A, false, Panel::kSum),
                             p.agg ? subset_panel<scalar_t>(A, false, Panel::kSpread) : std::vector<float>(),
                             y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> graph_conv_backward_cpu(const Tensor& grad_in, const Tensor& x_in,
                                                                   const Tensor& weight_in,
                                                                   const std::optional<Tensor>& bias,
                                                                   const Tensor& A_in, std::array<bool, 4> mask) {
  check_graph_conv_inputs(x_in, weight_in, bias, A_in, /*per_sample_A=*/true);
  check_cpu(x_in);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), A = A_in.contiguous();
  const Problem p(x, weight, A,
                  aggregate_first_backward(x.size(1), weight.size(0) / A.size(-3), A.size(-1), mask));
  const bool per_sample = p.A_stride != 0;
  const int64_t N = p.N, C = p.C, T = p.T, V = p.V, K = p.K, O = p.O;
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef({N, O, T, V}), "graph_conv_backward: grad must be ",
              at::IntArrayRef({N, O, T, V}), ", got ", grad_in.sizes());
  const Tensor g = grad_in.contiguous().to(x.scalar_type());
  const auto opts = x.options();
  const bool need_x = mask[0], need_w = mask[1], need_b = mask[2] && bias.has_value(), need_A = mask[3];
  const bool need_gsum = need_b || (need_A && bias.has_value());

  // every element of dx is written by the kernel (the first product of each sample overwrites)
  Tensor dx = need_x ? at::empty_like(x) : at::empty({0}, opts);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(N, at::get_num_threads()));
  // Per-chunk accumulators, summed in chunk order afterwards (deterministic).
  Tensor dW_acc = at::zeros({need_w ? chunks : 0, p.agg ? O : K * O, p.agg ? K * C : C}, opts);
  // (a per-sample A's gradient is written sample by sample: no accumulators)
  Tensor dA_acc = at::zeros({need_A ? (per_sample ? N : chunks) : 0, K, V, V}, opts);
  Tensor gsum_acc = at::zeros({need_gsum ? chunks : 0, O, V}, opts);

  if (N > 0 && T > 0 && C > 0 && (need_x || need_w || need_A || need_gsum)) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_conv_backward_cpu", [&] {
      // the AVX-512 panels of the products backward_kernel takes (empty: GEMMs): aggregate-first sums
      // dX_k A_k^T for dx and spreads x A_k for dW; mix-first spreads g A_k^T for dW and dx
      const bool sum = p.agg && need_x, spread = p.agg ? need_w : need_x || need_w;
      backward_kernel<scalar_t>(p, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                weight.const_data_ptr<scalar_t>(), p.Wp.const_data_ptr<scalar_t>(),
                                A.const_data_ptr<scalar_t>(), mask, need_gsum,
                                need_x ? dx.mutable_data_ptr<scalar_t>() : nullptr, dW_acc.mutable_data_ptr<scalar_t>(),
                                dA_acc.mutable_data_ptr<scalar_t>(), gsum_acc.mutable_data_ptr<scalar_t>(),
                                sum ? subset_panel<scalar_t>(A, true, Panel::kSum) : std::vector<float>(),
                                spread ? subset_panel<scalar_t>(A, !p.agg, Panel::kSpread) : std::vector<float>());
    });
  } else if (need_gsum && N > 0 && T > 0) {
    gsum_acc[0].copy_(g.sum({0, 2}));  // C == 0: only the bias terms carry gradient
  }

  Tensor dW = at::empty({0}, opts), db = at::empty({0}, opts), dA = at::empty({0}, opts);
  if (need_w) {
    dW = dW_acc.sum(0);
    if (p.agg) dW = dW.view({O, K, C}).permute({1, 0, 2}).reshape({K * O, C}).contiguous();
  }
  const Tensor gsum = need_gsum ? gsum_acc.sum(0) : Tensor();  // (O, V): grad summed over n and t
  if (need_b) db = graph_conv_bias_grad(A, gsum, K, O);
  if (need_A && per_sample) {
    dA = dA_acc;
  } else if (need_A) {
    dA = dA_acc.sum(0);
    if (bias.has_value()) dA.add_(graph_conv_bias_adjacency_grad(*bias, gsum, K, O));
  }
  return {dx, dW, db, dA};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) {
  m.impl("graph_conv", &graph_conv_cpu);
  m.impl("graph_conv_backward", &graph_conv_backward_cpu);
}

}  // namespace skelfast
