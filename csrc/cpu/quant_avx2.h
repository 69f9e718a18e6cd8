// Register-resident dequantization of every stored format for AVX2+FMA+F16C (also inlined into the AVX-512
// build, which has twice the registers for bigger tiles): a block is split into groups of eight values, each
// dequantized into one vector of floats that is multiplied into the activations at once, never stored.
// Values are computed as gguf computes them (scale * quant [+/- offset]), one FMA where there is an offset.
//
// Each format is a struct with `load(block)` (the block's scales, once per block and weight row) and
// `group<G>(state)` (values 8G..8G+8 of the block); quant_tile.h builds the matmul tiles on them.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant_formats.h"

namespace kvserve::cpu::avx2 {

#define KV_AVX2_INLINE inline __attribute__((always_inline, target("avx2,fma,f16c")))

// Eight bytes as eight int32, zero- or sign-extended.
KV_AVX2_INLINE __m256i u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
KV_AVX2_INLINE __m256i i8x8(const uint8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// The low (kHigh false) or high nibbles of eight bytes as int32.
template <bool kHigh>
KV_AVX2_INLINE __m256i nibbles(const uint8_t* p) {
  const __m256i bytes = u8x8(p);
  if constexpr (kHigh) return _mm256_srli_epi32(bytes, 4);
  return _mm256_and_si256(bytes, _mm256_set1_epi32(0xF));
}

KV_AVX2_INLINE __m256 to_ps(__m256i v) { return _mm256_cvtepi32_ps(v); }

// An f16 scale broadcast to eight floats: two instructions (broadcast the half, convert) instead of three.
KV_AVX2_INLINE __m256 broadcast_half(const uint8_t* p) {
  int16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return _mm256_cvtph_ps(_mm_set1_epi16(bits));
}

// Group G of a 32-value Q4_0/Q4_1 block: values 0..15 are the low nibbles of qs[0..16), 16..31 the high.
template <int G>
KV_AVX2_INLINE __m256i q4_group(const uint8_t* qs) {
  return nibbles<(G >= 2)>(qs + 8 * (G % 2));
}

// A 32-value block of one f16 scale followed by its quants (Q4_0, Q8_0).
struct ScaledBlock {
  static constexpr int kGroups = 4;
  struct State {
    const uint8_t* qs;
    __m256 d;
  };
  static KV_AVX2_INLINE State load(const uint8_t* b) { return {b + 2, broadcast_half(b)}; }
};

struct Q4_0 : ScaledBlock {
  using Format = cpu::Q4_0;
  template <int G>
  static KV_AVX2_INLINE __m256 group(const State& s) {
    return _mm256_mul_ps(s.d, to_ps(_mm256_sub_epi32(q4_group<G>(s.qs), _mm256_set1_epi32(8))));
  }
};

struct Q4_1 {
  using Format = cpu::Q4_1;
  static constexpr int kGroups = 4;
  struct State {
    const uint8_t* qs;
    __m256 d, m;
  };
  static KV_AVX2_INLINE State load(const uint8_t* b) {
    return {b + 4, broadcast_half(b), broadcast_half(b + 2)};
  }
  template <int G>
  static KV_AVX2_INLINE __m256 group(const State& s) {
    return _mm256_fmadd_ps(s.d, to_ps(q4_group<G>(s.qs)), s.m);
  }
};

struct Q8_0 : ScaledBlock {
  using Format = cpu::Q8_0;
  template <int G>
  static KV_AVX2_INLINE __m256 group(const State& s) {
    return _mm256_mul_ps(s.d, to_ps(i8x8(s.qs + 8 * G)));
  }
};

// Q4_K / Q5_K: group G lies in sub-block j = G / 4 (32 values), whose scale and offset (d * scale_j,
// dmin * min_j) are computed once per block; sub-blocks 2p and 2p+1 are the low and high nibbles of
// qs[32p..32p+32), and Q5_K's fifth bit of value i of sub-block j is bit j of qh[i].
template <bool kFifthBit>
struct KQuant {
  using Format = cpu::KQuant<kFifthBit>;
  static constexpr int kGroups = 32;
  struct State {
    const uint8_t* block;
    float scale[8], offset[8];
  };
  static KV_AVX2_INLINE State load(const uint8_t* b) {
    State s;
    s.block = b;
    const float d = half_to_float(b), dmin = half_to_float(b + 2);
    for (int j = 0; j < 8; ++j) {
      float sc, m;
      k_scale_min(b + 4, j, &sc, &m);
      s.scale[j] = d * sc;
      s.offset[j] = dmin * m;
    }
    return s;
  }
  template <int G>
  static KV_AVX2_INLINE __m256 group(const State& s) {
    constexpr int j = G / 4, i0 = 8 * (G % 4);
    const uint8_t* qs = s.block + (kFifthBit ? 48 : 16) + 32 * (j / 2) + i0;
    __m256i q = nibbles<(j % 2 == 1)>(qs);
    if constexpr (kFifthBit) {
      const __m256i h = u8x8(s.block + 16 + i0);
      const __m256i bit = j <= 4 ? _mm256_slli_epi32(h, 4 - j) : _mm256_srli_epi32(h, j - 4);
      q = _mm256_or_si256(q, _mm256_and_si256(bit, _mm256_set1_epi32(16)));
    }
    return _mm256_fmsub_ps(_mm256_set1_ps(s.scale[j]), to_ps(q), _mm256_set1_ps(s.offset[j]));
  }
};
using Q4_K = KQuant<false>;
using Q5_K = KQuant<true>;

// Q6_K: group G is values i0..i0+8 (i0 = 8 * (G % 4)) of quarter s = (G % 16) / 4 of half h = G / 16: the
// low (s < 2) or high nibbles of ql[64h + 32(s % 2) + i], bits 2s..2s+1 of qh[32h + i] above them, minus 32,
// times d * scales[8h + 2s + i0 / 16].
struct Q6_K {
  using Format = cpu::Q6_K;
  static constexpr int kGroups = 32;
  struct State {
    const uint8_t* block;
    float scale[16];
  };
  static KV_AVX2_INLINE State load(const uint8_t* b) {
    State s;
    s.block = b;
    const float d = half_to_float(b + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
    for (int j = 0; j < 16; ++j) s.scale[j] = d * static_cast<float>(scales[j]);
    return s;
  }
  template <int G>
  static KV_AVX2_INLINE __m256 group(const State& s) {
    constexpr int h = G / 16, quarter = (G % 16) / 4, i0 = 8 * (G % 4);
    const __m256i low = nibbles<(quarter >= 2)>(s.block + 64 * h + 32 * (quarter % 2) + i0);
    const __m256i bits = u8x8(s.block + 128 + 32 * h + i0);
    const __m256i high = _mm256_and_si256(
        quarter <= 1 ? _mm256_slli_epi32(bits, 4 - 2 * quarter) : _mm256_srli_epi32(bits, 2 * quarter - 4),
        _mm256_set1_epi32(0x30));
    const __m256i q = _mm256_sub_epi32(_mm256_or_si256(low, high), _mm256_set1_epi32(32));
    return _mm256_mul_ps(_mm256_set1_ps(s.scale[8 * h + 2 * quarter + i0 / 16]), to_ps(q));
  }
};

// Plain rows: eight values per vector, four vectors per 32-value block (a row's tail: see quant_tile.h).
struct F32 {
  using Format = cpu::F32;
  static constexpr int kGroups = 4;
  using State = const uint8_t*;
  static KV_AVX2_INLINE State load(const uint8_t* b) { return b; }
  template <int G>
  static KV_AVX2_INLINE __m256 group(State b) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(b) + 8 * G);
  }
};

struct F16 {
  using Format = cpu::F16;
  static constexpr int kGroups = 4;
  using State = const uint8_t*;
  static KV_AVX2_INLINE State load(const uint8_t* b) { return b; }
  template <int G>
  static KV_AVX2_INLINE __m256 group(State b) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * G)));
  }
};

struct BF16 {
  using Format = cpu::BF16;
  static constexpr int kGroups = 4;
  using State = const uint8_t*;
  static KV_AVX2_INLINE State load(const uint8_t* b) { return b; }
  template <int G>
  static KV_AVX2_INLINE __m256 group(State b) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * G));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
  }
};

KV_AVX2_INLINE float horizontal_sum(__m256 v) {
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

}  // namespace kvserve::cpu::avx2
