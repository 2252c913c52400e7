// Included by gru_gates_default.cpp and gru_gates_avx2.cpp after SKELFAST_GRU_SUFFIX is defined (and,
// for AVX2, after `#pragma GCC target`): the same loops, compiled once per instruction set. Helpers
// have internal linkage so the two builds never merge. No include guard: each file includes it once.
#include <cmath>
#include <cstdint>
#include <cstring>

#define SKELFAST_GRU_CAT2(a, b) a##_##b
#define SKELFAST_GRU_CAT(a, b) SKELFAST_GRU_CAT2(a, b)

namespace skelfast {
namespace gru {
namespace {

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Cephes expf: x = n ln2 + r with n = round(x / ln2) (the 1.5 * 2^23 trick), |r| <= ln2 / 2, degree-6
// polynomial, times 2^n built in the exponent field. Clamped to [-87, 88] with selects, not branches.
inline float exp_f32(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// float32: the polynomial (vectorisable); float64: libm (the exact rows gradcheck holds the kernel to)
inline float sigmoid_of(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
inline float tanh_of(float x) { return 2.0f / (1.0f + exp_f32(-2.0f * x)) - 1.0f; }
inline double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_of(double x) { return std::tanh(x); }

template <typename T>
void forward_row(int64_t H, const T* __restrict gi, const T* __restrict gh, const T* __restrict b_hh,
                 T* __restrict h, T* __restrict out, T* __restrict saved) {
  if (saved == nullptr) {  // inference: nothing kept for a backward
    for (int64_t i = 0; i < H; ++i) {
      const T r = sigmoid_of(gi[i] + gh[i] + b_hh[i]);
      const T z = sigmoid_of(gi[H + i] + gh[H + i] + b_hh[H + i]);
      const T n = tanh_of(gi[2 * H + i] + r * (gh[2 * H + i] + b_hh[2 * H + i]));
      h[i] = n + z * (h[i] - n);
      out[i] = h[i];
    }
    return;
  }
  for (int64_t i = 0; i < H; ++i) {
    const T r = sigmoid_of(gi[i] + gh[i] + b_hh[i]);
    const T z = sigmoid_of(gi[H + i] + gh[H + i] + b_hh[H + i]);
    const T gh_n = gh[2 * H + i] + b_hh[2 * H + i];
    const T n = tanh_of(gi[2 * H + i] + r * gh_n);
    h[i] = n + z * (h[i] - n);
    out[i] = h[i];
    saved[i] = r;
    saved[H + i] = z;
    saved[2 * H + i] = n;
    saved[3 * H + i] = gh_n;
  }
}

template <typename T>
void backward_row(int64_t H, T* dh, const T* __restrict grad_out, const T* __restrict saved,
                  const T* __restrict h_prev, T* __restrict d_gi, T* __restrict d_gh) {
  for (int64_t i = 0; i < H; ++i) {
    const T dh_i = dh[i] + grad_out[i];
    const T r = saved[i], z = saved[H + i], n = saved[2 * H + i], gh_n = saved[3 * H + i];
    const T d_an = dh_i * (T(1) - z) * (T(1) - n * n);
    const T d_ar = d_an * gh_n * r * (T(1) - r);
    const T d_az = dh_i * (h_prev[i] - n) * z * (T(1) - z);
    d_gi[i] = d_ar;
    d_gi[H + i] = d_az;
    d_gi[2 * H + i] = d_an;
    d_gh[i] = d_ar;
    d_gh[H + i] = d_az;
    d_gh[2 * H + i] = d_an * r;
    dh[i] = dh_i * z;
  }
}

}  // namespace

void SKELFAST_GRU_CAT(forward_row_f32, SKELFAST_GRU_SUFFIX)(int64_t H, const float* gi, const float* gh,
                                                             const float* b_hh, float* h, float* out, float* saved) {
  forward_row<float>(H, gi, gh, b_hh, h, out, saved);
}

void SKELFAST_GRU_CAT(backward_row_f32, SKELFAST_GRU_SUFFIX)(int64_t H, float* dh, const float* grad_out,
                                                              const float* saved, const float* h_prev, float* d_gi,
                                                              float* d_gh) {
  backward_row<float>(H, dh, grad_out, saved, h_prev, d_gi, d_gh);
}

}  // namespace gru
}  // namespace skelfast

#undef SKELFAST_GRU_CAT
#undef SKELFAST_GRU_CAT2
