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
// Inner loops run over one (n, c) row of S contiguous values and keep 16 independent accumulators
// so the compiler vectorises the reductions without reassociating float sums; rows merge in
// double. The per-channel reductions run over fixed blocks of samples in memory order and the
// elementwise passes over rows, both split over threads; every sum is taken in a fixed order, so
// results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace skelfast {
namespace {

using at::Tensor;

constexpr int64_t kLanes = 16;

template <typename scalar_t>
double row_sum(const scalar_t* p, int64_t S) {
  scalar_t acc[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= S; s += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += p[s + j];
  double total = 0;
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  for (; s < S; ++s) total += p[s];
  return total;
}

// sum_s (p[s] - mu)^2 and sum_s q[s] * (p[s] - mu)
template <typename scalar_t>
double row_centered_square(const scalar_t* p, int64_t S, scalar_t mu) {
  scalar_t acc[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= S; s += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const scalar_t d = p[s + j] - mu;
      acc[j] += d * d;
    }
  double total = 0;
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  for (; s < S; ++s) total += static_cast<double>(p[s] - mu) * (p[s] - mu);
  return total;
}

template <typename scalar_t>
double row_centered_dot(const scalar_t* q, const scalar_t* p, int64_t S, scalar_t mu) {
  scalar_t acc[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= S; s += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += q[s + j] * (p[s + j] - mu);
  double total = 0;
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  for (; s < S; ++s) total += static_cast<double>(q[s]) * (p[s] - mu);
  return total;
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

// Chan's parallel-variance update: fold (count_b, mean_b, m2_b) into (count, mean, m2).
inline void chan_merge(double& count, double& mean, double& m2, double count_b, double mean_b, double m2_b) {
  const double merged = count + count_b;
  if (merged == 0) return;
  const double delta = mean_b - mean;
  mean += delta * count_b / merged;
  m2 += m2_b + delta * delta * count * count_b / merged;
  count = merged;
}

// Batch mean and biased variance per channel: each row's mean and centred sum of squares (the row
// is in L1 for its second read), merged with Chan's parallel-variance update, over the rows of a
// sample block and then over the blocks in order.
template <typename scalar_t>
void channel_statistics(const Shape& d, const scalar_t* x, scalar_t* mean, scalar_t* var) {
  const int64_t C = d.C, S = d.S;
  std::vector<double> block_mean(sample_blocks(d.N) * C, 0.0), block_m2(sample_blocks(d.N) * C, 0.0);
  for_each_sample_block(d.N, [&](int64_t n0, int64_t n1, int64_t b) {
    double* mu = &block_mean[b * C];
    double* m2 = &block_m2[b * C];
    for (int64_t n = n0; n < n1; ++n) {
      const double count = static_cast<double>((n - n0) * S);  // rows of this channel merged so far
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* row = x + (n * C + c) * S;
        const double row_mean = row_sum(row, S) / static_cast<double>(S);
        const scalar_t centre = static_cast<scalar_t>(row_mean);
        // sum (x - centre)^2 = sum (x - row_mean)^2 + S (row_mean - centre)^2
        const double shift = row_mean - static_cast<double>(centre);
        const double row_m2 = row_centered_square(row, S, centre) - static_cast<double>(S) * shift * shift;
        double block_count = count;
        chan_merge(block_count, mu[c], m2[c], static_cast<double>(S), row_mean, row_m2);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double count = 0, mu = 0, m2 = 0;
    for (int64_t b = 0; b < sample_blocks(d.N); ++b) {
      const double block_count = static_cast<double>((std::min(d.N, (b + 1) * kSampleBlock) - b * kSampleBlock) * S);
      chan_merge(count, mu, m2, block_count, block_mean[b * C + c], block_m2[b * C + c]);
    }
    mean[c] = static_cast<scalar_t>(mu);
    var[c] = static_cast<scalar_t>(std::max(0.0, m2 / count));
  }
}

// gb = g * [y > 0] (relu) * keep * keep_scale (keep given), for one row. The mask is read as bytes
// and multiplied in (a branch on a bool would stop the loop from vectorising).
template <typename scalar_t>
void gate_row(const scalar_t* g, const scalar_t* y, const uint8_t* keep, scalar_t keep_scale, bool relu, int64_t S,
              scalar_t* out) {
  if (relu && keep != nullptr) {
    for (int64_t s = 0; s < S; ++s) {
      const scalar_t gs = g[s];  // loaded unconditionally, so the select is a blend, not a branch
      out[s] = (y[s] > scalar_t(0) ? gs : scalar_t(0)) * (static_cast<scalar_t>(keep[s]) * keep_scale);
    }
  } else if (relu) {
    for (int64_t s = 0; s < S; ++s) {
      const scalar_t gs = g[s];
      out[s] = y[s] > scalar_t(0) ? gs : scalar_t(0);
    }
  } else if (keep != nullptr) {
    for (int64_t s = 0; s < S; ++s) out[s] = g[s] * (static_cast<scalar_t>(keep[s]) * keep_scale);
  } else {
    for (int64_t s = 0; s < S; ++s) out[s] = g[s];
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

std::tuple<Tensor, Tensor, Tensor> batch_norm_act_cpu(const Tensor& x_in, const std::optional<Tensor>& weight_in,
                                                      const std::optional<Tensor>& bias_in,
                                                      const std::optional<Tensor>& mean_in,
                                                      const std::optional<Tensor>& var_in,
                                                      const std::optional<Tensor>& residual_in,
                                                      const std::optional<Tensor>& keep_in, double keep_scale,
                                                      bool relu, double eps) {
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
  if (x.numel() == 0) return {y, mean, var};
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
    const int64_t S = d.S, C = d.C;
    at::parallel_for(0, d.rows(), std::max<int64_t>(1, 32768 / std::max<int64_t>(1, S)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t ac = a[r % C], bc = b[r % C];
        const scalar_t* xr = xp + r * S;
        scalar_t* yr = yp + r * S;
        for (int64_t s = 0; s < S; ++s) yr[s] = xr[s] * ac + bc;
        if (kp != nullptr) {
          const uint8_t* kr = kp + r * S;
          for (int64_t s = 0; s < S; ++s) yr[s] = yr[s] * (static_cast<scalar_t>(kr[s]) * ks);
        }
        if (rp != nullptr) {
          const scalar_t* rr = rp + r * S;
          for (int64_t s = 0; s < S; ++s) yr[s] += rr[s];
        }
        if (relu) {
          for (int64_t s = 0; s < S; ++s) yr[s] = yr[s] < scalar_t(0) ? scalar_t(0) : yr[s];  // NaN stays NaN
        }
      }
    });
  });
  return {y, mean, var};
}

// Gradients (dx, dweight, dbias, dresidual); entries whose output_mask is false come back empty.
// output_mask: (x, affine weight and bias, residual). batch_stats: the forward computed the
// statistics from x (training), so dx carries their gradient too.
std::tuple<Tensor, Tensor, Tensor, Tensor> batch_norm_act_backward_cpu(
    const Tensor& grad_in, const Tensor& x_in, const Tensor& y_in, const std::optional<Tensor>& weight_in,
    const Tensor& mean_in, const Tensor& var_in, const std::optional<Tensor>& keep_in, double keep_scale, bool relu,
    double eps, bool batch_stats, std::array<bool, 3> mask) {
  check_inputs(x_in, weight_in, std::nullopt, std::nullopt, keep_in);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes() && y_in.sizes() == x_in.sizes(),
              "batch_norm_act_backward: grad and y must have x's shape ", x_in.sizes());
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), y = y_in.contiguous(), g = grad_in.contiguous().to(x.scalar_type());
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
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *yp = y.const_data_ptr<scalar_t>(),
                   *gp = g.const_data_ptr<scalar_t>(), *mp = mean.const_data_ptr<scalar_t>(),
                   *vp = var.const_data_ptr<scalar_t>();
    const scalar_t* wp = ptr_or_null<scalar_t>(weight);
    const uint8_t* kp = keep_bytes(keep);
    const scalar_t ks = static_cast<scalar_t>(keep_scale);
    // 1. per channel: sum gb and sum gb (x - mean), by sample blocks then over the blocks in order
    std::vector<double> sum_gb(C, 0.0), sum_gbx(C, 0.0);
    const bool need_sums = need_affine || (need_x && batch_stats);
    if (need_sums) {
      const int64_t blocks = sample_blocks(N);
      std::vector<double> block_gb(blocks * C, 0.0), block_gbx(blocks * C, 0.0);
      for_each_sample_block(N, [&](int64_t n0, int64_t n1, int64_t b) {
        std::vector<scalar_t> gb(S);
        for (int64_t n = n0; n < n1; ++n)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t off = (n * C + c) * S;
            gate_row(gp + off, yp + off, kp ? kp + off : nullptr, ks, relu, S, gb.data());
            block_gb[b * C + c] += row_sum(gb.data(), S);
            block_gbx[b * C + c] += row_centered_dot(gb.data(), xp + off, S, mp[c]);
          }
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
      std::vector<scalar_t> gb(S);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % C, off = r * S;
        const scalar_t* gr = gp + off;
        const scalar_t* yr = yp + off;
        if (drp != nullptr) {
          scalar_t* dr = drp + off;
          for (int64_t s = 0; s < S; ++s) {
            const scalar_t gs = gr[s];
            dr[s] = yr[s] > scalar_t(0) ? gs : scalar_t(0);
          }
        }
        if (dxp == nullptr) continue;
        gate_row(gr, yr, kp ? kp + off : nullptr, ks, relu, S, gb.data());
        const scalar_t a = k1[c], m_gb = k2[c], b = k3[c], mu = mp[c];
        const scalar_t* xr = xp + off;
        scalar_t* dr = dxp + off;
        for (int64_t s = 0; s < S; ++s) dr[s] = a * (gb[s] - m_gb - (xr[s] - mu) * b);
      }
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
