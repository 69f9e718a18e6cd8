// Helpers that vectorise without -ffast-math: reductions keep independent partial sums per lane.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Runtime dispatch to AVX-512 / AVX2 / baseline builds of the hot loops.
#define KV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KV_CLONES
#endif

// Always inlined, so each KV_CLONES caller compiles them for its own instruction set.
#define KV_INLINE inline __attribute__((always_inline))

namespace kvserve::cpu {

constexpr int kLanes = 8;  // one AVX2 register of floats; AVX-512 builds use half a register

// A float32's bits and back (memcpy: the compiler turns it into a register move, and vectorises loops of it).
KV_INLINE uint32_t to_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

KV_INLINE float from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Partial sums per lane, folded pairwise: the fold costs 3 adds instead of 7.
KV_INLINE float fold(float* partial) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) partial[l] += partial[l + width];
  }
  return partial[0];
}

KV_INLINE float dot(const float* a, const float* b, int64_t n) {
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += a[i + l] * b[i + l];
  }
  float sum = fold(partial);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

KV_INLINE float sum_of_squares(const float* x, int64_t n) { return dot(x, x, n); }

// y += a * x
KV_INLINE void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace kvserve::cpu
