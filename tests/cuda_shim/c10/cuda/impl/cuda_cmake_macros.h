// Compile-check shim: a CPU-only torch ships c10/cuda headers but not this generated one
// (spec/feasibility.md §5). Copied from upstream's cuda_cmake_macros.h.in for CUDA 13.0.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
#define TORCH_CUDA_VERSION_MAJOR 13
#define TORCH_CUDA_VERSION_MINOR 0
#define TORCH_CUDA_VERSION_PATCH 0
#define TORCH_CUDA_VERSION_BUILD 0
