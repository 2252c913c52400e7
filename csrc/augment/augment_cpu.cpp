// CPU kernel of batched skeleton augmentation: skelfast::augment_cpu, the "cpp" backend of
// skelfast.ops.augment (which calls it from inside the skelfast::augment custom op).
//
// Per sample n, in the order of skelfast/augment/params.py:
//   1. y[c,t,v,m] = sum_d E_v[c,d] * ((1-w_t) x[d,i0_t,src_v,m] + w_t x[d,i1_t,src_v,m])
//                   + noise_std * z[c,t,v,m]
//      (temporal taps i0/i1/w from start/length/reverse/valid, joint map src and per-joint
//      matrix E_v = joint_matrix or matrix);
//      only the frames the taps name are read from x, through its strides;
//   2. temporal blur with the sample's taps (zero padded) where blur_on;
//   3. axis mask, stream (joint / bone / motion), joint mask with the fill value, written to out.
// Steps 1-2 go through two (C, T_out, V*M) buffers per thread, with zero rows around each channel
// for the blur (`Padded`; tens of KB: cache resident), so x is read once and the output written
// once. In the joint stream the output is written directly: by step 1 without the blur, by the
// blur's stencil with it (the padded buffer then holds step 1's rows). On
// AVX-512 CPUs, float32 rows of at most 64 values (NTU's 50) take step 1 a frame at a time in
// registers (frames_avx512); the generic loops run everything else. The noise is drawn here, per
// noisy sample, from the stream every backend shares (csrc/random/philox.h, key noise_seed + n);
// the blur's taps are made here from each sample's sigma.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../cpu_isa.h"
#include "../random/philox.h"

#if defined(__x86_64__)
#include <immintrin.h>  // the AVX-512 frame pass; _mm_getcsr / _mm_setcsr: denormals as zero in the blur
#endif

namespace skelfast {
namespace {

using at::Tensor;

constexpr int64_t kStreamJoint = 0, kStreamBone = 1, kStreamMotion = 2;

void check_vector(const Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "augment_cpu: ", name, " must have shape (", n, "), got ",
              t.sizes());
}

void check_matrix(const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, "augment_cpu: ", name,
              " must have shape (", rows, ", ", cols, "), got ", t.sizes());
}

int64_t reflect(int64_t p, int64_t valid) {
  if (p < 0) p = -1 - p;
  if (p >= valid) p = 2 * valid - 1 - p;
  return std::min(std::max<int64_t>(p, 0), valid - 1);
}

// skelfast.reference.augment.source_positions, in its float32 arithmetic (ATen's linear
// interpolation with align_corners=False: float32 scale, source position clamped at 0); the
// product and the difference are rounded separately there, so they must not fuse into an FMA.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void temporal_taps(const int64_t* valid, const int64_t* start, const int64_t* length, const bool* reverse,
                   int64_t N, int64_t T, int64_t* i0, int64_t* i1, float* w) {
  for (int64_t n = 0; n < N; ++n) {
    const float scale = static_cast<float>(length[n]) / static_cast<float>(T);
    for (int64_t t = 0; t < T; ++t) {
      const float position = static_cast<float>(reverse[n] ? T - 1 - t : t) + 0.5f;
      const float scaled = scale * position;
      const float src = std::max(scaled - 0.5f, 0.0f);
      const int64_t a = static_cast<int64_t>(src);
      w[n * T + t] = src - static_cast<float>(a);
      i0[n * T + t] = reflect(start[n] + std::min(a, length[n] - 1), valid[n]);
      i1[n * T + t] = reflect(start[n] + std::min(a + 1, length[n] - 1), valid[n]);
    }
  }
}

// The blur reads the sample from its padded layout (`Padded`): each channel's T rows of VM values
// with R zero rows before it and after the last, consecutive channels sharing their R zero rows.
// Blurring a channel is then one stencil over its T rows, out[i] = sum_k taps[k] * in[i + (k - R) VM],
// with no per-row tap ranges and no short tails: the joint stream's goes straight to the output (the
// axis mask's multiplier applied), the bone and motion streams' is one run over the three channels
// (the 2R rows between channels are computed too, in the buffer's pad rows, never read).
struct Padded {
  int64_t T, VM, R;
  int64_t size() const { return (3 * (T + R) + R) * VM; }
  int64_t row(int64_t c, int64_t t) const { return (R + c * (T + R) + t) * VM; }  // offset of row t of c
  int64_t run() const { return (3 * T + 2 * R) * VM; }  // values from row(0, 0) to the end of channel 2
};

// The blur's taps are symmetric (the Gaussian's weight at -j equals the one at +j, bit for bit), so
// each output sums centre * w_0 + sum_{j=1..half} w_j (row -j + row +j): half the multiplies of the
// plain stencil. The sum is scaled (the axis mask's multiplier, or 1) before its one store.
// kVecs vectors of kBytes hold the sums in registers over the taps (GCC vector types: as plain
// arrays the sums went through the stack at every tap). Each form below uses its target's own
// register width: a 64-byte type on an AVX2 target became pairs of registers spilled at every tap
// (the whole op 3x slower). No form contracts to FMA, so all give the same bits.
template <typename scalar_t, int kBytes, int kVecs>
__attribute__((always_inline)) inline void stencil_block(const scalar_t* centre, scalar_t* dst, const scalar_t* taps,
                                                        int64_t half, int64_t VM, scalar_t scale) {
  typedef scalar_t vec __attribute__((vector_size(kBytes)));
  constexpr int64_t kLanes = kBytes / sizeof(scalar_t);
  vec acc[kVecs];
  const vec w0 = vec{} + taps[0];
  for (int v = 0; v < kVecs; ++v) {
    vec x;
    std::memcpy(&x, centre + v * kLanes, sizeof x);
    acc[v] = w0 * x;
  }
  for (int64_t j = 1; j <= half; ++j) {
    const vec wj = vec{} + taps[j];
    const scalar_t *before = centre - j * VM, *after = centre + j * VM;
    for (int v = 0; v < kVecs; ++v) {
      vec xb, xa;
      std::memcpy(&xb, before + v * kLanes, sizeof xb);
      std::memcpy(&xa, after + v * kLanes, sizeof xa);
      acc[v] += wj * (xb + xa);
    }
  }
  for (int v = 0; v < kVecs; ++v) acc[v] = acc[v] * scale;
  std::memcpy(dst, acc, sizeof acc);
}

// dst[i] = scale (taps[0] src[i] + sum_{j=1..half} taps[j] (src[i - j VM] + src[i + j VM])) for i in
// [0, count): blocks of kWide vectors, then single vectors, then scalars
template <typename scalar_t, int kBytes, int kWide>
__attribute__((always_inline)) inline void stencil_run(const scalar_t* centre, scalar_t* dst, const scalar_t* taps,
                                                      int64_t half, int64_t VM, int64_t count, scalar_t scale) {
  constexpr int64_t kLanes = kBytes / sizeof(scalar_t);
  int64_t i = 0;
  for (; i + kWide * kLanes <= count; i += kWide * kLanes)
    stencil_block<scalar_t, kBytes, kWide>(centre + i, dst + i, taps, half, VM, scale);
  for (; i + kLanes <= count; i += kLanes) stencil_block<scalar_t, kBytes, 1>(centre + i, dst + i, taps, half, VM, scale);
  for (; i < count; ++i) {
    scalar_t acc = taps[0] * centre[i];
    for (int64_t j = 1; j <= half; ++j) acc += taps[j] * (centre[i - j * VM] + centre[i + j * VM]);
    dst[i] = acc * scale;
  }
}

// Four vectors of sums, at the target's width: AVX-512 (16 floats a register), AVX2 (8) and the
// baseline SSE2 (4), picked at run time
#ifdef SKELFAST_GCC_X86_FORMS
template <typename scalar_t>
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void stencil_avx512(
    const scalar_t* centre, scalar_t* dst, const scalar_t* taps, int64_t half, int64_t VM, int64_t count, scalar_t scale) {
  stencil_run<scalar_t, 64, 4>(centre, dst, taps, half, VM, count, scale);
}

template <typename scalar_t>
__attribute__((target("avx2"), optimize("fp-contract=off"))) void stencil_avx2(
    const scalar_t* centre, scalar_t* dst, const scalar_t* taps, int64_t half, int64_t VM, int64_t count, scalar_t scale) {
  stencil_run<scalar_t, 32, 4>(centre, dst, taps, half, VM, count, scale);
}
#endif

template <typename scalar_t>
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void stencil_baseline(const scalar_t* centre, scalar_t* dst, const scalar_t* taps, int64_t half, int64_t VM,
                      int64_t count, scalar_t scale) {
  stencil_run<scalar_t, 16, 4>(centre, dst, taps, half, VM, count, scale);
}

// dst[i] = scale sum_k w_k y[i + (k - R) VM] for the `count` values from `centre` on, which lie in
// the Padded layout (its zero rows pad time); taps[j] is w_{R + j} = w_{R - j}, j = 0 .. half
template <typename scalar_t>
void blur_run(const scalar_t* centre, scalar_t* dst, const scalar_t* taps, int64_t half, int64_t VM, int64_t count,
              scalar_t scale) {
#ifdef SKELFAST_GCC_X86_FORMS
  const int form = cpu_isa_level();  // 2 AVX-512, 1 AVX2, 0 baseline (SKELFAST_CPU_ISA caps it)
  // Denormals read and written as zero (DAZ | FTZ) for the stencil: small sigmas give outer taps
  // below float32's smallest normal (sigma 0.3 and 0.5: two taps ~1e-43), and every multiply by
  // one took a microcode assist, 25x the stencil's time for those samples. What changes is below
  // the dtype's smallest normal in absolute value (1.2e-38 in float32).
  const unsigned int csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040u);
  if (form == 2) {
    stencil_avx512(centre, dst, taps, half, VM, count, scale);
  } else if (form == 1) {
    stencil_avx2(centre, dst, taps, half, VM, count, scale);
  } else {
    stencil_baseline(centre, dst, taps, half, VM, count, scale);
  }
  _mm_setcsr(csr);
#else
  stencil_baseline(centre, dst, taps, half, VM, count, scale);
#endif
}

// Step 1 of one float32 sample, frame by frame, with every row of the frame in registers: for data
// whose frames are contiguous rows of at most 64 values (NTU: 25 joints x 2 bodies = 50), four
// AVX-512 vectors a row, the last one partly masked. The generic loops below make a pass over memory
// per operation on 50-value rows (loop overhead and a masked tail each time) and read the joint map
// one value at a time; here the three input rows are interpolated, permuted in registers (two
// two-source permutes and a blend a vector) and multiplied by the matrices, and noise, axis mask and
// joint mask applied, before one store per output row. The same operations in the same order as
// the generic loops, without FMA: the same bits.
struct FrameJob {
  const float* x;  // sample n of x; frame a of channel d is the row at x + d sc + a st
  int64_t sc, st, T, VM;
  const int64_t *i0, *i1;  // the sample's temporal taps (T each)
  const float* w;
  const int64_t* column;  // output column j reads input column column[j]; nullptr: the identity
  const float* e_all;     // one matrix for every joint (9), or nullptr: per-column matrices in coef
  const float* coef;      // coef[k VM + j] = E[k] of output column j
  const float* z;         // the sample's normals (3, T, VM), or nullptr: no noise
  float noise_std;
  float* dst;  // output row (c, t) at dst + c dst_channel + t VM
  int64_t dst_channel;
  const float* keep;  // direct to the output: the axis multipliers (3) and the joint mask; else nullptr
  const int64_t *masked_at, *masked_cols;
  float fill;
  // the sample this thread most likely takes next (nullptr: none): its rows of x and of the output
  // are prefetched a frame at a time, so that they arrive from memory while this sample computes
  const float* next_x;
  const int64_t *next_i0, *next_i1;
  float* next_out;  // its output, (3, T, VM) contiguous
};

// Every cache line of [p, p + bytes), for reading or for writing
template <int kWrite>
__attribute__((always_inline)) inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, kWrite, 3);
  __builtin_prefetch(c + bytes - 1, kWrite, 3);
}

#ifdef SKELFAST_GCC_X86_FORMS
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prfchw"), optimize("fp-contract=off"))) void frames_avx512(
    const FrameJob& job) {
  const int64_t VM = job.VM, T = job.T;
  const int vectors = static_cast<int>((VM + 15) / 16);
  __mmask16 lanes[4];  // the valid lanes of each vector of a row
  __m512i index[4];    // the joint map: lane l of vector q reads lane index & 31 of (r0, r1) or of (r2, r3)
  __mmask16 upper[4];  // ... of (r2, r3) where its input column is 32 or more
  for (int q = 0; q < 4; ++q) {
    const int64_t left = std::min<int64_t>(16, std::max<int64_t>(0, VM - 16 * q));
    lanes[q] = static_cast<__mmask16>((1u << left) - 1u);
    alignas(64) int32_t idx[16];
    unsigned high = 0;
    for (int l = 0; l < 16; ++l) {
      const int64_t j = 16 * q + l;
      const int64_t col = job.column != nullptr && j < VM ? job.column[j] : j;
      idx[l] = static_cast<int32_t>(col & 31);
      high |= static_cast<unsigned>(col >= 32) << l;
    }
    index[q] = _mm512_load_si512(idx);
    upper[q] = static_cast<__mmask16>(high);
  }
  __m512 e[9];
  for (int k = 0; k < 9 && job.e_all != nullptr; ++k) e[k] = _mm512_set1_ps(job.e_all[k]);
  const __m512 noise_std = _mm512_set1_ps(job.noise_std);
  for (int64_t t = 0; t < T; ++t) {
    if (job.next_x != nullptr) {
      for (int d = 0; d < 3; ++d) {
        prefetch_bytes<0>(job.next_x + d * job.sc + job.next_i0[t] * job.st, VM * 4);
        if (job.next_i1[t] != job.next_i0[t]) prefetch_bytes<0>(job.next_x + d * job.sc + job.next_i1[t] * job.st, VM * 4);
        prefetch_bytes<1>(job.next_out + (d * T + t) * VM, VM * 4);
      }
    }
    const float wb = job.w[t];
    const __m512 wa_v = _mm512_set1_ps(1.0f - wb), wb_v = _mm512_set1_ps(wb);
    __m512 p[3][4];
    for (int d = 0; d < 3; ++d) {
      const float* ra = job.x + d * job.sc + job.i0[t] * job.st;
      const float* rb = job.x + d * job.sc + job.i1[t] * job.st;
      __m512 r[4];
      for (int q = 0; q < 4; ++q) {
        r[q] = _mm512_maskz_loadu_ps(lanes[q], ra + 16 * q);
        if (wb != 0.0f)
          r[q] = _mm512_add_ps(_mm512_mul_ps(r[q], wa_v), _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes[q], rb + 16 * q), wb_v));
      }
      for (int q = 0; q < 4; ++q)
        p[d][q] = job.column == nullptr ? r[q]
                                        : _mm512_mask_blend_ps(upper[q], _mm512_permutex2var_ps(r[0], index[q], r[1]),
                                                               _mm512_permutex2var_ps(r[2], index[q], r[3]));
    }
    for (int c = 0; c < 3; ++c) {
      float* row = job.dst + c * job.dst_channel + t * VM;
      for (int q = 0; q < vectors; ++q) {
        __m512 e0, e1, e2;
        if (job.e_all != nullptr) {
          e0 = e[3 * c], e1 = e[3 * c + 1], e2 = e[3 * c + 2];
        } else {
          const float* ec = job.coef + 3 * c * VM + 16 * q;
          e0 = _mm512_maskz_loadu_ps(lanes[q], ec);
          e1 = _mm512_maskz_loadu_ps(lanes[q], ec + VM);
          e2 = _mm512_maskz_loadu_ps(lanes[q], ec + 2 * VM);
        }
        __m512 acc = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(e0, p[0][q]), _mm512_mul_ps(e1, p[1][q])),
                                   _mm512_mul_ps(e2, p[2][q]));
        if (job.z != nullptr)
          acc = _mm512_add_ps(acc, _mm512_mul_ps(noise_std, _mm512_maskz_loadu_ps(lanes[q], job.z + (c * T + t) * VM + 16 * q)));
        if (job.keep != nullptr) acc = _mm512_mul_ps(acc, _mm512_set1_ps(job.keep[c]));
        _mm512_mask_storeu_ps(row + 16 * q, lanes[q], acc);
      }
      if (job.keep != nullptr)
        for (int64_t i = job.masked_at[t]; i < job.masked_at[t + 1]; ++i) row[job.masked_cols[i]] = job.fill;
    }
  }
}
#endif

// The blur's K taps for one sample, as AugmentParams.blur_weights computes them in float64 (the same
// operations: w_k = exp(-(k^2) / (2 sigma^2)) for k = -R..R, over their sum when normalised), then
// rounded to the compute type. Computed for k >= 0 and mirrored: symmetric bit for bit, which the
// stencil relies on. Here rather than in Python: those eight small tensor ops were ~30 us of the
// op's fixed cost.
// (w: K doubles of workspace)
template <typename scalar_t>
void gaussian_taps(double sigma, int64_t K, bool normalized, double* w, scalar_t* taps) {
  const int64_t R = K / 2;
  for (int64_t k = 0; k <= R; ++k) {
    const double kk = static_cast<double>(k);
    w[R + k] = w[R - k] = std::exp(-(kk * kk) / (2.0 * (sigma * sigma)));
  }
  double sum = 0;
  for (int64_t k = 0; k < K && normalized; ++k) sum += w[k];
  for (int64_t k = 0; k < K; ++k) taps[k] = static_cast<scalar_t>(normalized ? w[k] / sum : w[k]);
}

template <typename scalar_t>
void augment_kernel(const Tensor& x, const int64_t* i0, const int64_t* i1, const float* w,
                    const Tensor& matrix_t, const Tensor& joint_matrix_t, const Tensor& select_t,
                    const Tensor& source_t, const Tensor& noise_std_t, int64_t noise_seed,
                    const Tensor& blur_on_t, const Tensor& blur_sigma_t, int64_t K, bool blur_normalized,
                    const Tensor& keep_t, const Tensor& mask_t, bool has_mask, double fill_value,
                    const Tensor& parents_t, int64_t stream, Tensor& out) {
  const int64_t N = x.size(0), C = 3, V = x.size(3), M = x.size(4), T = out.size(2), VM = V * M;
  const int64_t R = K / 2;
  const int64_t sn = x.stride(0), sc = x.stride(1), st = x.stride(2), sv = x.stride(3), sm = x.stride(4);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const double* mat = matrix_t.const_data_ptr<double>();
  const double* jmat = joint_matrix_t.const_data_ptr<double>();
  const bool* sel = select_t.const_data_ptr<bool>();
  const int64_t* src = source_t.const_data_ptr<int64_t>();
  const double* noise_std = noise_std_t.const_data_ptr<double>();
  const bool* blur_on = blur_on_t.const_data_ptr<bool>();
  const double* blur_sigma = blur_sigma_t.const_data_ptr<double>();
  const double* keep = keep_t.const_data_ptr<double>();
  const bool* mask = has_mask ? mask_t.const_data_ptr<bool>() : nullptr;
  const int64_t* parents = parents_t.const_data_ptr<int64_t>();
  const scalar_t fill = static_cast<scalar_t>(fill_value);
  scalar_t* outp = out.mutable_data_ptr<scalar_t>();
  const int64_t sample_size = C * T * VM;

  // Samples are handed out from a shared counter rather than split statically: on a busy machine
  // a static split waits for the slowest thread. Each sample's result does not depend on which
  // thread computes it.
  std::atomic<int64_t> next_sample{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(N, at::get_num_threads()));
  const bool x_rows = sm == 1 && sv == M;  // a frame's (V, M) values are contiguous in x
  // step 1 with each frame's rows in AVX-512 registers (frames_avx512)
  const bool frame_registers = std::is_same_v<scalar_t, float> && x_rows && VM <= 64 && cpu_isa_level() == 2;
  // the joint mask is shared by the batch: per frame t, the masked columns v * M + m are
  // masked_cols[masked_at[t] .. masked_at[t + 1])
  std::vector<int64_t> masked_at(T + 1, 0), masked_cols;
  for (int64_t t = 0; t < T && mask != nullptr; ++t) {
    for (int64_t v = 0; v < V; ++v)
      for (int64_t m = 0; m < M && mask[t * V + v]; ++m) masked_cols.push_back(v * M + m);
    masked_at[t + 1] = static_cast<int64_t>(masked_cols.size());
  }
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    const Padded layout{T, VM, R};
    // zero pad rows written once: the passes below write only the T rows of each channel
    std::vector<scalar_t> y(layout.size(), scalar_t(0)), blurred(layout.size()), coef(9 * VM), p(3 * VM);
    std::vector<int64_t> column(VM);
    std::vector<double> tap_weights(K);
    std::vector<scalar_t> taps(K);
    float keep_f[3];
    std::vector<float> noise;
    for (int64_t n = next_sample++; n < N; n = next_sample++) {
      const scalar_t* xn = xp + n * sn;
      // samples go to the threads in turn, roughly: this one's next is most likely `workers` on
      const int64_t next = n + workers;
      // coef[(c * 3 + d) * VM + v * M + m] = E_v[c, d], in the compute type (the reference's .to(cdt)),
      // where some joint takes the second matrix; else one matrix for all (the same products)
      bool identity_source = true, one_matrix = true;
      for (int64_t v = 0; v < V; ++v) {
        identity_source = identity_source && src[n * V + v] == v;
        one_matrix = one_matrix && !sel[n * V + v];
        for (int64_t m = 0; m < M; ++m) column[v * M + m] = src[n * V + v] * M + m;
      }
      scalar_t e_all[9];
      for (int k = 0; k < 9; ++k) e_all[k] = static_cast<scalar_t>(mat[n * 9 + k]);
      if (!one_matrix) {
        for (int64_t v = 0; v < V; ++v) {
          const double* e = (sel[n * V + v] ? jmat : mat) + n * 9;
          for (int k = 0; k < 9; ++k)
            for (int64_t m = 0; m < M; ++m) coef[k * VM + v * M + m] = static_cast<scalar_t>(e[k]);
        }
      }
      const scalar_t std_n = static_cast<scalar_t>(noise_std[n]);
      const float* z = nullptr;
      if (noise_std[n] != 0.0) {  // normals 0 .. 3 T V M - 1 of the stream keyed by noise_seed + n
        noise.resize(sample_size);
        philox::normal_fill(static_cast<uint64_t>(noise_seed + n), sample_size, noise.data());
        z = noise.data();
      }
      // Without blur, the joint stream's axis mask and joint mask are applied as each row is made
      // and the row goes straight to the output (the same operations in the same order as step 3)
      const bool direct = !blur_on[n] && stream == kStreamJoint;
      scalar_t* on = outp + n * sample_size;
      bool frames_done = false;
#ifdef SKELFAST_GCC_X86_FORMS
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (frame_registers) {
          if (direct)
            for (int c = 0; c < 3; ++c) keep_f[c] = static_cast<float>(keep[n * 3 + c]);
          const FrameJob job{xn, sc, st, T, VM, i0 + n * T, i1 + n * T, w + n * T,
                             identity_source ? nullptr : column.data(), one_matrix ? e_all : nullptr, coef.data(),
                             z, std_n, direct ? on : y.data() + layout.row(0, 0), direct ? T * VM : (T + R) * VM,
                             direct ? keep_f : nullptr, masked_at.data(), masked_cols.data(), fill,
                             next < N ? xp + next * sn : nullptr, next < N ? i0 + next * T : nullptr,
                             next < N ? i1 + next * T : nullptr, next < N ? outp + next * sample_size : nullptr};
          frames_avx512(job);
          frames_done = true;
        }
      }
#endif
      // 1. time (two taps), joint map, per-joint matrices, noise; row by row over (V, M)
      for (int64_t t = 0; t < T && !frames_done; ++t) {
        const int64_t a = i0[n * T + t], b = i1[n * T + t];
        const scalar_t wb = static_cast<scalar_t>(w[n * T + t]);
        const scalar_t wa = scalar_t(1) - wb;
        // a whole frame of x as it is (one tap, no joint map): read in place, not copied into p
        const bool in_place = x_rows && identity_source && wb == scalar_t(0);
        for (int64_t d = 0; d < 3 && !in_place; ++d) {
          const scalar_t* pa = xn + d * sc + a * st;
          const scalar_t* pb = xn + d * sc + b * st;
          scalar_t* pd = p.data() + d * VM;
          if (x_rows && identity_source) {  // whole rows
            if (wb != scalar_t(0)) {
              for (int64_t j = 0; j < VM; ++j) pd[j] = pa[j] * wa + pb[j] * wb;
            } else {
              for (int64_t j = 0; j < VM; ++j) pd[j] = pa[j];
            }
          } else if (x_rows) {  // whole rows read through the joint map
            const int64_t* col = column.data();
            if (wb != scalar_t(0)) {
              for (int64_t j = 0; j < VM; ++j) pd[j] = pa[col[j]] * wa + pb[col[j]] * wb;
            } else {
              for (int64_t j = 0; j < VM; ++j) pd[j] = pa[col[j]];
            }
          } else {
            for (int64_t v = 0; v < V; ++v) {
              const int64_t off = src[n * V + v] * sv;
              for (int64_t m = 0; m < M; ++m) {
                const int64_t o = off + m * sm;
                pd[v * M + m] = wb != scalar_t(0) ? pa[o] * wa + pb[o] * wb : pa[o];
              }
            }
          }
        }
        const scalar_t* frame = xn + a * st;
        const scalar_t* p0 = in_place ? frame : p.data();
        const scalar_t* p1 = in_place ? frame + sc : p0 + VM;
        const scalar_t* p2 = in_place ? frame + 2 * sc : p1 + VM;
        for (int64_t c = 0; c < 3; ++c) {
          scalar_t* dst = direct ? on + (c * T + t) * VM : y.data() + layout.row(c, t);
          if (one_matrix) {
            const scalar_t e0 = e_all[c * 3], e1 = e_all[c * 3 + 1], e2 = e_all[c * 3 + 2];
            for (int64_t j = 0; j < VM; ++j) dst[j] = e0 * p0[j] + e1 * p1[j] + e2 * p2[j];
          } else {
            const scalar_t *e0 = coef.data() + (c * 3) * VM, *e1 = e0 + VM, *e2 = e1 + VM;
            for (int64_t j = 0; j < VM; ++j) dst[j] = e0[j] * p0[j] + e1[j] * p1[j] + e2[j] * p2[j];
          }
          if (z != nullptr) {
            const float* zc = z + (c * T + t) * VM;
            for (int64_t j = 0; j < VM; ++j) dst[j] = dst[j] + std_n * static_cast<scalar_t>(zc[j]);
          }
          if (direct) {
            const scalar_t kc = static_cast<scalar_t>(keep[n * 3 + c]);
            for (int64_t j = 0; j < VM; ++j) dst[j] = dst[j] * kc;
            for (int64_t i = masked_at[t]; i < masked_at[t + 1]; ++i) dst[masked_cols[i]] = fill;
          }
        }
      }
      if (direct) continue;
      // the joint mask (shared by the batch) on one channel (T, VM) of the output
      const auto mask_channel = [&](scalar_t* dst) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = masked_at[t]; i < masked_at[t + 1]; ++i) dst[t * VM + masked_cols[i]] = fill;
      };
      // 2. temporal blur, zero padded: blurred[t] = sum_k w_k y[t + k - R]
      const scalar_t* pre = y.data();
      if (blur_on[n]) {
        scalar_t* tp = taps.data();
        gaussian_taps(blur_sigma[n], K, blur_normalized, tap_weights.data(), tp);
        // outer taps that underflow to 0 (small sigma) add nothing: skip them, a pair at a time
        int64_t half = R;
        while (half > 0 && tp[R + half] == scalar_t(0)) --half;
        if (stream == kStreamJoint) {  // blur, axis mask and joint mask straight into the output
          for (int64_t c = 0; c < C; ++c) {
            blur_run(y.data() + layout.row(c, 0), on + c * T * VM, tp + R, half, VM, T * VM,
                     static_cast<scalar_t>(keep[n * 3 + c]));
            mask_channel(on + c * T * VM);
          }
          continue;
        }
        // one run over the three channels and the zero rows between them (computed, never read)
        blur_run(y.data() + layout.row(0, 0), blurred.data() + layout.row(0, 0), tp + R, half, VM, layout.run(),
                 scalar_t(1));
        pre = blurred.data();
      }
      // 3. axis mask, stream, joint mask, for the bone and motion streams (the joint stream went to
      // the output in step 1 or 2); a channel's T rows are contiguous in both layouts
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t kc = static_cast<scalar_t>(keep[n * 3 + c]);
        const scalar_t* rows = pre + layout.row(c, 0);
        scalar_t* dst = on + c * T * VM;
        if (stream == kStreamMotion) {  // frame t + 1 minus frame t; the last frame zero
          for (int64_t j = 0; j < (T - 1) * VM; ++j) dst[j] = rows[j + VM] * kc - rows[j] * kc;
          for (int64_t j = (T - 1) * VM; j < T * VM; ++j) dst[j] = scalar_t(0);
        } else {
          for (int64_t t = 0; t < T; ++t)
            for (int64_t v = 0; v < V; ++v)
              for (int64_t m = 0; m < M; ++m) {
                const int64_t j = t * VM + v * M + m, parent = t * VM + parents[v] * M + m;
                dst[j] = rows[j] * kc - rows[parent] * kc;
              }
        }
        mask_channel(dst);
      }
    }
  });
}

// Every value of a contiguous int64 tensor in [lo, hi]: one loop over a small per-sample table
// rather than two reduction kernels and their .item()s
bool all_in(const Tensor& t, int64_t lo, int64_t hi) {
  const int64_t* p = t.const_data_ptr<int64_t>();
  return std::all_of(p, p + t.numel(), [&](int64_t v) { return v >= lo && v <= hi; });
}

Tensor augment_cpu(const Tensor& x, const Tensor& valid, const Tensor& start, const Tensor& length,
                   const Tensor& reverse, int64_t t_out, const Tensor& matrix,
                   const Tensor& joint_matrix, const Tensor& joint_select, const Tensor& joint_source,
                   const Tensor& noise_std, int64_t noise_seed, const Tensor& blur_on,
                   const Tensor& blur_sigma, int64_t blur_size, bool blur_normalized, const Tensor& axis_keep,
                   const std::optional<Tensor>& frame_joint_mask, const Tensor& fill, const Tensor& parents,
                   int64_t stream) {
  TORCH_CHECK(x.device().is_cpu(), "augment_cpu: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 5 && x.size(1) == 3, "augment_cpu: x must be (N, 3, T_in, V, M), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "augment_cpu: supports float32 and float64, got ", x.scalar_type());
  TORCH_CHECK(stream >= kStreamJoint && stream <= kStreamMotion, "augment_cpu: stream must be 0, 1 or 2, got ",
              stream);
  const int64_t N = x.size(0), T_in = x.size(2), V = x.size(3), M = x.size(4);
  TORCH_CHECK(t_out >= 1, "augment_cpu: t_out must be >= 1, got ", t_out);
  const int64_t T = t_out;
  check_vector(valid, "valid", N);
  check_vector(start, "start", N);
  check_vector(length, "length", N);
  check_vector(reverse, "reverse", N);
  TORCH_CHECK(matrix.dim() == 3 && matrix.size(0) == N && matrix.size(1) == 3 && matrix.size(2) == 3,
              "augment_cpu: matrix must be (N, 3, 3), got ", matrix.sizes());
  TORCH_CHECK(joint_matrix.sizes() == matrix.sizes(), "augment_cpu: joint_matrix must be (N, 3, 3), got ",
              joint_matrix.sizes());
  check_matrix(joint_select, "joint_select", N, V);
  check_matrix(joint_source, "joint_source", N, V);
  check_vector(noise_std, "noise_std", N);
  check_vector(blur_on, "blur_on", N);
  check_vector(blur_sigma, "blur_sigma", N);
  TORCH_CHECK(blur_size >= 1 && blur_size % 2 == 1, "augment_cpu: blur_size must be odd and >= 1, got ", blur_size);
  check_matrix(axis_keep, "axis_keep", N, 3);
  check_vector(parents, "parents", V);
  TORCH_CHECK(fill.numel() == 1, "augment_cpu: fill must hold one value, got ", fill.sizes());
  const bool has_mask = frame_joint_mask.has_value();
  if (has_mask) check_matrix(*frame_joint_mask, "frame_joint_mask", T, V);

  Tensor out = at::empty({N, 3, T, V, M}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;

  // small per-sample tables in fixed types; float32 values are exact in double
  const auto f64 = [](const Tensor& t) { return t.to(at::kDouble).contiguous(); };
  const auto i64 = [](const Tensor& t) { return t.to(at::kLong).contiguous(); };
  const auto b8 = [](const Tensor& t) { return t.to(at::kBool).contiguous(); };
  const Tensor validc = i64(valid), startc = i64(start), lengthc = i64(length), reversec = b8(reverse);
  const Tensor sourcec = i64(joint_source), parentsc = i64(parents);
  const Tensor noise_stdc = f64(noise_std);
  TORCH_CHECK(all_in(validc, 1, T_in), "augment_cpu: valid lengths must be in [1, T_in=", T_in, "]");
  TORCH_CHECK(all_in(lengthc, 1, std::numeric_limits<int64_t>::max()), "augment_cpu: length must be >= 1");
  TORCH_CHECK(all_in(sourcec, 0, V - 1), "augment_cpu: joint_source must index joints in [0, ", V, ")");
  TORCH_CHECK(all_in(parentsc, 0, V - 1), "augment_cpu: parents must index joints in [0, ", V, ")");
  TORCH_CHECK(noise_seed >= 0 && noise_seed <= std::numeric_limits<int64_t>::max() - N,
              "augment_cpu: noise_seed must be in [0, 2^63 - N), got ", noise_seed);
  TORCH_CHECK(3 * T * V * M < (int64_t{1} << 34), "augment_cpu: a sample of 3 x ", T, " x ", V, " x ", M,
              " values is past the noise stream's 2^34 counters");

  // reflection keeps every tap in [0, valid) within [0, T_in): x is read in bounds
  std::vector<int64_t> i0(N * T), i1(N * T);
  std::vector<float> w(N * T);
  temporal_taps(validc.const_data_ptr<int64_t>(), startc.const_data_ptr<int64_t>(),
                lengthc.const_data_ptr<int64_t>(), reversec.const_data_ptr<bool>(), N, T, i0.data(), i1.data(),
                w.data());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "augment_cpu", [&] {
    augment_kernel<scalar_t>(x, i0.data(), i1.data(), w.data(), f64(matrix), f64(joint_matrix), b8(joint_select), sourcec,
                             noise_stdc, noise_seed, b8(blur_on), f64(blur_sigma), blur_size, blur_normalized,
                             f64(axis_keep),
                             has_mask ? b8(*frame_joint_mask) : Tensor(), has_mask, fill.item<double>(),
                             parentsc, stream, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(skelfast, m) {
  // One fused pass of skelfast.ops.augment on CPU tensors (fields as in AugmentParams; the blur's
  // taps made here from blur_sigma). stream: 0 joint, 1 bone, 2 motion.
  m.def(
      "augment_cpu(Tensor x, Tensor valid, Tensor start, Tensor length, Tensor reverse, int t_out, "
      "Tensor matrix, Tensor joint_matrix, "
      "Tensor joint_select, Tensor joint_source, Tensor noise_std, int noise_seed, Tensor blur_on, "
      "Tensor blur_sigma, int blur_size, bool blur_normalized, Tensor axis_keep, Tensor? frame_joint_mask, Tensor fill, "
      "Tensor parents, "
      "int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(skelfast, CPU, m) { m.impl("augment_cpu", &augment_cpu); }

}  // namespace skelfast
