#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace kvserve::cpu {

KV_CLONES void silu_and_mul(float* out, const float* x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = x + r * 2 * d;
    const float* up = gate + d;
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

}  // namespace kvserve::cpu
