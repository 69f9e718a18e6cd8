#include "random_draws.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu_isa.h"
#include "row_select.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

// Philox4x32's multipliers and Weyl key increments (Random123).
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// Philox4x32-10 of counter (c[0], c[1], c[2], 0) under key (k0, k1), into c.
KV_INLINE void philox(uint32_t* c, uint32_t k0, uint32_t k1) {
  uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = 0;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0, p1 = static_cast<uint64_t>(kM1) * c2;
    c0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    c1 = static_cast<uint32_t>(p1);
    c2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c3 = static_cast<uint32_t>(p0);
    k0 += kW0;
    k1 += kW1;
  }
  c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3;
}

// -log(u) for u in (0, 1), a normal float: Cephes' logf (a degree-8 polynomial on the mantissa reduced to
// [sqrt(1/2), sqrt(2)), within 1-2 ulp), written without branches so that the loop vectorises.
KV_INLINE float minus_log(float u) {
  const uint32_t bits = to_bits(u);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  float m = from_bits((bits & 0x007FFFFFu) | 0x3F000000u);  // u = m * 2^e, m in [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  const float x = low ? m + m - 1.0f : m - 1.0f;
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  float y = p * x * z;
  y += e * -2.12194440e-4f;
  y -= 0.5f * z;
  return -(x + y + e * 0.693359375f);
}

// 23 random bits, centred in their interval: u = (k + 1/2) 2^-23 is exact in float32 and never 0 or 1.
KV_INLINE float uniform(uint32_t word) { return (static_cast<float>(word >> 9) + 0.5f) * 0x1p-23f; }

// Index c's draw is word c % 4 of the block of counter c / 4: one Philox call gives four draws. Blocks
// first.. to the row's end, one at a time.
KV_INLINE void draw_blocks(float* out, int64_t cols, int64_t first, uint64_t seed, uint64_t counter) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t c1 = static_cast<uint32_t>(counter), c2 = static_cast<uint32_t>(counter >> 32);
  for (int64_t b = first; 4 * b < cols; ++b) {
    uint32_t words[4] = {static_cast<uint32_t>(b), c1, c2, 0};
    philox(words, k0, k1);
    const int64_t n = std::min<int64_t>(4, cols - 4 * b);
    for (int64_t j = 0; j < n; ++j) out[4 * b + j] = minus_log(uniform(words[j]));
  }
}

namespace avx2 {

#define KV_AVX2 __attribute__((target("avx2")))

// x * m lane by lane as 64-bit products split into their high and low 32 bits (vpmuludq takes the even lanes;
// the odd ones are shifted down for a second product).
KV_AVX2 inline void multiply_wide(__m256i x, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox4x32-10 of eight blocks at once: word w of block l in lane l of c[w]; the same rounds as `philox`.
KV_AVX2 inline void philox8(__m256i (&c)[4], uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kM0)), m1 = _mm256_set1_epi32(static_cast<int>(kM1));
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, lo0, hi1, lo1;
    multiply_wide(c[0], m0, hi0, lo0);
    multiply_wide(c[2], m1, hi1, lo1);
    c[0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[1]), _mm256_set1_epi32(static_cast<int>(k0)));
    c[1] = lo1;
    c[2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[3]), _mm256_set1_epi32(static_cast<int>(k1)));
    c[3] = lo0;
    k0 += kW0;
    k1 += kW1;
  }
}

// draw_blocks from block 0 with eight Philox blocks (32 draws) at a time; the same values.
KV_AVX2 void draw_row(float* out, int64_t cols, uint64_t seed, uint64_t counter) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t c1 = static_cast<uint32_t>(counter), c2 = static_cast<uint32_t>(counter >> 32);
  const int64_t whole = cols / 4;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t b = 0;
  for (; b + 8 <= whole; b += 8) {
    __m256i c[4] = {_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(b)), lane),
                    _mm256_set1_epi32(static_cast<int>(c1)), _mm256_set1_epi32(static_cast<int>(c2)),
                    _mm256_setzero_si256()};
    philox8(c, k0, k1);
    alignas(32) uint32_t words[4][8];
    for (int w = 0; w < 4; ++w) _mm256_store_si256(reinterpret_cast<__m256i*>(words[w]), c[w]);
    alignas(32) float draws[4][8];
    for (int w = 0; w < 4; ++w) {
      for (int l = 0; l < 8; ++l) draws[w][l] = minus_log(uniform(words[w][l]));
    }
    for (int l = 0; l < 8; ++l) {
      for (int w = 0; w < 4; ++w) out[4 * (b + l) + w] = draws[w][l];
    }
  }
  draw_blocks(out, cols, b, seed, counter);  // the last blocks, one at a time
}

}  // namespace avx2

const bool kAvx2 = detect_isa() != Isa::kBaseline;

// exponential_draws' row: eight blocks at a time where the CPU has AVX2, else one (the same values).
void draw_exponentials(float* out, int64_t cols, uint64_t seed, uint64_t counter) {
  if (kAvx2) {
    avx2::draw_row(out, cols, seed, counter);
  } else {
    draw_blocks(out, cols, 0, seed, counter);
  }
}

// keys[c] = logits[c] / temperature - log(E_c): -log of a draw is minus_log of it.
KV_CLONES void race_keys(float* keys, const float* logits, int64_t cols, float temperature, uint64_t seed,
                         uint64_t counter) {
  draw_exponentials(keys, cols, seed, counter);
  for (int64_t c = 0; c < cols; ++c) keys[c] = logits[c] / temperature + minus_log(keys[c]);
}

}  // namespace

void exponential_race(int64_t* out, const float* logits, int64_t rows, int64_t cols, int64_t logits_stride,
                      const float* temperatures, const uint64_t* seeds, const uint64_t* counters, int num_threads) {
  if (cols == 0) return;
#pragma omp parallel num_threads(num_threads) if (num_threads > 1 && rows > 1 && rows * cols >= (1 << 16))
  {
    std::vector<float> keys(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      race_keys(keys.data(), logits + r * logits_stride, cols, temperatures[r], seeds[r], counters[r]);
      row_argmax(out + r, keys.data(), 1, cols, cols, 1);
    }
  }
}

void exponential_draws(float* out, int64_t rows, int64_t cols, int64_t out_stride, const uint64_t* seeds,
                       const uint64_t* counters, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1 && rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) draw_exponentials(out + r * out_stride, cols, seeds[r], counters[r]);
}

}  // namespace kvserve::cpu
