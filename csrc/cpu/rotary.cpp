#include "kernels.h"
#include "row_ops.h"

namespace kvserve::cpu {

KV_CLONES void rotary_neox(float* x, const float* cos, const float* sin, int64_t tokens, int64_t heads,
                           int64_t head_dim, int64_t rot_dim, int64_t token_stride) {
  const int64_t half = rot_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) rotate_neox(x + t * token_stride + h * head_dim, cos + t * half, sin + t * half, rot_dim);
  }
}

}  // namespace kvserve::cpu
