#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

KV_CLONES void normalize_row(float* out, const float* x, const float* weight, int64_t hidden, float eps) {
  const float variance = sum_of_squares(x, hidden) / static_cast<float>(hidden);
  const float inv = 1.0f / std::sqrt(variance + eps);
  for (int64_t i = 0; i < hidden; ++i) out[i] = weight[i] * (x[i] * inv);
}

}  // namespace

void rms_norm(float* out, const float* x, const float* weight, int64_t rows, int64_t hidden, int64_t x_stride,
              float eps) {
  for (int64_t r = 0; r < rows; ++r) normalize_row(out + r * hidden, x + r * x_stride, weight, hidden, eps);
}

KV_CLONES void fused_add_rms_norm(float* out, float* residual, const float* x, const float* weight, int64_t rows,
                                  int64_t hidden, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    float* res = residual + r * hidden;
    const float* in = x + r * hidden;
    for (int64_t i = 0; i < hidden; ++i) res[i] = in[i] + res[i];
    normalize_row(out + r * hidden, res, weight, hidden, eps);
  }
}

}  // namespace kvserve::cpu
