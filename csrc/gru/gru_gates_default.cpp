// The GRU gate loops for the baseline instruction set, and the float64 rows (libm).
#include "gru_gates.h"

#define SKELFAST_GRU_SUFFIX default
#include "gru_gates_impl.h"

namespace skelfast {
namespace gru {

void forward_row_f64(int64_t H, const double* gi, const double* gh, const double* b_hh, double* h, double* out,
                     double* saved) {
  forward_row<double>(H, gi, gh, b_hh, h, out, saved);
}

void backward_row_f64(int64_t H, double* dh, const double* grad_out, const double* saved, const double* h_prev,
                      double* d_gi, double* d_gh) {
  backward_row<double>(H, dh, grad_out, saved, h_prev, d_gi, d_gh);
}

}  // namespace gru
}  // namespace skelfast
