// skelfast::time_transform on the CPU: a small matrix applied along the time axis of a skeleton
// tensor, moving the time axis out to the front or back into place on the way.
//
// The temporal convolution of skelfast.ops.temporal_conv runs in a transformed basis (a real form of
// the DFT): points = A x along time, one channel GEMM per point, y = B points. These two transforms
// are the memory passes of that scheme; each (n, c) block is a (R x S) @ (S x V) product with V the
// joints, read and written once, so the pass costs about what a copy of the larger side costs.
//   to_points:   src (N, C, S, V) -> dst (R, C, N, V), dst[r, c, n, v] = sum_s M[r, s] src[n, c, s, v]
//   from_points: src (S, C, N, V) -> dst (N, C, R, V), dst[n, c, r, v] = sum_s M[r, s] src[s, c, n, v]
//                (+ bias[c])
// One is the other's adjoint with M transposed, which is how the autograd formula uses them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../cpu_isa.h"

namespace skelfast {
namespace {

// out rows [r0, r0 + kRows), columns [j, j + kChunks * lanes) of out = M @ in + add: kRows x kChunks
// vector sums stay in registers while the S source rows stream through once (a fixed count: a
// runtime one put them on the stack). Sums run over s in order; the AVX2 and AVX-512 forms contract
// them to FMA (a quarter less time for the whole pass), so the forms agree to rounding, not in bits.
template <typename scalar_t, int kBytes, int kRows, int kChunks>
__attribute__((always_inline)) inline void tile_sums(const scalar_t* M, int64_t r0, int64_t S, const scalar_t* in,
                                                    int64_t VP, int64_t j, int64_t V, scalar_t* out,
                                                    int64_t out_stride, scalar_t add) {
  typedef scalar_t vec __attribute__((vector_size(kBytes)));
  constexpr int64_t kLanes = kBytes / sizeof(scalar_t);
  vec acc[kRows][kChunks] = {};
  for (int64_t s = 0; s < S; ++s) {
    vec x[kChunks];
    for (int k = 0; k < kChunks; ++k) std::memcpy(&x[k], in + s * VP + j + k * kLanes, sizeof(vec));
    for (int i = 0; i < kRows; ++i) {
      const vec m = M[(r0 + i) * S + s] - vec{};  // a broadcast (x - 0 is x for every x; x + 0 is not)
      for (int k = 0; k < kChunks; ++k) acc[i][k] += m * x[k];
    }
  }
  for (int i = 0; i < kRows; ++i)
    for (int k = 0; k < kChunks; ++k) {
      // stored through a copy: indexing acc itself would keep the sums on the stack in the loop above
      const vec result = acc[i][k] + add;
      const int64_t column = j + k * kLanes;
      scalar_t* row = out + (r0 + i) * out_stride + column;
      if (column + kLanes <= V) {
        std::memcpy(row, &result, sizeof(vec));  // a fixed size: one vector store, not a call
      } else {
        scalar_t lanes[kLanes];
        std::memcpy(lanes, &result, sizeof(vec));
        for (int64_t l = 0; l < V - column; ++l) row[l] = lanes[l];
      }
    }
}

// out (R x V, row stride out_stride) = M (R x S) @ in (S x V, in a local buffer padded to VP columns)
// + add, in tiles of kRows x 2 vectors (16 registers with AVX-512, 8 with the narrower forms).
template <typename scalar_t, int kBytes, int kRows>
__attribute__((always_inline)) inline void block_product(const scalar_t* M, int64_t R, int64_t S, const scalar_t* in,
                                                        int64_t VP, int64_t V, scalar_t* out, int64_t out_stride,
                                                        scalar_t add) {
  constexpr int64_t kLanes = kBytes / sizeof(scalar_t);
  int64_t j = 0;
  for (; j < V; j += 2 * kLanes) {
    if (j + kLanes >= V) break;  // one chunk left
    int64_t r = 0;
    for (; r + kRows <= R; r += kRows)
      tile_sums<scalar_t, kBytes, kRows, 2>(M, r, S, in, VP, j, V, out, out_stride, add);
    for (; r < R; ++r) tile_sums<scalar_t, kBytes, 1, 2>(M, r, S, in, VP, j, V, out, out_stride, add);
  }
  if (j < V) {
    int64_t r = 0;
    for (; r + kRows <= R; r += kRows)
      tile_sums<scalar_t, kBytes, kRows, 1>(M, r, S, in, VP, j, V, out, out_stride, add);
    for (; r < R; ++r) tile_sums<scalar_t, kBytes, 1, 1>(M, r, S, in, VP, j, V, out, out_stride, add);
  }
}

struct Geometry {
  int64_t N, C, S, R, V, VP;
  bool to_points;
  // offsets of source row s and result row r of block (n, c)
  int64_t in_row(int64_t n, int64_t c, int64_t s) const {
    return to_points ? ((n * C + c) * S + s) * V : ((s * C + c) * N + n) * V;
  }
  int64_t out_row(int64_t n, int64_t c, int64_t r) const {
    return to_points ? ((r * C + c) * N + n) * V : ((n * C + c) * R + r) * V;
  }
  int64_t out_stride() const { return to_points ? C * N * V : V; }
};

// Blocks [b0, b1) in (c, n) order: consecutive blocks touch neighbouring V-runs of the strided side.
template <typename scalar_t, int kBytes, int kRows>
__attribute__((always_inline)) inline void transform_blocks(const scalar_t* src, scalar_t* dst, const scalar_t* M,
                                                           const scalar_t* bias, const Geometry& g, int64_t b0,
                                                           int64_t b1) {
  std::vector<scalar_t> buffer(g.S * g.VP, scalar_t(0));  // the block's rows, zero past V
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t c = b / g.N, n = b % g.N;
    for (int64_t s = 0; s < g.S; ++s)
      std::memcpy(buffer.data() + s * g.VP, src + g.in_row(n, c, s), g.V * sizeof(scalar_t));
    block_product<scalar_t, kBytes, kRows>(M, g.R, g.S, buffer.data(), g.VP, g.V, dst + g.out_row(n, c, 0),
                                           g.out_stride(), bias == nullptr ? scalar_t(0) : bias[c]);
  }
}

#ifdef SKELFAST_GCC_X86_FORMS
template <typename scalar_t>
__attribute__((target("avx512f,fma"))) void blocks_avx512(
    const scalar_t* src, scalar_t* dst, const scalar_t* M, const scalar_t* bias, const Geometry& g, int64_t b0,
    int64_t b1) {
  transform_blocks<scalar_t, 64, 8>(src, dst, M, bias, g, b0, b1);
}

template <typename scalar_t>
__attribute__((target("avx2,fma"))) void blocks_avx2(const scalar_t* src, scalar_t* dst, const scalar_t* M,
                                                     const scalar_t* bias, const Geometry& g, int64_t b0, int64_t b1) {
  transform_blocks<scalar_t, 32, 4>(src, dst, M, bias, g, b0, b1);
}
#endif

template <typename scalar_t>
void blocks_baseline(const scalar_t* src, scalar_t* dst, const scalar_t* M, const scalar_t* bias, const Geometry& g,
                     int64_t b0, int64_t b1) {
  transform_blocks<scalar_t, 16, 4>(src, dst, M, bias, g, b0, b1);
}

// The widest form's lanes (VP pads V to a multiple of them; narrower forms divide it).
int64_t padded_joints(int64_t V, size_t scalar_bytes) {
  const int64_t lanes = 64 / static_cast<int64_t>(scalar_bytes);
  return (V + lanes - 1) / lanes * lanes;
}

at::Tensor time_transform_cpu(const at::Tensor& src, const at::Tensor& matrix, const std::optional<at::Tensor>& bias,
                              bool to_points) {
  TORCH_CHECK(src.dim() == 4, "time_transform: src must be 4-D, got ", src.sizes());
  TORCH_CHECK(matrix.dim() == 2, "time_transform: matrix must be (R, S), got ", matrix.sizes());
  TORCH_CHECK(src.device().is_cpu() && matrix.device().is_cpu(), "time_transform (cpp CPU kernel): CPU tensors only");
  TORCH_CHECK(src.scalar_type() == at::kFloat || src.scalar_type() == at::kDouble,
              "time_transform: float32 or float64 src, got ", src.scalar_type());
  TORCH_CHECK(matrix.scalar_type() == src.scalar_type(), "time_transform: matrix dtype ", matrix.scalar_type(),
              " differs from src dtype ", src.scalar_type());
  const at::Tensor x = src.contiguous(), M = matrix.contiguous();
  const int64_t R = M.size(0), S = M.size(1);
  const int64_t N = to_points ? x.size(0) : x.size(2), C = x.size(1), V = x.size(3);
  TORCH_CHECK((to_points ? x.size(2) : x.size(0)) == S, "time_transform: matrix has ", S,
              " columns but src has ", to_points ? x.size(2) : x.size(0), " time rows (shape ", x.sizes(), ")");
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(!to_points, "time_transform: bias is added only on the way back (to_points=False)");
    b = bias->contiguous();
    TORCH_CHECK(b.dim() == 1 && b.size(0) == C && b.scalar_type() == x.scalar_type() && b.device().is_cpu(),
                "time_transform: bias must be a (", C, ",) CPU tensor of src's dtype, got ", b.sizes());
  }
  at::Tensor out = to_points ? at::empty({R, C, N, V}, x.options()) : at::empty({N, C, R, V}, x.options());
  if (out.numel() == 0) return out;
  if (S == 0) return b.defined() ? out.copy_(b.view({1, C, 1, 1}).expand_as(out)) : out.zero_();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "time_transform_cpu", [&] {
    const Geometry g{N, C, S, R, V, padded_joints(V, sizeof(scalar_t)), to_points};
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* m = M.const_data_ptr<scalar_t>();
    const scalar_t* add = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // about 64 KFLOP a block: a grain of 16 blocks keeps the task overhead small
    at::parallel_for(0, N * C, 16, [&](int64_t b0, int64_t b1) {
#ifdef SKELFAST_GCC_X86_FORMS
      const int form = cpu_isa_level();
      if (form == 2) return blocks_avx512<scalar_t>(in, o, m, add, g, b0, b1);
      if (form == 1) return blocks_avx2<scalar_t>(in, o, m, add, g, b0, b1);
#endif
      blocks_baseline<scalar_t>(in, o, m, add, g, b0, b1);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) { m.impl("time_transform", &time_transform_cpu); }

}  // namespace skelfast
