// The GRU gate loops for the baseline instruction set, and the float64 rows (libm).
#include <cmath>

#include "gru_gates.h"

#define SKELFAST_GRU_SUFFIX default
#include "gru_gates_impl.h"

namespace skelfast {
namespace gru {

void forward_row_f64(int64_t H, const double* gi, const double* gh, const double* b_hh, double* h, double* out,
                     double* saved) {
  for (int64_t i = 0; i < H; ++i) {
    const double r = 1.0 / (1.0 + std::exp(-(gi[i] + gh[i] + b_hh[i])));
    const double z = 1.0 / (1.0 + std::exp(-(gi[H + i] + gh[H + i] + b_hh[H + i])));
    const double gh_n = gh[2 * H + i] + b_hh[2 * H + i];
    const double n = std::tanh(gi[2 * H + i] + r * gh_n);
    h[i] = n + z * (h[i] - n);
    out[i] = h[i];
    if (saved != nullptr) {
      saved[i] = r;
      saved[H + i] = z;
      saved[2 * H + i] = n;
      saved[3 * H + i] = gh_n;
    }
  }
}

void backward_row_f64(int64_t H, double* dh, const double* grad_out, const double* saved,
                      const double* h_prev, double* d_gi, double* d_gh) {
  for (int64_t i = 0; i < H; ++i) {
    const double dh_i = dh[i] + grad_out[i];
    const double r = saved[i], z = saved[H + i], n = saved[2 * H + i], gh_n = saved[3 * H + i];
    const double d_an = dh_i * (1.0 - z) * (1.0 - n * n);
    const double d_ar = d_an * gh_n * r * (1.0 - r);
    const double d_az = dh_i * (h_prev[i] - n) * z * (1.0 - z);
    d_gi[i] = d_ar;
    d_gi[H + i] = d_az;
    d_gi[2 * H + i] = d_an;
    d_gh[i] = d_ar;
    d_gh[H + i] = d_az;
    d_gh[2 * H + i] = d_an * r;
    dh[i] = dh_i * z;
  }
}

}  // namespace gru
}  // namespace skelfast
