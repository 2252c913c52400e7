// Compiled by tests/ops/test_philox_forms.py: the scalar, AVX2 and AVX-512 fill loops of
// csrc/random/philox.cpp must give the same bits (the op picks one by the CPU it runs on).
// Prints the number of values compared and of mismatches per pair; the forms this CPU lacks are
// skipped (their count is 0).
#include "philox.cpp"

#include <cstdio>
#include <vector>

using namespace skelfast::philox;

template <typename T, typename Fill>
long count_mismatches(const std::vector<T>& expected, Fill fill) {
  std::vector<T> got(expected.size());
  fill(got.data());
  long bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &expected[i], sizeof(T)) != 0;
  return bad;
}

int main() {
  const bool avx2 = __builtin_cpu_supports("avx2"), avx512 = __builtin_cpu_supports("avx512f");
  long compared_avx2 = 0, compared_avx512 = 0, bad_avx2 = 0, bad_avx512 = 0;
  for (uint64_t key : {0ull, 7ull, 123456789ull, (1ull << 40) + 123, (1ull << 62) - 5}) {
    for (int64_t count : {1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 255, 1950, 7501}) {
      std::vector<float> normals(count);
      std::vector<uint32_t> words(count);
      normal_fill_scalar(key, 0, count, normals.data());
      word_fill_scalar(key, 5, count, words.data());
      if (avx2) {
        bad_avx2 += count_mismatches(normals, [&](float* out) { normal_fill_avx2(key, count, out); });
        bad_avx2 += count_mismatches(words, [&](uint32_t* out) { word_fill_avx2(key, 5, count, out); });
        compared_avx2 += 2 * count;
      }
      if (avx512) {
        bad_avx512 += count_mismatches(normals, [&](float* out) { normal_fill_avx512(key, count, out); });
        bad_avx512 += count_mismatches(words, [&](uint32_t* out) { word_fill_avx512(key, 5, count, out); });
        compared_avx512 += 2 * count;
      }
    }
  }
  std::printf("avx2 %ld %ld\navx512 %ld %ld\n", compared_avx2, bad_avx2, compared_avx512, bad_avx512);
  return 0;
}
