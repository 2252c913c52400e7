#pragma once
// Which instruction-set form of the multiversioned CPU loops runs: the widest the CPU has, capped by
// SKELFAST_CPU_ISA=baseline|avx2 (read once; the tests run each form in a child process and
// compare). Levels: 0 baseline (SSE2 on x86-64), 1 AVX2, 2 AVX-512 (F, BW, VL, DQ).
#include <algorithm>
#include <cstdlib>
#include <cstring>

// Where GCC's per-function target attributes build the AVX2 and AVX-512 forms of a loop (GCC on
// x86-64, unless -DSKELFAST_NO_AVX2): the augmentation blur uses it; elsewhere
// only the baseline form is compiled and cpu_isa_level() is 0.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SKELFAST_NO_AVX2)
#define SKELFAST_GCC_X86_FORMS 1
#endif

namespace skelfast {

inline int cpu_isa_level() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const int level = [] {
    const char* isa = std::getenv("SKELFAST_CPU_ISA");
    const int cap = isa == nullptr                       ? 2
                    : std::strcmp(isa, "baseline") == 0  ? 0
                    : std::strcmp(isa, "avx2") == 0      ? 1
                                                         : 2;
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const int best = avx512 ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    return std::min(cap, best);
  }();
  return level;
#else
  return 0;
#endif
}

}  // namespace skelfast
