#include "kernels.h"
#include "row_ops.h"

namespace kvserve::cpu {

KV_CLONES void rms_norm(float* out, const float* x, const float* weight, int64_t rows, int64_t hidden,
                        int64_t x_stride, float eps) {
  for (int64_t r = 0; r < rows; ++r) normalize_row(out + r * hidden, x + r * x_stride, weight, hidden, eps);
}

KV_CLONES void fused_add_rms_norm(float* out, float* residual_out, const float* residual, const float* x,
                                  const float* weight, int64_t rows, int64_t hidden, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    float* res = residual_out + r * hidden;
    const float* res_in = residual + r * hidden;
    const float* in = x + r * hidden;
    for (int64_t i = 0; i < hidden; ++i) res[i] = in[i] + res_in[i];
    normalize_row(out + r * hidden, res, weight, hidden, eps);
  }
}

}  // namespace kvserve::cpu
