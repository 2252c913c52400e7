// The batch_norm_act row loops compiled for AVX2 (8 floats a register), called only on CPUs that
// report it. The standard headers come before the target pragma so that no inline library function
// is emitted with AVX2 code; no FMA, so the results are the baseline form's bits.
#include <cstdint>
#include <vector>

#include "batch_norm_rows.h"

#ifdef SKELFAST_BN_X86
#pragma GCC push_options
#pragma GCC target("avx2")
#pragma GCC optimize("fp-contract=off")
#define SKELFAST_BN_ISA isa_avx2
#include "batch_norm_rows_impl.h"
#pragma GCC pop_options

namespace skelfast {
namespace bn {

RowKernels<float> kernels_avx2_f32() { return isa_avx2::kernels<float>(); }
RowKernels<double> kernels_avx2_f64() { return isa_avx2::kernels<double>(); }

}  // namespace bn
}  // namespace skelfast
#else
namespace skelfast {
namespace bn {

RowKernels<float> kernels_avx2_f32() { return kernels_default_f32(); }
RowKernels<double> kernels_avx2_f64() { return kernels_default_f64(); }

}  // namespace bn
}  // namespace skelfast
#endif  // SKELFAST_BN_X86
