// CPU kernels of skelfast::gru_layer: one direction of one GRU layer over zero-padded sequences of
// different lengths, with PyTorch's packed-sequence semantics (sample b reads frames 0 .. len_b - 1,
// forwards or, with `reverse`, backwards; its output is zero past len_b and its final state is the
// one after frame len_b - 1 (or 0)).
//
// Samples are sorted by length, longest first, so the samples still running at step s are the first
// batch_sizes[s] rows of a (B, H) state: each step is one GEMM over those rows (h W_hh^T, W_hh packed
// once per call: cpu::PackedOperand) and one vectorised pass over their gates (gru_gates_*.cpp). Everything that does not recur is batched over
// all P = sum(len) packed rows: the input projection x W_ih^T forward; d(gi) W_ih, d(gi)^T x and
// d(gh)^T h_prev backward (three GEMMs instead of one per step). PyTorch's CPU GRU instead runs each
// step as a dozen ATen ops and its backward through autograd, one weight-gradient GEMM per step.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "../blas_cpu.h"
#include "gru_gates.h"

namespace skelfast {
namespace {

using at::Tensor;
using cpu::gemm;

// A std::vector that leaves its elements uninitialised: every work buffer below is written whole
// before it is read, and zero-filling them first cost as much as a gate pass.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <typename T>
using Buffer = std::vector<T, UninitAllocator<T>>;

// Which samples run at each step, and where their rows sit in the packed (P, *) buffers.
struct Packing {
  int64_t B = 0, T = 0, steps = 0, P = 0;
  bool reverse = false;
  std::vector<int64_t> length;       // per sample
  std::vector<int64_t> order;        // order[j]: the sample at sorted row j (longest first, stable)
  std::vector<int64_t> batch_sizes;  // samples still running at step s
  std::vector<int64_t> offset;       // first packed row of step s; offset[steps] = P

  Packing(const Tensor& lengths, int64_t T_, bool reverse_) : B(lengths.size(0)), T(T_), reverse(reverse_) {
    const Tensor len64 = lengths.to(at::kLong).contiguous();
    const int64_t* len = len64.const_data_ptr<int64_t>();
    length.assign(len, len + B);
    order.resize(B);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return length[a] > length[b]; });
    steps = B > 0 ? length[order[0]] : 0;
    batch_sizes.assign(steps, 0);
    offset.assign(steps + 1, 0);
    for (int64_t j = 0; j < B; ++j)
      for (int64_t s = 0; s < length[order[j]]; ++s) ++batch_sizes[s];
    for (int64_t s = 0; s < steps; ++s) offset[s + 1] = offset[s] + batch_sizes[s];
    P = offset[steps];
  }

  // The frame sample b reads at step s.
  int64_t frame(int64_t b, int64_t s) const { return reverse ? length[b] - 1 - s : s; }
};

void check_inputs(const Tensor& x, const Tensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                  const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  TORCH_CHECK(x.dim() == 3, "gru_layer: x must be (B, T, I), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "gru_layer (cpp CPU kernel): x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gru_layer (cpp CPU kernel): supports float32 and float64, got ", x.scalar_type());
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2);
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % 3 == 0 && w_hh.size(0) == 3 * w_hh.size(1),
              "gru_layer: w_hh must be (3H, H), got ", w_hh.sizes());
  const int64_t H = w_hh.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 3 * H && w_ih.size(1) == I, "gru_layer: w_ih must be (3H, I) = (",
              3 * H, ", ", I, "), got ", w_ih.sizes());
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, "gru_layer: h0 must be (B, H) = (", B, ", ", H,
              "), got ", h0.sizes());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, "gru_layer: lengths must be (B,) = (", B, ",), got ",
              lengths.sizes());
  TORCH_CHECK(lengths.device().is_cpu() && !lengths.is_floating_point(),
              "gru_layer: lengths must be an integer CPU tensor");
  for (const auto* t : {&h0, &w_ih, &w_hh}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "gru_layer: x, h0, w_ih and w_hh must share one dtype and device");
  }
  for (const auto* b : {&b_ih, &b_hh}) {
    if (!b->has_value()) continue;
    TORCH_CHECK((*b)->dim() == 1 && (*b)->size(0) == 3 * H, "gru_layer: biases must be (3H,) = (", 3 * H,
                ",), got ", (*b)->sizes());
    TORCH_CHECK((*b)->scalar_type() == x.scalar_type() && (*b)->device() == x.device(),
                "gru_layer: biases must match x in dtype and device");
  }
  if (B > 0) {
    const Tensor len = lengths.to(at::kLong);
    const int64_t lo = len.min().item<int64_t>(), hi = len.max().item<int64_t>();
    TORCH_CHECK(lo >= 1 && hi <= T, "gru_layer: lengths must be in [1, T=", T, "], got values in [", lo, ", ", hi,
                "]");
  }
}

// The gate rows of one dtype: float32 picks the AVX2 build when the CPU has it.
template <typename scalar_t>
struct Rows;

template <>
struct Rows<double> {
  static constexpr auto forward = gru::forward_row_f64;
  static constexpr auto backward = gru::backward_row_f64;
};

// The AVX2 build runs where the CPU has AVX2 and FMA, unless SKELFAST_CPU_ISA=baseline asks for the
// baseline build (the tests run both).
bool use_avx2_rows() {
#ifdef SKELFAST_GRU_AVX2
  static const bool avx2 = [] {
    const char* isa = std::getenv("SKELFAST_CPU_ISA");
    const bool baseline = isa != nullptr && std::strcmp(isa, "baseline") == 0;
    return !baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return avx2;
#else
  return false;
#endif
}

template <>
struct Rows<float> {
#ifdef SKELFAST_GRU_AVX2
  static inline const gru::ForwardRowF32 forward =
      use_avx2_rows() ? gru::forward_row_f32_avx2 : gru::forward_row_f32_default;
  static inline const gru::BackwardRowF32 backward =
      use_avx2_rows() ? gru::backward_row_f32_avx2 : gru::backward_row_f32_default;
#else
  static inline const gru::ForwardRowF32 forward = gru::forward_row_f32_default;
  static inline const gru::BackwardRowF32 backward = gru::backward_row_f32_default;
#endif
};

// Rows [0, n) in parallel chunks of at least `grain` elements' worth of work.
template <typename Fn>
void for_rows(int64_t n, int64_t H, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(H, 1));
  at::parallel_for(0, n, grain, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) fn(j);
  });
}

// Each packed row's frame of a padded (B, T, D) tensor: copied into a (P, D) buffer (gather), or a
// (P, D) buffer copied back to the frames (scatter).
template <typename Fn>
void for_packed_rows(const Packing& pk, const Fn& fn) {
  at::parallel_for(0, pk.steps, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      for (int64_t j = 0; j < pk.batch_sizes[s]; ++j) {
        const int64_t b = pk.order[j];
        fn(b * pk.T + pk.frame(b, s), pk.offset[s] + j);
      }
    }
  });
}

template <typename scalar_t>
Buffer<scalar_t> gather_packed(const Packing& pk, int64_t D, const scalar_t* padded) {
  Buffer<scalar_t> packed(pk.P * D);
  for_packed_rows(pk, [&](int64_t frame, int64_t p) { std::copy_n(padded + frame * D, D, &packed[p * D]); });
  return packed;
}

template <typename scalar_t>
void scatter_packed(const Packing& pk, int64_t D, const Buffer<scalar_t>& packed, scalar_t* padded) {
  for_packed_rows(pk, [&](int64_t frame, int64_t p) { std::copy_n(&packed[p * D], D, padded + frame * D); });
}

// Zero the frames t >= len_b of a padded (B, T, D) tensor: the kernels write every valid frame, so
// only the padding needs it (a whole-tensor zero fill cost as much as a gate pass).
template <typename scalar_t>
void zero_padding(const Packing& pk, int64_t D, scalar_t* padded) {
  for (int64_t b = 0; b < pk.B; ++b)
    std::fill_n(padded + (b * pk.T + pk.length[b]) * D, (pk.T - pk.length[b]) * D, scalar_t(0));
}

// Rows of a per-sample (B, D) array into sorted order (dst[j] = src[order[j]]) for the first `rows`
// sorted rows, and back (dst[order[j]] = src[j]).
template <typename scalar_t>
void to_sorted(const Packing& pk, int64_t rows, int64_t D, const scalar_t* src, scalar_t* dst) {
  for (int64_t j = 0; j < rows; ++j) std::copy_n(src + pk.order[j] * D, D, dst + j * D);
}

template <typename scalar_t>
void from_sorted(const Packing& pk, int64_t D, const scalar_t* src, scalar_t* dst) {
  for (int64_t j = 0; j < pk.B; ++j) std::copy_n(src + j * D, D, dst + pk.order[j] * D);
}

// Per-thread column sums of the gate-gradient rows, added while each row is still in cache (a sum
// over the (P, 3H) buffers afterwards read 2 x 50 MB again per ISC cell: 34 ms of its GRU's 3.8 s).
// Each thread owns one slot; at::parallel_for splits a step's rows the same way for the same thread
// count, so the sums are deterministic.
template <typename scalar_t>
struct BiasGradients {
  int64_t G;
  std::vector<scalar_t> slots;  // per thread: d(b_ih) (G) then d(b_hh) (G)

  BiasGradients(bool wanted, int64_t G_) : G(G_), slots(wanted ? at::get_num_threads() * 2 * G_ : 0, scalar_t(0)) {}

  void add(const scalar_t* d_gi_row, const scalar_t* d_gh_row) {
    if (slots.empty()) return;
    scalar_t* slot = slots.data() + at::get_thread_num() * 2 * G;
    for (int64_t i = 0; i < G; ++i) slot[i] += d_gi_row[i];
    for (int64_t i = 0; i < G; ++i) slot[G + i] += d_gh_row[i];
  }

  void write(scalar_t* db_ih, scalar_t* db_hh) const {
    std::fill_n(db_ih, G, scalar_t(0));
    std::fill_n(db_hh, G, scalar_t(0));
    for (size_t base = 0; base < slots.size(); base += 2 * G) {
      for (int64_t i = 0; i < G; ++i) db_ih[i] += slots[base + i];
      for (int64_t i = 0; i < G; ++i) db_hh[i] += slots[base + G + i];
    }
  }
};

template <typename scalar_t>
void forward_kernel(const Packing& pk, int64_t I, int64_t H, const scalar_t* x, const scalar_t* h0,
                    const scalar_t* w_ih, const scalar_t* w_hh, const scalar_t* b_ih, const scalar_t* b_hh,
                    scalar_t* out, scalar_t* h_n, scalar_t* saved) {
  const int64_t G = 3 * H;
  // gi = x W_ih^T + b_ih for every packed row at once.
  const Buffer<scalar_t> x_packed = gather_packed(pk, I, x);
  Buffer<scalar_t> gi(pk.P * G);
  gemm(false, true, pk.P, G, I, x_packed.data(), I, w_ih, I, gi.data(), G, false);
  if (b_ih != nullptr) {
    for_rows(pk.P, G, [&](int64_t p) {
      for (int64_t i = 0; i < G; ++i) gi[p * G + i] += b_ih[i];
    });
  }
  Buffer<scalar_t> h(pk.B * H), gh(pk.B * G);
  std::vector<scalar_t> zero_bias(b_hh == nullptr ? G : 0, scalar_t(0));
  const scalar_t* bias_hh = b_hh != nullptr ? b_hh : zero_bias.data();
  to_sorted(pk, pk.B, H, h0, h.data());
  const auto row = Rows<scalar_t>::forward;
  cpu::PackedOperand<scalar_t> w_hh_t(true, G, H, w_hh, H);  // W_hh^T, packed once for every step
  for (int64_t s = 0; s < pk.steps; ++s) {
    const int64_t bs = pk.batch_sizes[s];
    w_hh_t.multiply(bs, h.data(), H, gh.data(), G, false);  // gh = h W_hh^T
    for_rows(bs, H, [&](int64_t j) {
      const int64_t b = pk.order[j], t = pk.frame(b, s);
      row(H, &gi[(pk.offset[s] + j) * G], &gh[j * G], bias_hh, &h[j * H], out + (b * pk.T + t) * H,
          saved != nullptr ? saved + (b * pk.T + t) * 4 * H : nullptr);
    });
  }
  from_sorted(pk, H, h.data(), h_n);
}

template <typename scalar_t>
void backward_kernel(const Packing& pk, int64_t I, int64_t H, const scalar_t* grad_out, const scalar_t* grad_hn,
                     const scalar_t* x, const scalar_t* h0, const scalar_t* w_ih, const scalar_t* w_hh,
                     const scalar_t* out, const scalar_t* saved, std::array<bool, 4> need, scalar_t* dx,
                     scalar_t* dh0, scalar_t* dw_ih, scalar_t* dw_hh, scalar_t* db_ih, scalar_t* db_hh) {
  const int64_t G = 3 * H;
  Buffer<scalar_t> d_gi(pk.P * G), d_gh(pk.P * G), dh(pk.B * H);
  to_sorted(pk, pk.B, H, grad_hn, dh.data());
  const auto row = Rows<scalar_t>::backward;
  cpu::PackedOperand<scalar_t> w_hh_packed(false, H, G, w_hh, H);
  BiasGradients<scalar_t> bias_grads(need[3], G);
  for (int64_t s = pk.steps - 1; s >= 0; --s) {
    const int64_t bs = pk.batch_sizes[s];
    scalar_t* d_gh_step = &d_gh[pk.offset[s] * G];
    for_rows(bs, H, [&](int64_t j) {
      const int64_t b = pk.order[j], t = pk.frame(b, s);
      // h_prev: the state before this step (h0 at the first step, else the previous frame's output)
      const scalar_t* h_prev = s == 0 ? h0 + b * H : out + (b * pk.T + (pk.reverse ? t + 1 : t - 1)) * H;
      row(H, &dh[j * H], grad_out + (b * pk.T + t) * H, saved + (b * pk.T + t) * 4 * H, h_prev,
          &d_gi[(pk.offset[s] + j) * G], d_gh_step + j * G);
      bias_grads.add(&d_gi[(pk.offset[s] + j) * G], d_gh_step + j * G);
    });
    w_hh_packed.multiply(bs, d_gh_step, G, dh.data(), H, true);  // dh += d(gh) W_hh
  }
  if (need[1]) from_sorted(pk, H, dh.data(), dh0);
  if (need[0]) {  // dx = d(gi) W_ih, scattered back to the padded frames (the rest stay zero)
    Buffer<scalar_t> dx_packed(pk.P * I);
    gemm(false, false, pk.P, I, G, d_gi.data(), G, w_ih, I, dx_packed.data(), I, false);
    scatter_packed(pk, I, dx_packed, dx);
  }
  if (need[2]) {
    const Buffer<scalar_t> x_packed = gather_packed(pk, I, x), out_packed = gather_packed(pk, H, out);
    // packed row (s, j)'s previous state is packed row (s - 1, j) of the outputs, or h0 at s = 0
    Buffer<scalar_t> h_prev(pk.P * H);
    to_sorted(pk, pk.batch_sizes[0], H, h0, h_prev.data());
    for (int64_t s = 1; s < pk.steps; ++s) {
      std::copy(&out_packed[pk.offset[s - 1] * H], &out_packed[(pk.offset[s - 1] + pk.batch_sizes[s]) * H],
                &h_prev[pk.offset[s] * H]);
    }
    gemm(true, false, G, I, pk.P, d_gi.data(), G, x_packed.data(), I, dw_ih, I, false);    // d(gi)^T x
    gemm(true, false, G, H, pk.P, d_gh.data(), G, h_prev.data(), H, dw_hh, H, false);      // d(gh)^T h_prev
  }
  if (need[3]) bias_grads.write(db_ih, db_hh);
}

std::tuple<Tensor, Tensor, Tensor> gru_layer_cpu(const Tensor& x_in, const Tensor& lengths, const Tensor& h0_in,
                                                 const Tensor& w_ih_in, const Tensor& w_hh_in,
                                                 const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
                                                 bool reverse, bool save_gates) {
  check_inputs(x_in, lengths, h0_in, w_ih_in, w_hh_in, b_ih, b_hh);
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // autograd is registered in Python
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor bi = b_ih.has_value() ? b_ih->contiguous() : Tensor(), bh = b_hh.has_value() ? b_hh->contiguous() : Tensor();
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2), H = w_hh.size(1);
  Tensor out = at::empty({B, T, H}, x.options());
  Tensor h_n = h0.clone();
  Tensor saved = save_gates ? at::empty({B, T, 4 * H}, x.options()) : at::empty({0}, x.options());
  if (B == 0 || H == 0) return {out.zero_(), h_n, saved.zero_()};
  const Packing pk(lengths, T, reverse);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_layer_cpu", [&] {
    zero_padding(pk, H, out.mutable_data_ptr<scalar_t>());  // the output is zero past each length
    if (save_gates) zero_padding(pk, 4 * H, saved.mutable_data_ptr<scalar_t>());  // deterministic
    forward_kernel<scalar_t>(pk, I, H, x.const_data_ptr<scalar_t>(), h0.const_data_ptr<scalar_t>(),
                             w_ih.const_data_ptr<scalar_t>(), w_hh.const_data_ptr<scalar_t>(),
                             bi.defined() ? bi.const_data_ptr<scalar_t>() : nullptr,
                             bh.defined() ? bh.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(),
                             h_n.mutable_data_ptr<scalar_t>(), save_gates ? saved.mutable_data_ptr<scalar_t>() : nullptr);
  });
  return {out, h_n, saved};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward_cpu(
    const Tensor& grad_out_in, const Tensor& grad_hn_in, const Tensor& x_in, const Tensor& lengths,
    const Tensor& h0_in, const Tensor& w_ih_in, const Tensor& w_hh_in, const Tensor& out_in, const Tensor& saved_in,
    bool reverse, bool has_bias, std::array<bool, 4> mask) {
  check_inputs(x_in, lengths, h0_in, w_ih_in, w_hh_in, std::nullopt, std::nullopt);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2), H = w_hh.size(1);
  TORCH_CHECK(out_in.sizes() == at::IntArrayRef({B, T, H}) && saved_in.sizes() == at::IntArrayRef({B, T, 4 * H}),
              "gru_layer_backward: output must be (B, T, H) and the saved gates (B, T, 4H); got ", out_in.sizes(),
              " and ", saved_in.sizes(), " (was the forward run with save_gates=False?)");
  const Tensor out = out_in.contiguous(), saved = saved_in.contiguous();
  const Tensor grad_out = grad_out_in.to(x.scalar_type()).contiguous();
  const Tensor grad_hn = grad_hn_in.to(x.scalar_type()).contiguous();
  TORCH_CHECK(grad_out.sizes() == out.sizes() && grad_hn.sizes() == h0.sizes(),
              "gru_layer_backward: gradients must match the output (B, T, H) and h_n (B, H)");
  const auto opts = x.options();
  const bool need_bias = mask[3] && has_bias;
  Tensor dx = mask[0] ? at::empty_like(x) : at::empty({0}, opts);
  // all are written whole by the kernel, but for dx's padding frames (zeroed below)
  Tensor dh0 = mask[1] ? at::empty_like(h0) : at::empty({0}, opts);
  Tensor dw_ih = mask[2] ? at::empty_like(w_ih) : at::empty({0}, opts);
  Tensor dw_hh = mask[2] ? at::empty_like(w_hh) : at::empty({0}, opts);
  Tensor db_ih = need_bias ? at::empty({3 * H}, opts) : at::empty({0}, opts);
  Tensor db_hh = need_bias ? at::empty({3 * H}, opts) : at::empty({0}, opts);
  if (B == 0 || H == 0) return {dx.zero_(), dh0, dw_ih, dw_hh, db_ih, db_hh};
  const Packing pk(lengths, T, reverse);
  const std::array<bool, 4> need = {mask[0], mask[1], mask[2], need_bias};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_layer_backward_cpu", [&] {
    auto ptr = [](Tensor& t) { return t.numel() > 0 ? t.mutable_data_ptr<scalar_t>() : nullptr; };
    if (mask[0]) zero_padding(pk, I, dx.mutable_data_ptr<scalar_t>());
    backward_kernel<scalar_t>(pk, I, H, grad_out.const_data_ptr<scalar_t>(), grad_hn.const_data_ptr<scalar_t>(),
                              x.const_data_ptr<scalar_t>(), h0.const_data_ptr<scalar_t>(),
                              w_ih.const_data_ptr<scalar_t>(), w_hh.const_data_ptr<scalar_t>(),
                              out.const_data_ptr<scalar_t>(), saved.const_data_ptr<scalar_t>(), need, ptr(dx),
                              ptr(dh0), ptr(dw_ih), ptr(dw_hh), ptr(db_ih), ptr(db_hh));
  });
  return {dx, dh0, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelfast, CPU, m) {
  m.impl("gru_layer", &gru_layer_cpu);
  m.impl("gru_layer_backward", &gru_layer_backward_cpu);
}

}  // namespace skelfast
