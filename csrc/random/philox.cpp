// The fill loops of philox.h (normals and raw words): a portable scalar form, and on x86-64 CPUs
// with AVX2 the same arithmetic eight counters at a time, with AVX-512F sixteen (picked at run
// time). None uses FMA, so all give the same bits.
#include "philox.h"

// -DSKELFAST_NO_AVX2 builds the portable form only (to check the forms agree)
#if defined(__GNUC__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
#include <immintrin.h>
#define SKELFAST_PHILOX_AVX2 1
#endif

namespace skelfast {
namespace philox {
namespace {

// Philox4x32-10 of counter (counter, 0, 0, 0): the four words
inline void philox4(uint32_t counter, uint32_t key_lo, uint32_t key_hi, uint32_t* words) {
  uint32_t c0 = counter, c1 = 0, c2 = 0, c3 = 0, k0 = key_lo, k1 = key_hi;
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t pb = static_cast<uint64_t>(kRoundB) * c2, pa = static_cast<uint64_t>(kRoundA) * c0;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

// normals [4 * first_counter, 4 * first_counter + count)
void normal_fill_scalar(uint64_t key, uint32_t first_counter, int64_t count, float* out) {
  const uint32_t key_lo = static_cast<uint32_t>(key), key_hi = static_cast<uint32_t>(key >> 32);
  for (int64_t i = 0; i < count; i += 4) {
    uint32_t w[4];
    float z[4];
    philox4(first_counter + static_cast<uint32_t>(i / 4), key_lo, key_hi, w);
    box_muller(w[0], w[1], z);
    box_muller(w[2], w[3], z + 2);
    for (int64_t j = 0; j < 4 && i + j < count; ++j) out[i + j] = z[j];
  }
}

// words [4 * first_counter, 4 * first_counter + count)
void word_fill_scalar(uint64_t key, uint32_t first_counter, int64_t count, uint32_t* out) {
  const uint32_t key_lo = static_cast<uint32_t>(key), key_hi = static_cast<uint32_t>(key >> 32);
  for (int64_t i = 0; i < count; i += 4) {
    uint32_t w[4];
    philox4(first_counter + static_cast<uint32_t>(i / 4), key_lo, key_hi, w);
    for (int64_t j = 0; j < 4 && i + j < count; ++j) out[i + j] = w[j];
  }
}

#ifdef SKELFAST_PHILOX_AVX2

// The vector forms: no contraction to FMA beyond the explicit mul_add of philox.h (their targets
// have FMA; the scalar form's products and sums round separately, and so must theirs)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// 32 x 32 -> 64-bit products of eight lanes by a constant: (high words, low words)
__attribute__((target("avx2,fma"))) inline void mul_wide(__m256i a, __m256i b, __m256i b_odd, __m256i* hi,
                                                     __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, b);                           // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), b_odd);  // lanes 1, 3, 5, 7
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2,fma"))) inline __m256 bits_to_float(__m256i v) { return _mm256_castsi256_ps(v); }
__attribute__((target("avx2,fma"))) inline __m256i float_to_bits(__m256 v) { return _mm256_castps_si256(v); }

// to_uniform, log_positive and sincos_small of philox.h, eight lanes, the same operations
__attribute__((target("avx2,fma"))) inline __m256 uniform8(__m256i w) {
  const __m256i folded = _mm256_xor_si256(w, _mm256_srai_epi32(w, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f));
}

__attribute__((target("avx2,fma"), flatten)) inline __m256 log8(__m256 x) {
  const __m256i bits = float_to_bits(x);
  const __m256i m0 = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                     _mm256_set1_epi32(0x3f000000));
  // lanes are below 2^31 here, so the signed compare orders them as unsigned
  const __m256i low = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3f3504f3), m0);  // -1 where m0 < sqrt(1/2)
  const __m256i exponent = _mm256_add_epi32(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)), low);
  const __m256 e = _mm256_cvtepi32_ps(exponent);
  const __m256i doubled = _mm256_add_epi32(m0, _mm256_and_si256(low, _mm256_set1_epi32(1 << 23)));
  const __m256 m = _mm256_sub_ps(bits_to_float(doubled), _mm256_set1_ps(1.0f));
  __m256 out;
  log_polynomial(&m, &e, &out);
  return out;
}

__attribute__((target("avx2,fma"), flatten)) inline void sincos8(__m256 x, __m256* sin_x, __m256* cos_x) {
  __m256i j = _mm256_cvttps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(1.27323954473516f)));
  j = _mm256_add_epi32(j, _mm256_and_si256(j, _mm256_set1_epi32(1)));
  const __m256 y = _mm256_cvtepi32_ps(j);
  __m256 s, c;
  sincos_polynomials(&x, &y, &s, &c);
  const __m256i swap = _mm256_sub_epi32(_mm256_setzero_si256(),
                                        _mm256_and_si256(_mm256_srli_epi32(j, 1), _mm256_set1_epi32(1)));
  const __m256i four = _mm256_set1_epi32(4);
  const __m256i cos_sign = _mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(j, _mm256_set1_epi32(2)), four), 29);
  const __m256i sin_sign = _mm256_slli_epi32(_mm256_and_si256(j, four), 29);
  const __m256i cb = float_to_bits(c), sb = float_to_bits(s);
  *cos_x = bits_to_float(_mm256_xor_si256(_mm256_blendv_epi8(cb, sb, swap), cos_sign));
  *sin_x = bits_to_float(_mm256_xor_si256(_mm256_blendv_epi8(sb, cb, swap), sin_sign));
}

// box_muller for eight pairs of words
__attribute__((target("avx2,fma"))) inline void box_muller8(__m256i wa, __m256i wb, __m256* first, __m256* second) {
  // clamp_tiny: integer max of the bit patterns of non-negative floats (0x33d6bf95 is 1e-7f)
  const __m256 u = bits_to_float(_mm256_max_epu32(float_to_bits(uniform8(wa)), _mm256_set1_epi32(0x33d6bf95)));
  const __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log8(u)));
  __m256 s, c;
  sincos8(_mm256_mul_ps(_mm256_set1_ps(6.283185307179586f), uniform8(wb)), &s, &c);
  *first = _mm256_mul_ps(r, c);
  *second = _mm256_mul_ps(r, s);
}

// Philox4x32-10 of eight counters (first, first + 1, ..., first + 7) at a time. The key schedule is
// the same for every counter: one broadcast per round, made once per fill.
struct Philox8 {
  __m256i k0[kRounds], k1[kRounds], ra, rb, ra_odd, rb_odd, lane;

  __attribute__((target("avx2,fma"))) explicit Philox8(uint64_t key) {
    uint32_t key_lo = static_cast<uint32_t>(key), key_hi = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < kRounds; ++round, key_lo += kKeyA, key_hi += kKeyB) {
      k0[round] = _mm256_set1_epi32(static_cast<int>(key_lo));
      k1[round] = _mm256_set1_epi32(static_cast<int>(key_hi));
    }
    ra = _mm256_set1_epi32(static_cast<int>(kRoundA));
    rb = _mm256_set1_epi32(static_cast<int>(kRoundB));
    ra_odd = _mm256_srli_epi64(ra, 32);
    rb_odd = _mm256_srli_epi64(rb, 32);
    lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  }

  // words[s][lane] = word s of counter first + lane
  __attribute__((target("avx2,fma"))) inline void operator()(uint32_t first, __m256i* words) const {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first)), lane);
    __m256i c1 = _mm256_setzero_si256(), c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    for (int round = 0; round < kRounds; ++round) {
      __m256i hb, lb, ha, la;
      mul_wide(c2, rb, rb_odd, &hb, &lb);
      mul_wide(c0, ra, ra_odd, &ha, &la);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hb, c1), k0[round]);
      c2 = _mm256_xor_si256(_mm256_xor_si256(ha, c3), k1[round]);
      c1 = lb;
      c3 = la;
    }
    words[0] = c0;
    words[1] = c1;
    words[2] = c2;
    words[3] = c3;
  }
};

// 4 x 8 -> 8 x 4: out[4 lane + s] = z_s[lane] for 32 consecutive values (shuffles only: any bits)
__attribute__((target("avx2,fma"))) inline void store_interleaved(float* out, __m256 z0, __m256 z1, __m256 z2, __m256 z3) {
  const __m256 a = _mm256_unpacklo_ps(z0, z1), b = _mm256_unpackhi_ps(z0, z1);  // (0,0 1,0 0,1 1,1 | lanes 4,5)...
  const __m256 c = _mm256_unpacklo_ps(z2, z3), d = _mm256_unpackhi_ps(z2, z3);
  const __m256 l0 = _mm256_shuffle_ps(a, c, 0x44), l1 = _mm256_shuffle_ps(a, c, 0xEE);  // lanes 0, 1 | 4, 5
  const __m256 l2 = _mm256_shuffle_ps(b, d, 0x44), l3 = _mm256_shuffle_ps(b, d, 0xEE);  // lanes 2, 3 | 6, 7
  _mm256_storeu_ps(out, _mm256_permute2f128_ps(l0, l1, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(l2, l3, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(l0, l1, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(l2, l3, 0x31));
}

// Normals 4 counter .. 4 counter + 31, eight counters at a time: four vectors of normals (one per
// output slot 0..3), transposed so that each counter's four normals land next to each other.
__attribute__((target("avx2,fma"), always_inline)) inline void normals32(const Philox8& philox, uint32_t counter,
                                                                         float* out) {
  __m256i w[4];
  philox(counter, w);
  __m256 z0, z1, z2, z3;  // z_s[lane] = normal 4 * (counter + lane) + s
  box_muller8(w[0], w[1], &z0, &z1);
  box_muller8(w[2], w[3], &z2, &z3);
  store_interleaved(out, z0, z1, z2, z3);
}

__attribute__((target("avx2,fma"))) void normal_fill_avx2(uint64_t key, int64_t count, float* out) {
  const Philox8 philox(key);
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) normals32(philox, static_cast<uint32_t>(i / 4), out + i);
  if (i < count) {  // the last partial block in full, into a buffer (the scalar form's fmaf is a call)
    float block[32];
    normals32(philox, static_cast<uint32_t>(i / 4), block);
    std::memcpy(out + i, block, sizeof(float) * static_cast<size_t>(count - i));
  }
}

__attribute__((target("avx2,fma"))) void word_fill_avx2(uint64_t key, uint32_t first_counter, int64_t count,
                                                    uint32_t* out) {
  const Philox8 philox(key);
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    __m256i w[4];
    philox(first_counter + static_cast<uint32_t>(i / 4), w);
    store_interleaved(reinterpret_cast<float*>(out + i), _mm256_castsi256_ps(w[0]), _mm256_castsi256_ps(w[1]),
                      _mm256_castsi256_ps(w[2]), _mm256_castsi256_ps(w[3]));
  }
  word_fill_scalar(key, first_counter + static_cast<uint32_t>(i / 4), count - i, out + i);
}


// The same arithmetic sixteen counters at a time on CPUs with AVX-512F, instruction for instruction
// the AVX2 form's (masks where AVX2 blends on vectors; fp-contract is still off from above).
#pragma GCC push_options
#pragma GCC target("avx512f")

inline void mul_wide16(__m512i a, __m512i b, __m512i b_odd, __m512i* hi, __m512i* lo) {
  const __m512i even = _mm512_mul_epu32(a, b);                           // lanes 0, 2, ..., 14
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), b_odd);  // lanes 1, 3, ..., 15
  // one merge-masked dword shuffle each (where AVX2 shifts and blends): even lanes take the high
  // dword of their product (dword 2i + 1 of `even`), odd lanes the low dword of theirs (dword 2i of `odd`)
  *hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_DDBB);
  *lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);
}

inline __m512 uniform16(__m512i w) {
  const __m512i folded = _mm512_xor_si512(w, _mm512_srai_epi32(w, 31));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_set1_ps(4.6566127342e-10f));
}

__attribute__((flatten)) inline __m512 log16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i m0 = _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)),
                                     _mm512_set1_epi32(0x3f000000));
  const __mmask16 low = _mm512_cmplt_epi32_mask(m0, _mm512_set1_epi32(0x3f3504f3));  // m0 < sqrt(1/2)
  const __m512i biased = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126));
  const __m512 e = _mm512_cvtepi32_ps(_mm512_mask_sub_epi32(biased, low, biased, _mm512_set1_epi32(1)));
  const __m512i doubled = _mm512_mask_add_epi32(m0, low, m0, _mm512_set1_epi32(1 << 23));
  const __m512 m = _mm512_sub_ps(_mm512_castsi512_ps(doubled), _mm512_set1_ps(1.0f));
  __m512 out;
  log_polynomial(&m, &e, &out);
  return out;
}

__attribute__((flatten)) inline void sincos16(__m512 x, __m512* sin_x, __m512* cos_x) {
  __m512i j = _mm512_cvttps_epi32(_mm512_mul_ps(x, _mm512_set1_ps(1.27323954473516f)));
  j = _mm512_add_epi32(j, _mm512_and_si512(j, _mm512_set1_epi32(1)));
  const __m512 y = _mm512_cvtepi32_ps(j);
  __m512 s, c;
  sincos_polynomials(&x, &y, &s, &c);
  // octants 2 and 6 swap the polynomials
  const __mmask16 swap = _mm512_test_epi32_mask(j, _mm512_set1_epi32(2));
  const __m512i four = _mm512_set1_epi32(4);
  const __m512i cos_sign = _mm512_slli_epi32(_mm512_and_si512(_mm512_add_epi32(j, _mm512_set1_epi32(2)), four), 29);
  const __m512i sin_sign = _mm512_slli_epi32(_mm512_and_si512(j, four), 29);
  const __m512i cb = _mm512_castps_si512(c), sb = _mm512_castps_si512(s);
  *cos_x = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_mask_blend_epi32(swap, cb, sb), cos_sign));
  *sin_x = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_mask_blend_epi32(swap, sb, cb), sin_sign));
}

inline void box_muller16(__m512i wa, __m512i wb, __m512* first, __m512* second) {
  const __m512i tiny = _mm512_set1_epi32(0x33d6bf95);  // clamp_tiny: 1e-7f's bits
  const __m512 u = _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(uniform16(wa)), tiny));
  const __m512 r = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), log16(u)));
  __m512 s, c;
  sincos16(_mm512_mul_ps(_mm512_set1_ps(6.283185307179586f), uniform16(wb)), &s, &c);
  *first = _mm512_mul_ps(r, c);
  *second = _mm512_mul_ps(r, s);
}

struct Philox16 {
  __m512i k0[kRounds], k1[kRounds], ra, rb, ra_odd, rb_odd, lane;

  explicit Philox16(uint64_t key) {
    uint32_t key_lo = static_cast<uint32_t>(key), key_hi = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < kRounds; ++round, key_lo += kKeyA, key_hi += kKeyB) {
      k0[round] = _mm512_set1_epi32(static_cast<int>(key_lo));
      k1[round] = _mm512_set1_epi32(static_cast<int>(key_hi));
    }
    ra = _mm512_set1_epi32(static_cast<int>(kRoundA));
    rb = _mm512_set1_epi32(static_cast<int>(kRoundB));
    ra_odd = _mm512_srli_epi64(ra, 32);
    rb_odd = _mm512_srli_epi64(rb, 32);
    lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }

  inline void operator()(uint32_t first, __m512i* words) const {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first)), lane);
    __m512i c1 = _mm512_setzero_si512(), c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    for (int round = 0; round < kRounds; ++round) {
      __m512i hb, lb, ha, la;
      mul_wide16(c2, rb, rb_odd, &hb, &lb);
      mul_wide16(c0, ra, ra_odd, &ha, &la);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hb, c1), k0[round]);
      c2 = _mm512_xor_si512(_mm512_xor_si512(ha, c3), k1[round]);
      c1 = lb;
      c3 = la;
    }
    words[0] = c0;
    words[1] = c1;
    words[2] = c2;
    words[3] = c3;
  }
};

// 4 x 16 -> 16 x 4: out[4 lane + s] = z_s[lane] for 64 consecutive values. Within each 128-bit
// chunk as store_interleaved, then a 4 x 4 transpose of the chunks.
inline void store_interleaved16(float* out, __m512 z0, __m512 z1, __m512 z2, __m512 z3) {
  const __m512 a = _mm512_unpacklo_ps(z0, z1), b = _mm512_unpackhi_ps(z0, z1);
  const __m512 c = _mm512_unpacklo_ps(z2, z3), d = _mm512_unpackhi_ps(z2, z3);
  // l_r chunk q holds counter 4 q + r's four values
  const __m512 l0 = _mm512_shuffle_ps(a, c, 0x44), l1 = _mm512_shuffle_ps(a, c, 0xEE);
  const __m512 l2 = _mm512_shuffle_ps(b, d, 0x44), l3 = _mm512_shuffle_ps(b, d, 0xEE);
  const __m512 t0 = _mm512_shuffle_f32x4(l0, l1, 0x44), t1 = _mm512_shuffle_f32x4(l2, l3, 0x44);
  const __m512 t2 = _mm512_shuffle_f32x4(l0, l1, 0xEE), t3 = _mm512_shuffle_f32x4(l2, l3, 0xEE);
  _mm512_storeu_ps(out, _mm512_shuffle_f32x4(t0, t1, 0x88));
  _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(t0, t1, 0xDD));
  _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(t2, t3, 0x88));
  _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(t2, t3, 0xDD));
}

// Normals 4 counter .. 4 counter + 63 (sixteen counters) into out
__attribute__((always_inline)) inline void normals64(const Philox16& philox, uint32_t counter, float* out) {
  __m512i w[4];
  philox(counter, w);
  __m512 z0, z1, z2, z3;  // z_s[lane] = normal 4 * (counter + lane) + s
  box_muller16(w[0], w[1], &z0, &z1);
  box_muller16(w[2], w[3], &z2, &z3);
  store_interleaved16(out, z0, z1, z2, z3);
}

void normal_fill_avx512(uint64_t key, int64_t count, float* out) {
  const Philox16 philox(key);
  int64_t i = 0;
  // two blocks of 64 an iteration: the log and sincos polynomials are chains of dependent
  // multiply-adds, and four independent chains keep the vector units busier than two
  // (written out: as two normals64 calls GCC ran the blocks one after the other, 9 % slower)
  for (; i + 128 <= count; i += 128) {
    __m512i w[4], v[4];
    philox(static_cast<uint32_t>(i / 4), w);
    philox(static_cast<uint32_t>(i / 4 + 16), v);
    __m512 z0, z1, z2, z3, y0, y1, y2, y3;
    box_muller16(w[0], w[1], &z0, &z1);
    box_muller16(w[2], w[3], &z2, &z3);
    box_muller16(v[0], v[1], &y0, &y1);
    box_muller16(v[2], v[3], &y2, &y3);
    store_interleaved16(out + i, z0, z1, z2, z3);
    store_interleaved16(out + i + 64, y0, y1, y2, y3);
  }
  for (; i + 64 <= count; i += 64) normals64(philox, static_cast<uint32_t>(i / 4), out + i);
  if (i < count) {  // the last partial block in full, into a buffer (the scalar form's fmaf is a call)
    float block[64];
    normals64(philox, static_cast<uint32_t>(i / 4), block);
    std::memcpy(out + i, block, sizeof(float) * static_cast<size_t>(count - i));
  }
}

void word_fill_avx512(uint64_t key, uint32_t first_counter, int64_t count, uint32_t* out) {
  const Philox16 philox(key);
  int64_t i = 0;
  for (; i + 64 <= count; i += 64) {
    __m512i w[4];
    philox(first_counter + static_cast<uint32_t>(i / 4), w);
    store_interleaved16(reinterpret_cast<float*>(out + i), _mm512_castsi512_ps(w[0]), _mm512_castsi512_ps(w[1]),
                        _mm512_castsi512_ps(w[2]), _mm512_castsi512_ps(w[3]));
  }
  word_fill_scalar(key, first_counter + static_cast<uint32_t>(i / 4), count - i, out + i);
}

#pragma GCC pop_options  // avx512f
#pragma GCC pop_options  // fp-contract=off

#endif  // SKELFAST_PHILOX_AVX2

}  // namespace

static bool use_avx512() {
#ifdef SKELFAST_PHILOX_AVX2
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512;
#else
  return false;
#endif
}

static bool use_avx2() {
#ifdef SKELFAST_PHILOX_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

void normal_fill(uint64_t key, int64_t count, float* out) {
#ifdef SKELFAST_PHILOX_AVX2
  if (use_avx512()) return normal_fill_avx512(key, count, out);
  if (use_avx2()) return normal_fill_avx2(key, count, out);
#endif
  normal_fill_scalar(key, 0, count, out);
}

void word_fill(uint64_t key, uint32_t first_counter, int64_t count, uint32_t* out) {
#ifdef SKELFAST_PHILOX_AVX2
  if (use_avx512()) return word_fill_avx512(key, first_counter, count, out);
  if (use_avx2()) return word_fill_avx2(key, first_counter, count, out);
#endif
  word_fill_scalar(key, first_counter, count, out);
}

}  // namespace philox
}  // namespace skelfast
