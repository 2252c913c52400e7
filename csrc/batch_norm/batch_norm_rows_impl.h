// The row loops of batch_norm_rows.h, included once per instruction set by batch_norm_rows_*.cpp
// with SKELFAST_BN_ISA naming the namespace of that form (no include guard: one copy per form).
// Inner loops run over one (n, c) row of S contiguous values and keep 16 independent accumulators
// so the compiler vectorises the reductions without reassociating float sums; rows merge in double.

namespace skelfast {
namespace bn {
namespace SKELFAST_BN_ISA {

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

// sum_s (p[s] - mu)^2
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

// sum_s q[s] * (p[s] - mu)
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

// gb = g * [y > 0] (relu: `positive`, the forward's bytes y > 0) * keep * keep_scale (keep given),
// for one row. The keep mask is read as bytes and multiplied in (a branch on a bool would stop the
// loop from vectorising).
template <typename scalar_t>
void gate_row(const scalar_t* g, const uint8_t* positive, const uint8_t* keep, scalar_t keep_scale, bool relu,
              int64_t S, scalar_t* out) {
  if (relu && keep != nullptr) {
    for (int64_t s = 0; s < S; ++s) {
      const scalar_t gs = g[s];  // loaded unconditionally, so the select is a blend, not a branch
      out[s] = (positive[s] != 0 ? gs : scalar_t(0)) * (static_cast<scalar_t>(keep[s]) * keep_scale);
    }
  } else if (relu) {
    for (int64_t s = 0; s < S; ++s) {
      const scalar_t gs = g[s];
      out[s] = positive[s] != 0 ? gs : scalar_t(0);
    }
  } else if (keep != nullptr) {
    for (int64_t s = 0; s < S; ++s) out[s] = g[s] * (static_cast<scalar_t>(keep[s]) * keep_scale);
  } else {
    for (int64_t s = 0; s < S; ++s) out[s] = g[s];
  }
}

// The row's mean and centred sum of squares (the row is in L1 for its second read), merged with
// Chan's update into the block's per-channel slots
template <typename scalar_t>
void statistics_block(const scalar_t* x, int64_t n0, int64_t n1, int64_t C, int64_t S, double* mu, double* m2) {
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
}

template <typename scalar_t>
void apply_rows(const scalar_t* x, scalar_t* y, uint8_t* positive, const scalar_t* residual, const uint8_t* keep,
                scalar_t keep_scale, bool relu, const scalar_t* a, const scalar_t* b, int64_t C, int64_t S, int64_t r0,
                int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t ac = a[r % C], bc = b[r % C];
    const scalar_t* xr = x + r * S;
    scalar_t* yr = y + r * S;
    for (int64_t s = 0; s < S; ++s) yr[s] = xr[s] * ac + bc;
    if (keep != nullptr) {
      const uint8_t* kr = keep + r * S;
      for (int64_t s = 0; s < S; ++s) yr[s] = yr[s] * (static_cast<scalar_t>(kr[s]) * keep_scale);
    }
    if (residual != nullptr) {
      const scalar_t* rr = residual + r * S;
      for (int64_t s = 0; s < S; ++s) yr[s] += rr[s];
    }
    if (relu) {
      for (int64_t s = 0; s < S; ++s) yr[s] = yr[s] < scalar_t(0) ? scalar_t(0) : yr[s];  // NaN stays NaN
    }
    if (positive != nullptr) {  // the backward's ReLU gate (NaN: not positive, as y > 0 reads it)
      uint8_t* pr = positive + r * S;
      for (int64_t s = 0; s < S; ++s) pr[s] = static_cast<uint8_t>(yr[s] > scalar_t(0));
    }
  }
}

template <typename scalar_t>
void gated_sums_block(const scalar_t* g, const uint8_t* positive, const scalar_t* x, const uint8_t* keep,
                      scalar_t keep_scale, bool relu, const scalar_t* mean, int64_t n0, int64_t n1, int64_t C,
                      int64_t S, double* sum_gb, double* sum_gbx) {
  std::vector<scalar_t> gb(S);
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = (n * C + c) * S;
      gate_row(g + off, positive ? positive + off : nullptr, keep ? keep + off : nullptr, keep_scale, relu, S,
               gb.data());
      sum_gb[c] += row_sum(gb.data(), S);
      sum_gbx[c] += row_centered_dot(gb.data(), x + off, S, mean[c]);
    }
}

template <typename scalar_t>
void input_grad_rows(const scalar_t* g, const uint8_t* positive, const scalar_t* x, const uint8_t* keep,
                     scalar_t keep_scale, bool relu, const scalar_t* k1, const scalar_t* k2, const scalar_t* k3,
                     const scalar_t* mean, scalar_t* dx, scalar_t* dres, int64_t C, int64_t S, int64_t r0,
                     int64_t r1) {
  std::vector<scalar_t> gb(S);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r % C, off = r * S;
    const scalar_t* gr = g + off;
    const uint8_t* pr = positive ? positive + off : nullptr;
    if (dres != nullptr) {  // given with relu only (without, the residual's gradient is g itself)
      scalar_t* dr = dres + off;
      for (int64_t s = 0; s < S; ++s) {
        const scalar_t gs = gr[s];
        dr[s] = pr[s] != 0 ? gs : scalar_t(0);
      }
    }
    if (dx == nullptr) continue;
    gate_row(gr, pr, keep ? keep + off : nullptr, keep_scale, relu, S, gb.data());
    const scalar_t a = k1[c], m_gb = k2[c], b = k3[c], mu = mean[c];
    const scalar_t* xr = x + off;
    scalar_t* dr = dx + off;
    for (int64_t s = 0; s < S; ++s) dr[s] = a * (gb[s] - m_gb - (xr[s] - mu) * b);
  }
}

template <typename scalar_t>
RowKernels<scalar_t> kernels() {
  return {&statistics_block<scalar_t>, &apply_rows<scalar_t>, &gated_sums_block<scalar_t>,
          &input_grad_rows<scalar_t>};
}

}  // namespace SKELFAST_BN_ISA
}  // namespace bn
}  // namespace skelfast
