#pragma once
// Row-major GEMM on raw pointers for the CPU kernels (graph convolution, GRU, time transform), and
// a GEMM whose one operand is packed once and reused (the GRU's recurrent weight).
//
// The graph convolution issues about a dozen small GEMMs per sample; through ATen each costs
// several microseconds of dispatch and view bookkeeping, which at HiCLR's 16-channel widths is as
// much as the arithmetic. When the BLAS that torch links exports the Fortran sgemm_/dgemm_ (MKL
// in the x86 wheels) they are called directly; otherwise at::mm on views of the same memory.
#include <ATen/ATen.h>

#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

extern "C" {
// Weak: resolved against libtorch's BLAS if it exports them, null otherwise.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));

// MKL's packed-operand GEMM (CBLAS enums passed as their int values), weak as above.
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
size_t cblas_dgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src, int ld,
                      float* dest) __attribute__((weak));
void cblas_dgemm_pack(int layout, int identifier, int trans, int m, int n, int k, double alpha, const double* src,
                      int ld, double* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
void cblas_dgemm_compute(int layout, int transa, int transb, int m, int n, int k, const double* a, int lda,
                         const double* b, int ldb, double beta, double* c, int ldc) __attribute__((weak));
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

// One operand, op(B) (K x N), multiplied by many different A (M x K) in turn: a recurrent weight
// applied at every step, for instance. sgemm repacks B into its blocked layout on every call, which
// for a (64 x 1024) @ (1024 x 3072) step is a third of the call; MKL's pack/compute API packs it once
// (1.3-1.8x per call at M = 32-128 on AVX-512). MKL's pack call takes M and documents the packed
// buffer for that M, so B is repacked when M changes (ragged sequences shrink M as samples end; the
// MKL in torch's wheel gave the same results without repacking, which this does not rely on).
// Without MKL, or with SKELFAST_CPU_BLAS=aten, multiply() is gemm().
template <typename scalar_t>
class PackedOperand {
 public:
  // op(B) = B (K x N) stored row-major at ldb, or with trans_b B^T where B is stored (N x K)
  PackedOperand(bool trans_b, int64_t N, int64_t K, const scalar_t* B, int64_t ldb)
      : trans_b_(trans_b), N_(N), K_(K), B_(B), ldb_(ldb) {}

  // C (M x N) = A (M x K, row-major at lda) @ op(B) + (accumulate ? C : 0)
  void multiply(int64_t M, const scalar_t* A, int64_t lda, scalar_t* C, int64_t ldc, bool accumulate) {
    if (M == 0 || N_ == 0) return;
    if (!available() || !fits(M, lda, ldc)) {
      gemm(false, trans_b_, M, N_, K_, A, lda, B_, ldb_, C, ldc, accumulate);
      return;
    }
    if (M != packed_rows_) pack(M);
    const auto m = static_cast<int>(M), n = static_cast<int>(N_), k = static_cast<int>(K_);
    const scalar_t beta = accumulate ? scalar_t(1) : scalar_t(0);
    if constexpr (std::is_same_v<scalar_t, float>) {
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m, n, k, A, static_cast<int>(lda), packed_.get(),
                          static_cast<int>(ldb_), beta, C, static_cast<int>(ldc));
    } else {
      cblas_dgemm_compute(kRowMajor, kNoTrans, kPacked, m, n, k, A, static_cast<int>(lda), packed_.get(),
                          static_cast<int>(ldb_), beta, C, static_cast<int>(ldc));
    }
  }

 private:
  // CblasRowMajor, CblasNoTrans, CblasTrans, CblasPacked and CblasBMatrix of mkl_cblas.h
  static constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

  static bool available() {
    if (!fortran_blas_allowed()) return false;
    if constexpr (std::is_same_v<scalar_t, float>) {
      return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr && cblas_sgemm_compute != nullptr;
    } else {
      return cblas_dgemm_pack_get_size != nullptr && cblas_dgemm_pack != nullptr && cblas_dgemm_compute != nullptr;
    }
  }

  bool fits(int64_t M, int64_t lda, int64_t ldc) const {
    return K_ > 0 && M < INT_MAX && N_ < INT_MAX && K_ < INT_MAX && lda < INT_MAX && ldb_ < INT_MAX && ldc < INT_MAX;
  }

  void pack(int64_t M) {
    const auto m = static_cast<int>(M), n = static_cast<int>(N_), k = static_cast<int>(K_);
    const int trans = trans_b_ ? kTrans : kNoTrans;
    size_t bytes;
    if constexpr (std::is_same_v<scalar_t, float>) {
      bytes = cblas_sgemm_pack_get_size(kBMatrix, m, n, k);
    } else {
      bytes = cblas_dgemm_pack_get_size(kBMatrix, m, n, k);
    }
    if (bytes > capacity_) {  // MKL requires the buffer to stay where it was packed: reallocate, never copy
      packed_.reset(new scalar_t[bytes / sizeof(scalar_t) + 1]);
      capacity_ = bytes;
    }
    if constexpr (std::is_same_v<scalar_t, float>) {
      cblas_sgemm_pack(kRowMajor, kBMatrix, trans, m, n, k, 1.0f, B_, static_cast<int>(ldb_), packed_.get());
    } else {
      cblas_dgemm_pack(kRowMajor, kBMatrix, trans, m, n, k, 1.0, B_, static_cast<int>(ldb_), packed_.get());
    }
    packed_rows_ = M;
  }

  bool trans_b_;
  int64_t N_, K_;
  const scalar_t* B_;
  int64_t ldb_;
  int64_t packed_rows_ = -1;
  size_t capacity_ = 0;
  std::unique_ptr<scalar_t[]> packed_;
};

}  // namespace skelfast::cpu
