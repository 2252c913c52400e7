#pragma once
// The loops of skelfast::batch_norm_act over memory, one (n, c) row of S contiguous values at a time,
// compiled once per instruction set (batch_norm_rows_{default,avx2,avx512}.cpp include
// batch_norm_rows_impl.h under a target pragma) and picked at run time by cpu_isa_level(). Every form
// computes the same operations in the same order without FMA contraction, so all give the same bits
// (the reductions keep 16 independent accumulators, whatever the vector width).
#include <cstdint>

namespace skelfast {
namespace bn {

template <typename scalar_t>
struct RowKernels {
  // For samples [n0, n1): each row's mean and centred sum of squares merged (Chan) into the block's
  // per-channel slots mu[c], m2[c] (zero on entry)
  void (*statistics_block)(const scalar_t* x, int64_t n0, int64_t n1, int64_t C, int64_t S, double* mu, double* m2);
  // y = relu?((x a_c + b_c) * keep * keep_scale + residual) for rows [r0, r1), and positive = y > 0
  // as bytes where positive is given (the backward's ReLU gate)
  void (*apply_rows)(const scalar_t* x, scalar_t* y, uint8_t* positive, const scalar_t* residual,
                     const uint8_t* keep, scalar_t keep_scale, bool relu, const scalar_t* a, const scalar_t* b,
                     int64_t C, int64_t S, int64_t r0, int64_t r1);
  // For samples [n0, n1): per channel, sum gb and sum gb (x - mean) with gb = g [y > 0] keep keep_scale
  // ([y > 0]: the forward's positive bytes, read with relu only), added to the block's slots
  void (*gated_sums_block)(const scalar_t* g, const uint8_t* positive, const scalar_t* x, const uint8_t* keep,
                           scalar_t keep_scale, bool relu, const scalar_t* mean, int64_t n0, int64_t n1, int64_t C,
                           int64_t S, double* sum_gb, double* sum_gbx);
  // Rows [r0, r1): dres = g [y > 0] (where dres is given) and dx = k1 (gb - k2 - (x - mean) k3)
  // (where dx is given)
  void (*input_grad_rows)(const scalar_t* g, const uint8_t* positive, const scalar_t* x, const uint8_t* keep,
                          scalar_t keep_scale, bool relu, const scalar_t* k1, const scalar_t* k2, const scalar_t* k3,
                          const scalar_t* mean, scalar_t* dx, scalar_t* dres, int64_t C, int64_t S, int64_t r0,
                          int64_t r1);
};

// Chan's parallel-variance update: fold (count_b, mean_b, m2_b) into (count, mean, m2).
inline void chan_merge(double& count, double& mean, double& m2, double count_b, double mean_b, double m2_b) {
  const double merged = count + count_b;
  if (merged == 0) return;
  const double delta = mean_b - mean;
  mean += delta * count_b / merged;
  m2 += m2_b + delta * delta * count * count_b / merged;
  count = merged;
}

// One factory per form and dtype. Off x86-64 (or with -DSKELFAST_NO_AVX2) the AVX2 and AVX-512
// factories return the baseline loops; cpu_isa_level() is 0 there anyway.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
#define SKELFAST_BN_X86 1
#endif
RowKernels<float> kernels_default_f32();
RowKernels<double> kernels_default_f64();
RowKernels<float> kernels_avx2_f32();
RowKernels<double> kernels_avx2_f64();
RowKernels<float> kernels_avx512_f32();
RowKernels<double> kernels_avx512_f64();

}  // namespace bn
}  // namespace skelfast
