// bfloat16 <-> float32 one value at a time, in integer code each KV_CLONES caller vectorises: a bfloat16 is
// the top half of a float32, rounded to nearest with ties to even (what torch's conversions do).
#pragma once

#include <cstdint>

#include "simd.h"

namespace kvserve::cpu {

KV_INLINE float bf16_to_float(uint16_t value) { return from_bits(static_cast<uint32_t>(value) << 16); }

KV_INLINE uint16_t float_to_bf16(float value) {
  const uint32_t bits = to_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN: quiet
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The value a float32 result has once stored in a bfloat16 tensor.
KV_INLINE float round_to_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

}  // namespace kvserve::cpu
