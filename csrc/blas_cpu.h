#pragma once
// Row-major GEMM on raw pointers for the CPU kernels (graph convolution, GRU, time transform).
//
// The graph convolution issues about a dozen small GEMMs per sample; through ATen each costs
// several microseconds of dispatch and view bookkeeping, which at HiCLR's 16-channel widths is as
// much as the arithmetic. When the BLAS that torch links exports the Fortran sgemm_/dgemm_ (MKL
// in the x86 wheels) they are called directly; otherwise at::mm on views of the same memory.
#include <ATen/ATen.h>

#include <climits>
#include <cstdlib>
#include <cstring>

extern "C" {
// Weak: resolved against libtorch's BLAS if it exports them, null otherwise.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace skelfast::cpu {

// SKELFAST_CPU_BLAS=aten forces the at::mm path (tests use it to cover the fallback).
inline bool fortran_blas_allowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("SKELFAST_CPU_BLAS");
    return env == nullptr || std::strcmp(env, "aten") != 0;
  }();
  return allowed;
}

template <typename scalar_t>
inline bool fortran_blas_call(char ta, char tb, int m, int n, int k, scalar_t alpha, const scalar_t* a, int lda,
                              const scalar_t* b, int ldb, scalar_t beta, scalar_t* c, int ldc) {
  if (!fortran_blas_allowed()) return false;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (sgemm_ == nullptr) return false;
    sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
    return true;
  } else {
    if (dgemm_ == nullptr) return false;
    dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
    return true;
  }
}

// C (M x N) = op(A) @ op(B) + (accumulate ? C : 0), all row-major; op transposes when trans_* is
// true, with A stored (M x K) or (K x M) and B stored (K x N) or (N x K) at the given leading dims.
template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda,
          const scalar_t* B, int64_t ldb, scalar_t* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  const bool fits = M < INT_MAX && N < INT_MAX && K < INT_MAX && lda < INT_MAX && ldb < INT_MAX && ldc < INT_MAX;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  if (K > 0 && fits &&
      fortran_blas_call<scalar_t>(trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', static_cast<int>(N),
                                  static_cast<int>(M), static_cast<int>(K), scalar_t(1), B, static_cast<int>(ldb),
                                  A, static_cast<int>(lda), accumulate ? scalar_t(1) : scalar_t(0), C,
                                  static_cast<int>(ldc))) {
    return;
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto view = [&](const scalar_t* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<scalar_t*>(p), {trans ? cols : rows, trans ? rows : cols}, {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  const at::Tensor a = view(A, M, K, lda, trans_a), b = view(B, K, N, ldb, trans_b);
  if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

}  // namespace skelfast::cpu
