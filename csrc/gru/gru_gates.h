#pragma once
// The elementwise half of one GRU step, one packed row (H hidden units) at a time.
//
// Forward, with gi = W_ih x + b_ih and gh = W_hh h + b_hh (rows of 3H ordered r, z, n as PyTorch):
//   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
//   h' = (1 - z) * n + z * h,
// saving (r, z, n, gh_n) for the backward. Backward, with dh' = dh (the gradient carried from the
// later steps, updated in place) + the output's gradient: writes d(gi) and d(gh) (they differ only in
// the n block: d(gh_n) = d(a_n) * r) and leaves dh = dh' * z, the direct part of the gradient of the
// previous state; the caller adds d(gh) W_hh with one GEMM per step.
//
// float32 rows run in gru_gates_*.cpp, compiled once for the baseline ISA and once for AVX2 + FMA
// and picked at run time: exp is Cephes' expf polynomial written without branches so GCC vectorises
// the loop (1-2 ulp; sigmoid and tanh from it are within 2e-7 absolute). float64 rows use libm.
#include <cstdint>

namespace skelfast {
namespace gru {

using ForwardRowF32 = void (*)(int64_t H, const float* gi, const float* gh, const float* b_hh, float* h,
                               float* out, float* saved);
using BackwardRowF32 = void (*)(int64_t H, float* dh, const float* grad_out, const float* saved,
                                const float* h_prev, float* d_gi, float* d_gh);

void forward_row_f32_default(int64_t H, const float* gi, const float* gh, const float* b_hh, float* h, float* out,
                             float* saved);
void backward_row_f32_default(int64_t H, float* dh, const float* grad_out, const float* saved,
                              const float* h_prev, float* d_gi, float* d_gh);
#if defined(__GNUC__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
#define SKELFAST_GRU_AVX2 1
void forward_row_f32_avx2(int64_t H, const float* gi, const float* gh, const float* b_hh, float* h, float* out,
                          float* saved);
void backward_row_f32_avx2(int64_t H, float* dh, const float* grad_out, const float* saved,
                           const float* h_prev, float* d_gi, float* d_gh);
#endif

void forward_row_f64(int64_t H, const double* gi, const double* gh, const double* b_hh, double* h, double* out,
                     double* saved);
void backward_row_f64(int64_t H, double* dh, const double* grad_out, const double* saved,
                      const double* h_prev, double* d_gi, double* d_gh);

}  // namespace gru
}  // namespace skelfast
