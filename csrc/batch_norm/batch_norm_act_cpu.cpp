// CPU kernels of skelfast::batch_norm_act: BatchNorm and the elementwise tail that follows it in
// the GCN units, in one pass over memory.
//
//   y = relu?(BN(x) * keep * keep_scale + residual)      x, residual, y (N, C, S); keep (N, C, S) bool
//
// BN uses the batch statistics (computed here and returned: mean, biased var) or given ones (eval).
// Unfused, the same chain is five to seven full passes forward (BN stats, normalise, two dropout
// multiplies, add, ReLU) and as many backward; here it is two passes each way:
//   forward:  statistics per channel (rows of S, merged with Chan's formula), then y row by row;
//   backward: per-channel sums of the gated gradient gb = g * [y > 0] * keep * keep_scale and of
//             gb * (x - mean), then dx (and the residual's gradient g * [y > 0]) row by row.
// With ReLU the forward also writes [y > 0] as bytes (`positive`, when asked: a step that will run
// backward), which the backward reads in both passes in place of y: a quarter of y's bytes twice.
// The loops over rows live in batch_norm_rows_impl.h, compiled for the baseline, AVX2 and AVX-512
// and picked at run time (the same bits from each). The per-channel reductions run over fixed
// blocks of samples in memory order and the elementwise passes over rows, both split over threads;
// every sum is taken in a fixed order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include "../cpu_isa.h"
#include "batch_norm_rows.h"

namespace skelfast {
namespace {

using at::Tensor;

// The row loops of the widest instruction set the CPU has (cpu_isa_level), picked once per dtype
template <typename Kernels>
Kernels pick_form(Kernels (*avx512)(), Kernels (*avx2)(), Kernels (*baseline)()) {
  if (cpu_isa_level() == 2) return avx512();
  if (cpu_isa_level() == 1) return avx2();
  return baseline();
}

template <typename scalar_t>
const bn::RowKernels<scalar_t>& row_kernels() {
  static const bn::RowKernels<scalar_t> kernels = [] {
    if constexpr (std::is_same_v<scalar_t, float>)
      return pick_form(bn::kernels_avx512_f32, bn::kernels_avx2_f32, bn::kernels_default_f32);
    else
      return pick_form(bn::kernels_avx512_f64, bn::kernels_avx2_f64, bn::kernels_default_f64);
  }();
  return kernels;
}

struct Shape {
  int64_t N, C, S;
  explicit Shape(const Tensor& x) : N(x.size(0)), C(x.size(1)), S(x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))) {}
  int64_t rows() const { return N * C; }
  double count() const { return static_cast<double>(N) * static_cast<double>(S); }
};

// Per-channel reductions walk the rows in memory order, in fixed blocks of kSampleBlock samples:
// each block reduces its rows into per-channel slots of its own, and the blocks are merged in
// order afterwards. Walking channel by channel instead reads rows of S values that lie C*S apart,
// and at S = T*V = 325 (13 frames) the hardware prefetcher barely ramps up on each. The blocks,
// not the threads, fix the summation order, so results do not depend on the thread count.
constexpr int64_t kSampleBlock = 8;

inline int64_t sample_blocks(int64_t N) { return (N + kSampleBlock - 1) / kSampleBlock; }

// Run fn(n0, n1, block) for every block of samples, blocks split over threads.
template <typename Fn>
void for_each_sample_block(int64_t N, const Fn& fn) {
  at::parallel_for(0, sample_blocks(N), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) fn(b * kSampleBlock, std::min(N, (b + 1) * kSampleBlock), b);
  });
}

// Batch mean and biased variance per channel: each row's mean and centred sum of squares (the row
// is in L1 for its second read), merged with Chan's parallel-variance update, over the rows of a
// sample block and then over the blocks in order.
template <typename scalar_t>
void channel_statistics(const Shape& d, const scalar_t* x, scalar_t* mean, scalar_t* var) {
  const int64_t C = d.C, S = d.S;
  std::vector<double> block_mean(sample_blocks(d.N) * C, 0.0), block_m2(sample_blocks(d.N) * C, 0.0);
  const auto& kernels = row_kernels<scalar_t>();
  for_each_sample_block(d.N, [&](int64_t n0, int64_t n1, int64_t b) {
    kernels.statistics_block(x, n0, n1, C, S, &block_mean[b * C], &block_m2[b * C]);
  });
  for (int64_t c = 0; c < C; ++c) {
    double count = 0, mu = 0, m2 = 0;
    for (int64_t b = 0; b < sample_blocks(d.N); ++b) {
      const double block_count = static_cast<double>((std::min(d.N, (b + 1) * kSampleBlock) - b * kSampleBlock) * S);
      bn::chan_merge(count, mu, m2, block_count, block_mean[b * C + c], block_m2[b * C + c]);
    }
    mean[c] = static_cast<scalar_t>(mu);
    var[c] = static_cast<scalar_t>(std::max(0.0, m2 / count));
  }
}

// Per-channel scale and shift of the normalisation: BN(x) = x * a + b
template <typename scalar_t>
void affine_coefficients(int64_t C, const scalar_t* mean, const scalar_t* var, const scalar_t* weight,
                         const scalar_t* bias, double eps, std::vector<scalar_t>& a, std::vector<scalar_t>& b) {
  a.resize(C);
  b.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var[c]) + eps);
    const double scale = invstd * (weight != nullptr ? static_cast<double>(weight[c]) : 1.0);
    a[c] = static_cast<scalar_t>(scale);
    b[c] = static_cast<scalar_t>((bias != nullptr ? static_cast<double>(bias[c]) : 0.0) - mean[c] * scale);
  }
}

void check_inputs(const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                  const std::optional<Tensor>& residual, const std::optional<Tensor>& keep) {
  TORCH_CHECK(x.dim() >= 2, "batch_norm_act: x must be (N, C, *), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "batch_norm_act (cpp CPU kernel): x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "batch_norm_act (cpp CPU kernel): supports float32 and float64, got ", x.scalar_type());
  const int64_t C = x.size(1);
  for (const auto* p : {&weight, &bias}) {
    if (p->has_value()) {
      TORCH_CHECK((*p)->dim() == 1 && (*p)->size(0) == C, "batch_norm_act: weight and bias must be (C,) = (", C,
                  ",), got ", (*p)->sizes());
      TORCH_CHECK((*p)->scalar_type() == x.scalar_type() && (*p)->device() == x.device(),
                  "batch_norm_act: weight and bias must match x in dtype and device");
    }
  }
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes(), "batch_norm_act: residual must have x's shape ", x.sizes(),
                ", got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type() && residual->device() == x.device(),
                "batch_norm_act: residual must match x in dtype and device");
  }
  if (keep.has_value()) {
    TORCH_CHECK(keep->sizes() == x.sizes(), "batch_norm_act: keep must have x's shape ", x.sizes(), ", got ",
                keep->sizes());
    TORCH_CHECK(keep->scalar_type() == at::kBool, "batch_norm_act: keep must be a bool tensor, got ",
                keep->scalar_type());
  }
}

// A bool tensor's elements as bytes (0 or 1)
const uint8_t* keep_bytes(const std::optional<Tensor>& keep) {
  return keep.has_value() ? reinterpret_cast<const uint8_t*>(keep->const_data_ptr<bool>()) : nullptr;
}

template <typename T>
const T* ptr_or_null(const std::optional<Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

// (y, mean, var, positive): positive is [y > 0] as a bool tensor like x with relu and
// relu_mask, else empty
std::tuple<Tensor, Tensor, Tensor, Tensor> batch_norm_act_cpu(
    const Tensor& x_in, const std::optional<Tensor>& weight_in, const std::optional<Tensor>& bias_in,
    const std::optional<Tensor>& mean_in, const std::optional<Tensor>& var_in,
    const std::optional<Tensor>& residual_in, const std::optional<Tensor>& keep_in, double keep_scale, bool relu,
    double eps, bool relu_mask) {
  check_inputs(x_in, weight_in, bias_in, residual_in, keep_in);
  TORCH_CHECK(mean_in.has_value() == var_in.has_value(), "batch_norm_act: give both mean and var, or neither");
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // autograd is registered in Python
  const Tensor x = x_in.contiguous();
  const auto contiguous = [](const std::optional<Tensor>& t) -> std::optional<Tensor> {
    return t.has_value() ? std::optional<Tensor>(t->contiguous()) : std::nullopt;
  };
  const auto weight = contiguous(weight_in), bias = contiguous(bias_in), residual = contiguous(residual_in),
             keep = contiguous(keep_in);
  const Shape d(x);
  Tensor y = at::empty_like(x);
  Tensor positive = at::empty(relu && relu_mask ? x.sizes() : at::IntArrayRef{0}, x.options().dtype(at::kBool));
  Tensor mean, var;
  if (mean_in.has_value()) {
    TORCH_CHECK(mean_in->numel() == d.C && var_in->numel() == d.C, "batch_norm_act: mean and var must be (C,)");
    mean = mean_in->to(x.scalar_type()).contiguous().clone();
    var = var_in->to(x.scalar_type()).contiguous().clone();
  } else {
    TORCH_CHECK(d.N * d.S > 1, "batch_norm_act: expected more than 1 value per channel for batch statistics, got x ",
                x.sizes());
    mean = at::empty({d.C}, x.options());
    var = at::empty({d.C}, x.options());
  }
  if (x.numel() == 0) return {y, mean, var, positive};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    if (!mean_in.has_value())
      channel_statistics(d, xp, mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>());
    std::vector<scalar_t> a, b;
    affine_coefficients(d.C, mean.const_data_ptr<scalar_t>(), var.const_data_ptr<scalar_t>(),
                        ptr_or_null<scalar_t>(weight), ptr_or_null<scalar_t>(bias), eps, a, b);
    const scalar_t* rp = ptr_or_null<scalar_t>(residual);
    const uint8_t* kp = keep_bytes(keep);
    const scalar_t ks = static_cast<scalar_t>(keep_scale);
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* pp = positive.numel() > 0 ? reinterpret_cast<uint8_t*>(positive.mutable_data_ptr<bool>()) : nullptr;
    const int64_t S = d.S, C = d.C;
    const auto& kernels = row_kernels<scalar_t>();
    at::parallel_for(0, d.rows(), std::max<int64_t>(1, 32768 / std::max<int64_t>(1, S)), [&](int64_t r0, int64_t r1) {
      kernels.apply_rows(xp, yp, pp, rp, kp, ks, relu, a.data(), b.data(), C, S, r0, r1);
    });
  });
  return {y, mean, var, positive};
}

// Gradients (dx, dweight, dbias, dresidual); entries whose output_mask is false come back empty.
// output_mask: (x, affine weight and bias, residual). batch_stats: the forward computed the
// statistics from x (training), so dx carries their gradient too. positive: the forward's [y > 0]
// (bool like x) with relu, unread without.
std::tuple<Tensor, Tensor, Tensor, Tensor> batch_norm_act_backward_cpu(
    const Tensor& grad_in, const Tensor& x_in, const Tensor& positive_in, const std::optional<Tensor>& weight_in,
    const Tensor& mean_in, const Tensor& var_in, const std::optional<Tensor>& keep_in, double keep_scale, bool relu,
    double eps, bool batch_stats, std::array<bool, 3> mask) {
  check_inputs(x_in, weight_in, std::nullopt, std::nullopt, keep_in);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes(), "batch_norm_act_backward: grad must have x's shape ", x_in.sizes(),
              ", got ", grad_in.sizes());
  TORCH_CHECK(!relu || (positive_in.sizes() == x_in.sizes() && positive_in.scalar_type() == at::kBool),
              "batch_norm_act_backward: with relu, positive must be the forward's bool mask of x's shape ",
              x_in.sizes(), ", got ", positive_in.scalar_type(), " ", positive_in.sizes(),
              " (the forward ran with relu_mask=False)");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), g = grad_in.contiguous().to(x.scalar_type());
  const Tensor positive = relu ? positive_in.contiguous() : positive_in;
  const Tensor mean = mean_in.to(x.scalar_type()).contiguous(), var = var_in.to(x.scalar_type()).contiguous();
  const std::optional<Tensor> weight =
      weight_in.has_value() ? std::optional<Tensor>(weight_in->contiguous()) : std::nullopt;
  const std::optional<Tensor> keep = keep_in.has_value() ? std::optional<Tensor>(keep_in->contiguous()) : std::nullopt;
  const Shape d(x);
  const bool need_x = mask[0], need_affine = mask[1], need_res = mask[2] && relu;
  const auto opts = x.options();
  Tensor dx = need_x ? at::empty_like(x) : at::empty({0}, opts);
  Tensor dres = need_res ? at::empty_like(x) : at::empty({0}, opts);
  Tensor dweight = at::empty({need_affine ? d.C : 0}, opts), dbias = at::empty({need_affine ? d.C : 0}, opts);
  if (!(need_x || need_affine || need_res)) return {dx, dweight, dbias, dres};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_act_backward_cpu", [&] {
    const int64_t N = d.N, C = d.C, S = d.S;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = g.const_data_ptr<scalar_t>(),
                   *mp = mean.const_data_ptr<scalar_t>(), *vp = var.const_data_ptr<scalar_t>();
    const uint8_t* pp = relu ? reinterpret_cast<const uint8_t*>(positive.const_data_ptr<bool>()) : nullptr;
    const scalar_t* wp = ptr_or_null<scalar_t>(weight);
    const uint8_t* kp = keep_bytes(keep);
    const scalar_t ks = static_cast<scalar_t>(keep_scale);
    const auto& kernels = row_kernels<scalar_t>();
    // 1. per channel: sum gb and sum gb (x - mean), by sample blocks then over the blocks in order
    std::vector<double> sum_gb(C, 0.0), sum_gbx(C, 0.0);
    const bool need_sums = need_affine || (need_x && batch_stats);
    if (need_sums) {
      const int64_t blocks = sample_blocks(N);
      std::vector<double> block_gb(blocks * C, 0.0), block_gbx(blocks * C, 0.0);
      for_each_sample_block(N, [&](int64_t n0, int64_t n1, int64_t b) {
        kernels.gated_sums_block(gp, pp, xp, kp, ks, relu, mp, n0, n1, C, S, &block_gb[b * C], &block_gbx[b * C]);
      });
      for (int64_t b = 0; b < blocks; ++b)
        for (int64_t c = 0; c < C; ++c) {
          sum_gb[c] += block_gb[b * C + c];
          sum_gbx[c] += block_gbx[b * C + c];
        }
    }
    if (need_affine) {
      scalar_t *dwp = dweight.mutable_data_ptr<scalar_t>(), *dbp = dbias.mutable_data_ptr<scalar_t>();
      for (int64_t c = 0; c < C; ++c) {
        dwp[c] = static_cast<scalar_t>(sum_gbx[c] / std::sqrt(static_cast<double>(vp[c]) + eps));
        dbp[c] = static_cast<scalar_t>(sum_gb[c]);
      }
    }
    if (!(need_x || need_res)) return;
    // 2. dx = w invstd (gb - mean(gb) - (x - mean) invstd^2 mean(gb (x - mean))), row by row
    std::vector<scalar_t> k1(C), k2(C), k3(C);
    const double count = d.count();
    for (int64_t c = 0; c < C; ++c) {
      const double invstd = 1.0 / std::sqrt(static_cast<double>(vp[c]) + eps);
      k1[c] = static_cast<scalar_t>(invstd * (wp != nullptr ? static_cast<double>(wp[c]) : 1.0));
      k2[c] = static_cast<scalar_t>(batch_stats ? sum_gb[c] / count : 0.0);
      k3[c] = static_cast<scalar_t>(batch_stats ? invstd * invstd * sum_gbx[c] / count : 0.0);
    }
    scalar_t* dxp = need_x ? dx.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* drp = need_res ? dres.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, d.rows(), std::max<int64_t>(1, 32768 / std::max<int64_t>(1, S)), [&](int64_t r0, int64_t r1) {
      kernels.input_grad_rows(gp, pp, xp, kp, ks, relu, k1.data(), k2.data(), k3.data(), mp, dxp, drp, C, S, r0, r1);
    });
  });
  return {dx, dweight, dbias, dres};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) {
  m.impl("batch_norm_act", &batch_norm_act_cpu);
  m.impl("batch_norm_act_backward", &batch_norm_act_backward_cpu);
}

}  // namespace skelfast
