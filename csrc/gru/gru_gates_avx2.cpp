// The GRU gate loops compiled for AVX2 + FMA (8 floats a lane); gru_cpu.cpp calls them only on CPUs
// that report AVX2 and FMA. The standard headers come before the target pragma so that no inline
// library function is emitted with AVX2 code in this file.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gru_gates.h"

#ifdef SKELFAST_GRU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SKELFAST_GRU_SUFFIX avx2
#include "gru_gates_impl.h"
#pragma GCC pop_options
#endif
