// Weight storage formats read by the quantized matmul: GGUF's block layouts (ggml's block_q4_0 etc., byte
// for byte as they lie in the file) and plain half-precision rows. Each format dequantizes one block into
// float32 values in the order gguf's reference dequantizers produce them, computing each value as they do
// (scale * quant [+/- offset]); contraction into an FMA may round that once less.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvserve::cpu {

// GGML type ids (ggml.h, gguf.GGMLQuantizationType): what the Python side passes as `format`.
enum class WeightFormat : int {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

#define KV_FMT_INLINE inline __attribute__((always_inline))

KV_FMT_INLINE float half_to_float(const uint8_t* p) {
  _Float16 h;
  std::memcpy(&h, p, sizeof(h));
  return static_cast<float>(h);
}

KV_FMT_INLINE float bf16_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

// 32 values: d * (q - 8), q a nibble; low nibbles of qs[0..16) are values 0..15, high nibbles 16..31.
struct Q4_0 {
  static constexpr bool kRows = false;
  static constexpr int kValues = 32, kBytes = 18;
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    const float d = half_to_float(block);
    const uint8_t* qs = block + 2;
    for (int i = 0; i < 16; ++i) {
      out[i] = d * static_cast<float>(static_cast<int>(qs[i] & 0xF) - 8);
      out[i + 16] = d * static_cast<float>(static_cast<int>(qs[i] >> 4) - 8);
    }
  }
};

// 32 values: d * q + m.
struct Q4_1 {
  static constexpr bool kRows = false;
  static constexpr int kValues = 32, kBytes = 20;
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    const float d = half_to_float(block), m = half_to_float(block + 2);
    const uint8_t* qs = block + 4;
    for (int i = 0; i < 16; ++i) {
      out[i] = d * static_cast<float>(qs[i] & 0xF) + m;
      out[i + 16] = d * static_cast<float>(qs[i] >> 4) + m;
    }
  }
};

// 32 values: d * q, q a signed byte.
struct Q8_0 {
  static constexpr bool kRows = false;
  static constexpr int kValues = 32, kBytes = 34;
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    const float d = half_to_float(block);
    const int8_t* qs = reinterpret_cast<const int8_t*>(block + 2);
    for (int i = 0; i < 32; ++i) out[i] = d * static_cast<float>(qs[i]);
  }
};

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4).
KV_FMT_INLINE void k_scale_min(const uint8_t* scales, int j, float* scale, float* min) {
  uint8_t sc, m;
  if (j < 4) {
    sc = scales[j] & 63;
    m = scales[j + 4] & 63;
  } else {
    sc = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
    m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
  *scale = sc;
  *min = m;
}

// 256 values in 8 sub-blocks of 32: (d * scale_j) * q - dmin * min_j. Sub-blocks 2i and 2i+1 take the low
// and high nibbles of qs[32i..32i+32). Q5_K adds a fifth bit per value: bit j of qh[i] belongs to value i of
// sub-block j.
template <bool kFifthBit>
struct KQuant {
  static constexpr bool kRows = false;
  static constexpr int kValues = 256, kBytes = kFifthBit ? 176 : 144;
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    const float d = half_to_float(block), dmin = half_to_float(block + 2);
    const uint8_t* scales = block + 4;
    const uint8_t* qh = block + 16;
    const uint8_t* qs = block + (kFifthBit ? 48 : 16);
    for (int pair = 0; pair < 4; ++pair) {
      float sc_lo, m_lo, sc_hi, m_hi;
      k_scale_min(scales, 2 * pair, &sc_lo, &m_lo);
      k_scale_min(scales, 2 * pair + 1, &sc_hi, &m_hi);
      const float d_lo = d * sc_lo, off_lo = dmin * m_lo, d_hi = d * sc_hi, off_hi = dmin * m_hi;
      const uint8_t* q = qs + 32 * pair;
      float* o = out + 64 * pair;
      for (int i = 0; i < 32; ++i) {
        int lo = q[i] & 0xF, hi = q[i] >> 4;
        if constexpr (kFifthBit) {
          lo |= ((qh[i] >> (2 * pair)) & 1) << 4;
          hi |= ((qh[i] >> (2 * pair + 1)) & 1) << 4;
        }
        o[i] = d_lo * static_cast<float>(lo) - off_lo;
        o[i + 32] = d_hi * static_cast<float>(hi) - off_hi;
      }
    }
  }
};
using Q4_K = KQuant<false>;
using Q5_K = KQuant<true>;

// 256 values, two halves of 128: value 32s + i of half h is (ql nibble | 2 bits of qh) - 32, times
// d * scales[8h + 2s + i / 16].
struct Q6_K {
  static constexpr bool kRows = false;
  static constexpr int kValues = 256, kBytes = 210;
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
    const float d = half_to_float(block + 208);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* l = ql + 64 * h;
      const uint8_t* hb = qh + 32 * h;
      float* o = out + 128 * h;
      float ds[8];
      for (int s = 0; s < 8; ++s) ds[s] = d * static_cast<float>(scales[8 * h + s]);
      for (int i = 0; i < 32; ++i) {
        const int q0 = ((l[i] & 0xF) | (((hb[i] >> 0) & 3) << 4)) - 32;
        const int q1 = ((l[i + 32] & 0xF) | (((hb[i] >> 2) & 3) << 4)) - 32;
        const int q2 = ((l[i] >> 4) | (((hb[i] >> 4) & 3) << 4)) - 32;
        const int q3 = ((l[i + 32] >> 4) | (((hb[i] >> 6) & 3) << 4)) - 32;
        const int sub = i / 16;
        o[i] = ds[sub] * static_cast<float>(q0);
        o[i + 32] = ds[2 + sub] * static_cast<float>(q1);
        o[i + 64] = ds[4 + sub] * static_cast<float>(q2);
        o[i + 96] = ds[6 + sub] * static_cast<float>(q3);
      }
    }
  }
};

// Plain rows (float32 for types dequantized at load, f16, bf16), read 32 values at a time; a row's tail
// shorter than 32 is read value by value.
struct F32 {
  static constexpr bool kRows = true;
  static constexpr int kValues = 32, kBytes = 128;
  static KV_FMT_INLINE float value(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) { std::memcpy(out, block, kBytes); }
};

struct F16 {
  static constexpr bool kRows = true;
  static constexpr int kValues = 32, kBytes = 64;
  static KV_FMT_INLINE float value(const uint8_t* p) { return half_to_float(p); }
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    _Float16 h[32];
    std::memcpy(h, block, sizeof(h));
    for (int i = 0; i < 32; ++i) out[i] = static_cast<float>(h[i]);
  }
};

struct BF16 {
  static constexpr bool kRows = true;
  static constexpr int kValues = 32, kBytes = 64;
  static KV_FMT_INLINE float value(const uint8_t* p) { return bf16_to_float(p); }
  static KV_FMT_INLINE void dequantize(const uint8_t* block, float* out) {
    uint16_t bits[32];
    std::memcpy(bits, block, sizeof(bits));
    for (int i = 0; i < 32; ++i) {
      const uint32_t widened = static_cast<uint32_t>(bits[i]) << 16;
      std::memcpy(out + i, &widened, sizeof(float));
    }
  }
};

}  // namespace kvserve::cpu
