// Per-row building blocks shared by the single-op kernels and the fused ones, so that a fused kernel
// rounds exactly like the ops it replaces. Always inlined: each KV_CLONES caller compiles them for its own
// instruction set.
#pragma once

#include <cmath>
#include <cstdint>

#include "simd.h"

namespace kvserve::cpu {

// out = weight * (x / sqrt(mean(x^2) + eps)); out may alias x.
KV_INLINE void normalize_row(float* out, const float* x, const float* weight, int64_t n, float eps) {
  const float variance = sum_of_squares(x, n) / static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(variance + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

// Rotates the first rot_dim dims of one head in place, GPT-NeoX style (halves [0, rot/2) and [rot/2, rot)).
KV_INLINE void rotate_neox(float* x, const float* cos, const float* sin, int64_t rot_dim) {
  const int64_t half = rot_dim / 2;
  float* x2 = x + half;
  for (int64_t i = 0; i < half; ++i) {
    // Rounded like torch's separate ops: (x1*c) - (x2*s), (x2*c) + (x1*s); no FMA contraction here.
    const float a = x[i];
    const float b = x2[i];
    x[i] = a * cos[i] - b * sin[i];
    x2[i] = b * cos[i] + a * sin[i];
  }
}

}  // namespace kvserve::cpu
