// skelfast::time_transform on the CPU: a small matrix applied along the time axis of a skeleton
// tensor, moving the time axis out to the front or back into place on the way.
//
// The temporal convolution of skelfast.ops.temporal_conv runs in a transformed basis (a real form of
// the DFT): points = A x along time, one channel GEMM per point, y = B points. These two transforms
// are the passes along time of that scheme:
//   to_points:   src (N, C, S, V) -> dst (R, C, N, V), dst[r, c, n, v] = sum_s M[r, s] src[n, c, s, v]
//   from_points: src (S, C, N, V) -> dst (N, C, R, V), dst[n, c, r, v] = sum_s M[r, s] src[s, c, n, v]
//                (+ bias[c])
// One is the other's adjoint with M transposed, which is how the autograd formula uses them.
//
// Each task is one channel c and a group of kGroup consecutive samples, whose V-runs lie side by side
// on the points side ((c, n .. n + kGroup) is one contiguous run of kGroup V values in every row):
// there the group is an (S x kGroup V) matrix read or written in place with row stride C N V, so the
// whole task is one GEMM M (R x S) @ (S x kGroup V) (blas_cpu.h: MKL where torch links it), and only
// the (N, C, time, V) side goes through a cache-resident buffer, gathered before or scattered after.
// The earlier form (a register-tiled product per (n, c) block, writing R rows of V values at a time
// into the R planes of the points side) ran at 2-7 GB/s against ~25 GB/s for a copy: the R rows of a
// block sit C N V values apart, which on these shapes map to a few cache sets. This form measured
// 1.5-6x faster (64 channels, T = 64: 59 -> 13 ms to the points, 24 -> 12 ms back).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../blas_cpu.h"

namespace skelfast {
namespace {

// Samples per task: 16 x 25 joints = 400 values a row, 25 full AVX-512 vectors; the buffer (S or R
// rows of them) stays in L2.
constexpr int64_t kGroup = 16;

struct Geometry {
  int64_t N, C, S, R, V;
  bool to_points;
  int64_t groups() const { return (N + kGroup - 1) / kGroup; }
  int64_t plane() const { return C * N * V; }  // row stride of the points side
};

// Tasks [t0, t1), task = c * groups + group: dst = M @ src for those samples of channel c.
template <typename scalar_t>
void transform_tasks(const scalar_t* src, scalar_t* dst, const scalar_t* M, const scalar_t* bias, const Geometry& g,
                     int64_t t0, int64_t t1) {
  const int64_t V = g.V;
  std::vector<scalar_t> buffer((g.to_points ? g.S : g.R) * kGroup * V);
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t c = task / g.groups(), n0 = task % g.groups() * kGroup, n1 = std::min(g.N, n0 + kGroup);
    const int64_t cols = (n1 - n0) * V;
    if (g.to_points) {
      // buffer (S x cols): sample n's (S x V) block in columns (n - n0) V ...
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t s = 0; s < g.S; ++s)
          std::memcpy(buffer.data() + s * cols + (n - n0) * V, src + ((n * g.C + c) * g.S + s) * V, V * sizeof(scalar_t));
      cpu::gemm(false, false, g.R, cols, g.S, M, g.S, buffer.data(), cols, dst + (c * g.N + n0) * V, g.plane(), false);
    } else {
      cpu::gemm(false, false, g.R, cols, g.S, M, g.S, src + (c * g.N + n0) * V, g.plane(), buffer.data(), cols, false);
      const scalar_t add = bias == nullptr ? scalar_t(0) : bias[c];
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t r = 0; r < g.R; ++r) {
          const scalar_t* from = buffer.data() + r * cols + (n - n0) * V;
          scalar_t* to = dst + ((n * g.C + c) * g.R + r) * V;
          for (int64_t v = 0; v < V; ++v) to[v] = from[v] + add;
        }
    }
  }
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
    const Geometry g{N, C, S, R, V, to_points};
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* m = M.const_data_ptr<scalar_t>();
    const scalar_t* add = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // a task is 0.1-3 MFLOP: one task per grain
    at::parallel_for(0, C * g.groups(), 1,
                     [&](int64_t t0, int64_t t1) { transform_tasks<scalar_t>(in, o, m, add, g, t0, t1); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) { m.impl("time_transform", &time_transform_cpu); }

}  // namespace skelfast
