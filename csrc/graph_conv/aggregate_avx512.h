#pragma once
// AVX-512 kernels for the aggregation products of the graph convolution that involve all K subsets,
// each B_k (V x V) with V <= 32 joints. The sum: out = sum_k in_k @ B_k, each in_k (R x V).
// The backward's dx = sum_k dX_k A_k^T (aggregate-first order) and the forward's
// y = sum_k Z_k A_k (mix-first order) have this form. As K accumulating GEMMs, MKL reaches about
// 90 GFLOP/s a core on them (an AVX-512 Xeon at ~190 for a large sgemm), rereading and rewriting
// the output K times; this kernel keeps 8 output rows in registers across all K subsets and
// reaches about 130-145 (measured at R = 16*50 and 64*50, V = 25, K = 3).
// The spread: out_k = in @ B_k for every k from one pass over in (R x V): the forward's and the
// backward's X_k = x A_k (aggregate-first) and P_k = g A_k^T (mix-first). MKL runs each product at
// ~135 GFLOP/s a core, 25 of every 32 lanes busy; side by side the K*V outputs fill 75 of 80 lanes
// and this kernel reaches ~150 (R = 64*64): 8-10% off the forward at V = 25, K = 3.
// dA = x^T dX_k stays on MKL, which a kernel of this kind did not beat (graph_conv_cpu.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace skelfast::cpu {

constexpr int64_t kVectorLanes = 16;  // floats in a 512-bit vector
constexpr int64_t kMaxPanelJoints = 32;  // V up to two vectors
constexpr int64_t kMaxPanelSubsets = 3;

inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// Whether subset_sum_avx512 serves K subsets of V joints on this CPU.
inline bool subset_sum_kernel_applies(int64_t K, int64_t V) {
  return K >= 1 && K <= kMaxPanelSubsets && V >= 1 && V <= kMaxPanelJoints && cpu_has_avx512f();
}

// The B_k (B + k*V*V, row-major; transposed when `transpose`) as the kernel reads them: for each k
// and v, row v of B_k zero-padded to NV = ceil(V / 16) vectors: panel[((k*V + v)*NV + j)*16 + l].
inline std::vector<float> pack_subset_panel(const float* B, int64_t K, int64_t V, bool transpose) {
  const int64_t nv = (V + kVectorLanes - 1) / kVectorLanes, width = nv * kVectorLanes;
  std::vector<float> panel(K * V * width, 0.0f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t w = 0; w < V; ++w)
        panel[(k * V + v) * width + w] = transpose ? B[(k * V + w) * V + v] : B[(k * V + v) * V + w];
  return panel;
}

// Everything below is compiled for AVX-512F (its lambdas included) and only called where
// cpu_has_avx512f() holds.
#pragma GCC push_options
#pragma GCC target("avx512f")

// ROWS output rows from r: out[r + i, :] (+)= sum_k sum_v in_k[r + i, v] B_k[v, :], the sums in
// ROWS x NV registers (the unroll pragmas let GCC keep the arrays in registers, not on the stack).
template <int K_, int NV, int ROWS>
inline void subset_sum_rows(int64_t r, int64_t V, const float* in, int64_t stride_in, const float* panel, float* out,
                            bool accumulate) {
  const int64_t rest = V % kVectorLanes;
  const __mmask16 tail = rest == 0 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << rest) - 1);
  __m512 acc[ROWS][NV];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
#pragma GCC unroll 3
  for (int k = 0; k < K_; ++k) {
    const float* in_k = in + k * stride_in + r * V;
    for (int64_t v = 0; v < V; ++v) {
      __m512 b[NV];
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) b[j] = _mm512_loadu_ps(panel + ((k * V + v) * NV + j) * kVectorLanes);
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i) {
        const __m512 a = _mm512_set1_ps(in_k[i * V + v]);
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) {
      const __mmask16 m = j == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      float* dst = out + (r + i) * V + j * kVectorLanes;
      const __m512 sum = accumulate ? _mm512_add_ps(acc[i][j], _mm512_maskz_loadu_ps(m, dst)) : acc[i][j];
      _mm512_mask_storeu_ps(dst, m, sum);
    }
}

// out (R x V, row-major) = sum_k in_k @ B_k (+ out when accumulate), in_k (R x V) at in + k*stride_in,
// the B_k from pack_subset_panel; the sum over k runs in order k = 0, 1, ... for every element.
template <int K_, int NV>
void subset_sum_avx512(int64_t R, int64_t V, const float* in, int64_t stride_in, const float* panel, float* out,
                       bool accumulate) {
  constexpr int kRows = 8;  // 8 x NV accumulators + NV panel vectors + 1 broadcast <= 32 registers
  int64_t r = 0;
  for (; r + kRows <= R; r += kRows) subset_sum_rows<K_, NV, kRows>(r, V, in, stride_in, panel, out, accumulate);
  for (; r < R; ++r) subset_sum_rows<K_, NV, 1>(r, V, in, stride_in, panel, out, accumulate);
}

// ROWS input rows from r, each spread to all K subsets at once: for every k,
// out[k*stride_out + (r + i)*V + w] = sum_v in[r + i, v] B_k[v, w]. The K*V outputs of a row sit
// side by side in NL vectors ([row @ B_0 | row @ B_1 | ...]: 75 of 80 lanes at V = 25, K = 3,
// against 50 of 64 in per-subset vectors) and go to the K planes by masked stores (SpreadStores).
template <int NL>
struct SpreadStores {
  int count[NL];                    // subsets that vector j holds lanes of (at most K)
  __mmask16 mask[NL][kMaxPanelSubsets];  // those lanes
  int64_t offset[NL][kMaxPanelSubsets];  // lane l goes to out + row*V + offset + l
};

template <int NL, int ROWS>
inline void subset_spread_rows(int64_t r, int64_t V, const float* in, const float* panel, float* out,
                               const SpreadStores<NL>& st) {
  __m512 acc[ROWS][NL];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 6
    for (int j = 0; j < NL; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t v = 0; v < V; ++v) {
    __m512 b[NL];
#pragma GCC unroll 6
    for (int j = 0; j < NL; ++j) b[j] = _mm512_loadu_ps(panel + (v * NL + j) * kVectorLanes);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const __m512 a = _mm512_set1_ps(in[(r + i) * V + v]);
#pragma GCC unroll 6
      for (int j = 0; j < NL; ++j) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
#pragma GCC unroll 6
  for (int j = 0; j < NL; ++j)
    for (int s = 0; s < st.count[j]; ++s)
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i)  // masked-off lanes are neither written nor read
        _mm512_mask_storeu_ps(out + (r + i) * V + st.offset[j][s], st.mask[j][s], acc[i][j]);
}

template <int NL>
void subset_spread_avx512(int64_t K, int64_t R, int64_t V, const float* in, const float* panel, float* out,
                          int64_t stride_out) {
  // ROWS x NL accumulators + NL panel vectors + 1 broadcast <= 32 registers
  constexpr int kRows = NL <= 3 ? 8 : (31 - NL) / NL;
  SpreadStores<NL> st{};
  for (int j = 0; j < NL; ++j)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t lo = std::max<int64_t>(k * V, j * kVectorLanes);
      const int64_t hi = std::min<int64_t>((k + 1) * V, (j + 1) * kVectorLanes);
      if (lo >= hi) continue;
      const int s = st.count[j]++;
      st.mask[j][s] = static_cast<__mmask16>(((1u << (hi - lo)) - 1u) << (lo - j * kVectorLanes));
      // >= 0: stride_out >= V
      st.offset[j][s] = k * stride_out + j * kVectorLanes - k * V;
    }
  int64_t r = 0;
  for (; r + kRows <= R; r += kRows) subset_spread_rows<NL, kRows>(r, V, in, panel, out, st);
  for (; r < R; ++r) subset_spread_rows<NL, 1>(r, V, in, panel, out, st);
}

#pragma GCC pop_options

// Dispatch on the subset count and vectors per row; the caller checks subset_sum_kernel_applies.
inline void subset_sum(int64_t K, int64_t R, int64_t V, const float* in, int64_t stride_in, const float* panel,
                       float* out, bool accumulate) {
  const bool two = V > kVectorLanes;
  switch (K * 2 + (two ? 1 : 0)) {
    case 2: subset_sum_avx512<1, 1>(R, V, in, stride_in, panel, out, accumulate); break;
    case 3: subset_sum_avx512<1, 2>(R, V, in, stride_in, panel, out, accumulate); break;
    case 4: subset_sum_avx512<2, 1>(R, V, in, stride_in, panel, out, accumulate); break;
    case 5: subset_sum_avx512<2, 2>(R, V, in, stride_in, panel, out, accumulate); break;
    case 6: subset_sum_avx512<3, 1>(R, V, in, stride_in, panel, out, accumulate); break;
    default: subset_sum_avx512<3, 2>(R, V, in, stride_in, panel, out, accumulate); break;
  }
}

// The B_k (B + k*V*V, row-major; transposed when `transpose`) side by side for subset_spread: row v
// of the panel is [B_0[v, :] | B_1[v, :] | ...] zero-padded to NL = ceil(K*V / 16) vectors.
inline int64_t spread_vectors(int64_t K, int64_t V) { return (K * V + kVectorLanes - 1) / kVectorLanes; }

inline std::vector<float> pack_spread_panel(const float* B, int64_t K, int64_t V, bool transpose) {
  const int64_t width = spread_vectors(K, V) * kVectorLanes;
  std::vector<float> panel(V * width, 0.0f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t w = 0; w < V; ++w)
        panel[v * width + k * V + w] = transpose ? B[(k * V + w) * V + v] : B[(k * V + v) * V + w];
  return panel;
}

// out_k (R x V) = in (R x V) @ B_k for every subset k, out_k at out + k*stride_out: one pass over
// `in` (from pack_spread_panel); the caller checks subset_sum_kernel_applies.
inline void subset_spread(int64_t K, int64_t R, int64_t V, const float* in, const float* panel, float* out,
                          int64_t stride_out) {
  switch (spread_vectors(K, V)) {
    case 1: subset_spread_avx512<1>(K, R, V, in, panel, out, stride_out); break;
    case 2: subset_spread_avx512<2>(K, R, V, in, panel, out, stride_out); break;
    case 3: subset_spread_avx512<3>(K, R, V, in, panel, out, stride_out); break;
    case 4: subset_spread_avx512<4>(K, R, V, in, panel, out, stride_out); break;
    case 5: subset_spread_avx512<5>(K, R, V, in, panel, out, stride_out); break;
    default: subset_spread_avx512<6>(K, R, V, in, panel, out, stride_out); break;
  }
}

}  // namespace skelfast::cpu
