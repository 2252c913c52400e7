// The batch_norm_act row loops for the baseline instruction set (SSE2 on x86-64).
#include <cstdint>
#include <vector>

#include "batch_norm_rows.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // the same roundings as the other forms on any target
#endif
#define SKELFAST_BN_ISA isa_default
#include "batch_norm_rows_impl.h"

namespace skelfast {
namespace bn {

RowKernels<float> kernels_default_f32() { return isa_default::kernels<float>(); }
RowKernels<double> kernels_default_f64() { return isa_default::kernels<double>(); }

}  // namespace bn
}  // namespace skelfast
