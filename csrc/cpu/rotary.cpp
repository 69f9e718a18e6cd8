#include "kernels.h"
#include "simd.h"

namespace kvserve::cpu {

KV_CLONES void rotary_neox(float* x, const float* cos, const float* sin, int64_t tokens, int64_t heads,
                           int64_t head_dim, int64_t rot_dim, int64_t token_stride) {
  const int64_t half = rot_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* x1 = x + t * token_stride + h * head_dim;
      float* x2 = x1 + half;
      for (int64_t i = 0; i < half; ++i) {
        // Rounded like torch's separate ops: (x1*c) - (x2*s), (x2*c) + (x1*s); no FMA contraction here.
        const float a = x1[i];
        const float b = x2[i];
        x1[i] = a * c[i] - b * s[i];
        x2[i] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace kvserve::cpu
