// The random streams every skelfast backend shares (C++ here, Triton in kernels/, PyTorch in
// skelfast/reference/philox.py): Philox4x32-10 words, as Triton's tl.randint4x draws them. The
// augmentation noise is standard normal number i of a stream keyed by `key`: Box-Muller output
// (i & 3) of counter i >> 2. Dropout keeps element i where word (i & 3) of counter i >> 2 reaches
// its threshold (csrc/dropout/).
//
// Philox and the word-to-uniform rule are Triton's (triton/language/random.py: counter
// (i >> 2, 0, 0, 0), key (key & 0xffffffff, key >> 32); a word is bitcast to int32, negatives
// folded to -x - 1, times 4.6566127342e-10f). Words (0, 1) and (2, 3) each give a pair:
// r = sqrt(-2 log max(u_a, 1e-7)), th = 6.283185307179586f * u_b; normals r cos th, r sin th;
// float32 throughout. Four normals per Philox call (tl.randn keeps one) cut its cost by four.
// The integers are bit-exact across backends; log, sin and cos are Cephes' single-precision
// polynomials here (a few ulps from the others' libm), written with bit operations, not branches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
#include <immintrin.h>
#endif

namespace skelfast {
namespace philox {

constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr int kRounds = 10;

inline float as_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t as_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// uint_to_uniform_float for a 32-bit word: the int32 bitcast with negatives folded to -x - 1
// (x ^ (x >> 31)), times 4.6566127342e-10f: [0, 1)
inline float to_uniform(uint32_t word) {
  const int32_t x = static_cast<int32_t>(word);
  return static_cast<float>(x ^ (x >> 31)) * 4.6566127342e-10f;
}

// max(1e-7f, u) for u >= 0: non-negative floats order as their bit patterns
inline float clamp_tiny(float u) {
  return as_float(std::max(as_bits(u), as_bits(1.0e-7f)));
}

// a * b + c rounded once, in every form: std::fma for float (an instruction where the CPU has FMA,
// glibc's exact emulation elsewhere), the FMA instructions for the vectors (the AVX2 form requires
// FMA too). Overloads, declared before the templates below, which call them unqualified; the
// vector forms' callers are `flatten`ed so these inline into them (always_inline would be checked
// against the templates' own default target and refused).
inline float mul_add(float a, float b, float c) { return std::fma(a, b, c); }
#if defined(__GNUC__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
__attribute__((target("avx2,fma"))) inline __m256 mul_add(__m256 a, __m256 b, __m256 c) {
  return _mm256_fmadd_ps(a, b, c);
}
__attribute__((target("avx512f"))) inline __m512 mul_add(__m512 a, __m512 b, __m512 c) {
  return _mm512_fmadd_ps(a, b, c);
}
#endif

// The float arithmetic every form shares, written once for float and for the GCC vector types
// __m256 / __m512 (their operators act lane-wise, a scalar operand is broadcast by F{} + s). Each
// form picks its own bits (exponent, octant, signs); these give the same roundings in the same order
// in all of them, which is what makes the forms agree bit for bit: each multiply-add is an explicit
// mul_add (one rounding), and no form may contract the other products and sums to FMA.
// Pointers, not vector arguments or returns: those would change the ABI outside AVX code.

// Cephes logf's polynomial: log(m0 2^e) = (m + y) + 0.693359375 e for m = m0 - 1 (m0 in
// [sqrt(1/2), sqrt(2))), e the exponent as a float, with the tail -2.12194440e-4 e folded into y
template <typename F>
__attribute__((always_inline)) inline void log_polynomial(const F* m_in, const F* e_in, F* out) {
  const F m = *m_in, e = *e_in;
  const F z = m * m;
  F y = mul_add(m, F{} + 7.0376836292e-2f, F{} - 1.1514610310e-1f);
  y = mul_add(y, m, F{} + 1.1676998740e-1f);
  y = mul_add(y, m, F{} - 1.2420140846e-1f);
  y = mul_add(y, m, F{} + 1.4249322787e-1f);
  y = mul_add(y, m, F{} - 1.6668057665e-1f);
  y = mul_add(y, m, F{} + 2.0000714765e-1f);
  y = mul_add(y, m, F{} - 2.4999993993e-1f);
  y = mul_add(y, m, F{} + 3.3333331174e-1f);
  y = y * m * z;
  y = mul_add(e, F{} - 2.12194440e-4f, y);
  y = mul_add(z, F{} - 0.5f, y);
  *out = mul_add(e, F{} + 0.693359375f, m + y);
}

// Cephes sinf/cosf's reduction and polynomials: x - j pi/4 in three parts (y = j as a float), then
// the sine and cosine polynomials of the remainder r (|r| <= pi/4)
template <typename F>
__attribute__((always_inline)) inline void sincos_polynomials(const F* x_in, const F* y_in, F* s_out, F* c_out) {
  const F y = *y_in;
  F r = mul_add(y, F{} - 0.78515625f, *x_in);
  r = mul_add(y, F{} - 2.4187564849853515625e-4f, r);
  r = mul_add(y, F{} - 3.77489497744594108e-8f, r);
  const F z = r * r;
  F c = mul_add(z, F{} + 2.443315711809948e-5f, F{} - 1.388731625493765e-3f);
  c = mul_add(c, z, F{} + 4.166664568298827e-2f);
  c = mul_add(c, z, F{} - 0.5f);  // c z^2 - z / 2 + 1 as ((c z - 1/2) z + 1)
  *c_out = mul_add(c, z, F{} + 1.0f);
  F s = mul_add(z, F{} - 1.9515295891e-4f, F{} + 8.3321608736e-3f);
  s = mul_add(s, z, F{} - 1.6666654611e-1f);
  *s_out = mul_add(s * z, r, r);
}

// Cephes logf for normal x > 0 (here x in [1e-7, 1)): mantissa in [sqrt(1/2), sqrt(2)), degree-9
// polynomial, exponent added in two parts. Selections are arithmetic so the caller's loop has no
// branches (GCC would otherwise thread them and give up vectorising).
inline float log_positive(float x) {
  const uint32_t bits = as_bits(x);
  const uint32_t m0 = (bits & 0x007fffffu) | 0x3f000000u;  // x = m0 * 2^e0, m0 in [0.5, 1): its bits
  // below sqrt(1/2): use 2 m0 - 1 and e0 - 1 (positive floats order as their bits; adding 1 to the
  // exponent field doubles m0 exactly)
  const int32_t low = static_cast<int32_t>(m0 < 0x3f3504f3u);
  const float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126 - low);
  const float m = as_float(m0 + (static_cast<uint32_t>(low) << 23)) - 1.0f;
  float out;
  log_polynomial(&m, &e, &out);
  return out;
}

// Cephes sinf/cosf for x in [0, 2 pi]: octant j = x * 4/pi rounded up to even, three-part
// Cody-Waite reduction to |r| <= pi/4, both polynomials; the octant picks which is which and the
// signs (bit operations): cos = c, -s, -c, s and sin = s, c, -s, -c for j = 0, 2, 4, 6.
inline void sincos_small(float x, float* sin_x, float* cos_x) {
  int32_t j = static_cast<int32_t>(x * 1.27323954473516f);
  j += j & 1;
  const float y = static_cast<float>(j);
  float s, c;
  sincos_polynomials(&x, &y, &s, &c);
  const uint32_t swap = 0u - static_cast<uint32_t>((j >> 1) & 1);  // all ones in octants 2 and 6
  const uint32_t cos_sign = static_cast<uint32_t>((j + 2) & 4) << 29, sin_sign = static_cast<uint32_t>(j & 4) << 29;
  const uint32_t sb = as_bits(s), cb = as_bits(c);
  *cos_x = as_float(((sb & swap) | (cb & ~swap)) ^ cos_sign);
  *sin_x = as_float(((cb & swap) | (sb & ~swap)) ^ sin_sign);
}

// Two Philox words -> two standard normals (r cos th, r sin th)
inline void box_muller(uint32_t wa, uint32_t wb, float* out) {
  const float r = std::sqrt(-2.0f * log_positive(clamp_tiny(to_uniform(wa))));
  float s, c;
  sincos_small(6.283185307179586f * to_uniform(wb), &s, &c);
  out[0] = r * c;
  out[1] = r * s;
}

// out[i] = normal i of the stream keyed by key, for i in [0, count) (count < 2^34): philox.cpp
void normal_fill(uint64_t key, int64_t count, float* out);

// out[i] = word (i & 3) of counter first_counter + (i >> 2), i in [0, count): Triton's
// tl.randint4x(key, counter) words, the raw bits behind both the normals and the dropout masks
void word_fill(uint64_t key, uint32_t first_counter, int64_t count, uint32_t* out);

}  // namespace philox
}  // namespace skelfast
