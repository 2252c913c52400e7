// CPU kernel of skelfast::dropout_cpu, the "cpp" backend of skelfast.ops.dropout:
//   y_i = x_i / (1 - p) where word_i >= threshold, else 0,
// with word_i = word (i & 3) of the Philox4x32-10 counter i >> 2 keyed by `seed` (csrc/random/philox.h,
// the words Triton's tl.randint4x draws: kernels/dropout.py gives the same mask on the GPU) and
// threshold = round(p * 2^32), so an element is kept with probability 1 - p to within 2^-32 (bernoulli_
// and torch.rand compare 24-bit floats). The mask is a function of (seed, i) alone: the backward is
// this same call on the gradient and nothing is saved (nn.Dropout keeps a mask as large as x).
// Elements go in chunks of 4096 (one 16 KB word buffer per chunk, filled eight counters a time).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../random/philox.h"

namespace skelfast {
namespace {

using at::Tensor;

constexpr int64_t kChunk = 4096;  // elements per word buffer: a multiple of 4 (whole counters)

uint32_t keep_threshold(double p) {
  const double scaled = std::nearbyint(p * 4294967296.0);
  return static_cast<uint32_t>(std::min(scaled, 4294967295.0));
}

template <typename scalar_t>
void dropout_kernel(const scalar_t* x, scalar_t* y, int64_t numel, uint64_t key, uint32_t threshold,
                    at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    uint32_t words[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, count = std::min(kChunk, numel - begin);
      philox::word_fill(key, static_cast<uint32_t>(begin / 4), count, words);
      const scalar_t* xc = x + begin;
      scalar_t* yc = y + begin;
      for (int64_t i = 0; i < count; ++i) {
        const opmath_t kept = static_cast<opmath_t>(xc[i]) * scale;
        yc[i] = static_cast<scalar_t>(words[i] >= threshold ? kept : opmath_t(0));
      }
    }
  });
}

Tensor dropout_cpu(const Tensor& x_in, double p, const Tensor& seed) {
  TORCH_CHECK(x_in.device().is_cpu(), "dropout (cpp CPU kernel): x must be a CPU tensor, got ", x_in.device());
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1) for the kernel, got ", p);
  TORCH_CHECK(seed.dim() == 0 && seed.scalar_type() == at::kLong && seed.device().is_cpu(),
              "dropout: seed must be a 0-dim int64 CPU tensor, got ", seed.scalar_type(), " of shape ", seed.sizes(),
              " on ", seed.device());
  const Tensor x = x_in.contiguous();
  // counters are 32-bit: 2^34 elements per seed
  TORCH_CHECK(x.numel() < (int64_t{1} << 34), "dropout: at most 2^34 elements per call, got ", x.numel());
  Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return y;
  const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dropout_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    dropout_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), x.numel(), key,
                             keep_threshold(p), static_cast<opmath_t>(1.0 / (1.0 - p)));
  });
  return y;
}

// keep_i = byte (i & 3) of word (i >> 2) >= threshold (little-endian bytes of the same Philox words):
// four mask elements per word, for the bool masks of the fused BatchNorm tails, where p is a multiple
// of 1/256 (ST-GCN's and AGCN's 0.5) and a byte keeps an element with probability exactly 1 - p.
Tensor keep_mask_cpu(int64_t numel, double p, const Tensor& seed) {
  const double scaled = p * 256.0;
  TORCH_CHECK(p >= 0.0 && p <= 1.0 && scaled == std::floor(scaled),
              "keep_mask: p must be a multiple of 1/256 in [0, 1] (one byte a decision), got ", p);
  TORCH_CHECK(seed.dim() == 0 && seed.scalar_type() == at::kLong && seed.device().is_cpu(),
              "keep_mask: seed must be a 0-dim int64 CPU tensor, got ", seed.scalar_type(), " of shape ",
              seed.sizes(), " on ", seed.device());
  TORCH_CHECK(numel >= 0 && numel < (int64_t{1} << 36), "keep_mask: numel must be in [0, 2^36), got ", numel);
  Tensor keep = at::empty({numel}, seed.options().dtype(at::kBool));
  if (numel == 0) return keep;
  const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
  const int threshold = static_cast<int>(scaled);  // 0 .. 256
  uint8_t* out = reinterpret_cast<uint8_t*>(keep.mutable_data_ptr<bool>());
  constexpr int64_t kBytes = 4 * kChunk;  // mask elements per chunk: kChunk words, whole counters
  const int64_t chunks = (numel + kBytes - 1) / kBytes;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    uint32_t words[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kBytes, count = std::min(kBytes, numel - begin);
      const int64_t word_count = (count + 3) / 4;
      philox::word_fill(key, static_cast<uint32_t>(begin / 16), word_count, words);
      // byte j of a word is (word >> 8j) & 0xff: on a little-endian CPU, the buffer's bytes in order
      static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "keep_mask reads words as little-endian bytes");
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(words);
      uint8_t* dst = out + begin;
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<uint8_t>(static_cast<int>(bytes[i]) >= threshold);
    }
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(skelfast, m) {
  // A bool keep mask (numel,): element i kept where byte (i & 3) of Philox word (i >> 2) of `seed`
  // is >= 256 p (p a multiple of 1/256).
  m.def("keep_mask_cpu(int numel, float p, Tensor seed) -> Tensor");
  // y = x * keep / (1 - p), keep_i = (Philox word i of `seed`) >= round(p 2^32); the backward of
  // skelfast.ops.dropout is the same call on the gradient.
  m.def("dropout_cpu(Tensor x, float p, Tensor seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(skelfast, CPU, m) {
  m.impl("dropout_cpu", &dropout_cpu);
  m.impl("keep_mask_cpu", &keep_mask_cpu);
}

}  // namespace skelfast
