// Register-resident dequantization of the 32-value formats (Q4_0, Q4_1, Q8_0, f32/f16/bf16 rows) for
// AVX2+FMA+F16C (also inlined into the AVX-512 build): each block becomes four vectors of eight floats that
// are multiplied into the activations at once, never stored. Values are computed as gguf computes them
// (scale * quant [+ offset]), one FMA for Q4_1.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "quant_formats.h"

namespace kvserve::cpu::avx2 {

#define KV_AVX2_INLINE inline __attribute__((always_inline, target("avx2,fma,f16c")))

// MB activation rows, two accumulators per row (even and odd groups of eight) to halve the FMA chain.
template <int MB>
KV_AVX2_INLINE void fma_rows(__m256 w, const float* x, int64_t x_stride, int parity, __m256 (*acc)[2]) {
  for (int r = 0; r < MB; ++r) acc[r][parity] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * x_stride), acc[r][parity]);
}

KV_AVX2_INLINE __m256 u8_to_ps(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
KV_AVX2_INLINE __m256 i8_to_ps(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)); }

// Low nibbles (values 0..15) and high nibbles (16..31) of 16 bytes.
KV_AVX2_INLINE void nibbles(const uint8_t* qs, __m128i* lo, __m128i* hi) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  *lo = _mm_and_si128(bytes, mask);
  *hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
}

struct Q4_0 {
  using Format = cpu::Q4_0;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    const __m256 d = _mm256_set1_ps(half_to_float(b)), eight = _mm256_set1_ps(8.0f);
    __m128i lo, hi;
    nibbles(b + 2, &lo, &hi);
    fma_rows<MB>(_mm256_mul_ps(d, _mm256_sub_ps(u8_to_ps(lo), eight)), x, xs, 0, acc);
    fma_rows<MB>(_mm256_mul_ps(d, _mm256_sub_ps(u8_to_ps(_mm_srli_si128(lo, 8)), eight)), x + 8, xs, 1, acc);
    fma_rows<MB>(_mm256_mul_ps(d, _mm256_sub_ps(u8_to_ps(hi), eight)), x + 16, xs, 0, acc);
    fma_rows<MB>(_mm256_mul_ps(d, _mm256_sub_ps(u8_to_ps(_mm_srli_si128(hi, 8)), eight)), x + 24, xs, 1, acc);
  }
};

struct Q4_1 {
  using Format = cpu::Q4_1;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    const __m256 d = _mm256_set1_ps(half_to_float(b)), m = _mm256_set1_ps(half_to_float(b + 2));
    __m128i lo, hi;
    nibbles(b + 4, &lo, &hi);
    fma_rows<MB>(_mm256_fmadd_ps(d, u8_to_ps(lo), m), x, xs, 0, acc);
    fma_rows<MB>(_mm256_fmadd_ps(d, u8_to_ps(_mm_srli_si128(lo, 8)), m), x + 8, xs, 1, acc);
    fma_rows<MB>(_mm256_fmadd_ps(d, u8_to_ps(hi), m), x + 16, xs, 0, acc);
    fma_rows<MB>(_mm256_fmadd_ps(d, u8_to_ps(_mm_srli_si128(hi, 8)), m), x + 24, xs, 1, acc);
  }
};

struct Q8_0 {
  using Format = cpu::Q8_0;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    const __m256 d = _mm256_set1_ps(half_to_float(b));
    const __m128i first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i second = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    fma_rows<MB>(_mm256_mul_ps(d, i8_to_ps(first)), x, xs, 0, acc);
    fma_rows<MB>(_mm256_mul_ps(d, i8_to_ps(_mm_srli_si128(first, 8))), x + 8, xs, 1, acc);
    fma_rows<MB>(_mm256_mul_ps(d, i8_to_ps(second)), x + 16, xs, 0, acc);
    fma_rows<MB>(_mm256_mul_ps(d, i8_to_ps(_mm_srli_si128(second, 8))), x + 24, xs, 1, acc);
  }
};

// Plain rows: eight values per vector, four vectors per 32-value block (a row's tail: see dot_blocks).
struct F32 {
  using Format = cpu::F32;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    const float* v = reinterpret_cast<const float*>(b);
    for (int g = 0; g < 4; ++g) fma_rows<MB>(_mm256_loadu_ps(v + 8 * g), x + 8 * g, xs, g & 1, acc);
  }
};

struct F16 {
  using Format = cpu::F16;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    for (int g = 0; g < 4; ++g) {
      const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * g));
      fma_rows<MB>(_mm256_cvtph_ps(halves), x + 8 * g, xs, g & 1, acc);
    }
  }
};

struct BF16 {
  using Format = cpu::BF16;
  template <int MB>
  static KV_AVX2_INLINE void block(const uint8_t* b, const float* x, int64_t xs, __m256 (*acc)[2]) {
    for (int g = 0; g < 4; ++g) {
      const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * g));
      const __m256 w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
      fma_rows<MB>(w, x + 8 * g, xs, g & 1, acc);
    }
  }
};

KV_AVX2_INLINE float horizontal_sum(__m256 v) {
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

// out[r * out_stride] = row · x[r] for MB rows r; row holds k / 32 blocks of B.
template <class B, int MB>
KV_AVX2_INLINE void dot_blocks(const uint8_t* row, const float* x, int64_t x_stride, int64_t k, float* out,
                               int64_t out_stride) {
  __m256 acc[MB][2];
  for (int r = 0; r < MB; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const int64_t num_blocks = k / B::Format::kValues;
  for (int64_t b = 0; b < num_blocks; ++b) {
    B::template block<MB>(row + b * B::Format::kBytes, x + b * B::Format::kValues, x_stride, acc);
  }
  for (int r = 0; r < MB; ++r) {
    float sum = horizontal_sum(_mm256_add_ps(acc[r][0], acc[r][1]));
    if constexpr (B::Format::kRows) {  // the values after the last whole block of 32
      constexpr int kValueBytes = B::Format::kBytes / B::Format::kValues;
      for (int64_t i = num_blocks * B::Format::kValues; i < k; ++i) {
        sum += B::Format::value(row + kValueBytes * i) * x[r * x_stride + i];
      }
    }
    out[r * out_stride] = sum;
  }
}

}  // namespace kvserve::cpu::avx2
