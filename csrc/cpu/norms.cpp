#include "bf16.h"
#include "kernels.h"
#include "row_ops.h"
#include "row_split.h"

namespace kvserve::cpu {
namespace {

// Rows of the bfloat16 norms, rounded as torch's ops on bfloat16 tensors round: the residual sum (when
// `residual` is given; written to residual_out), then x / sqrt(mean(x^2) + eps) computed in float32 and
// rounded, then its product with the weight, rounded.
KV_CLONES void rms_norm_bf16_rows(uint16_t* out, uint16_t* residual_out, const uint16_t* residual,
                                  const uint16_t* x, const uint16_t* weight, int64_t begin, int64_t end,
                                  int64_t hidden, int64_t x_stride, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const uint16_t* in = x + r * x_stride;
    if (residual != nullptr) {
      uint16_t* sum = residual_out + r * hidden;
      const uint16_t* other = residual + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) sum[i] = float_to_bf16(bf16_to_float(in[i]) + bf16_to_float(other[i]));
      in = sum;
    }
    float partial[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= hidden; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) partial[l] += bf16_to_float(in[i + l]) * bf16_to_float(in[i + l]);
    }
    float squares = fold(partial);
    for (; i < hidden; ++i) squares += bf16_to_float(in[i]) * bf16_to_float(in[i]);
    const float inv = 1.0f / std::sqrt(squares / static_cast<float>(hidden) + eps);
    uint16_t* o = out + r * hidden;
    for (i = 0; i < hidden; ++i) {
      o[i] = float_to_bf16(bf16_to_float(weight[i]) * round_to_bf16(bf16_to_float(in[i]) * inv));
    }
  }
}

KV_CLONES void rms_norm_rows(float* out, const float* x, const float* weight, int64_t begin, int64_t end,
                             int64_t hidden, int64_t x_stride, float eps) {
  for (int64_t r = begin; r < end; ++r) normalize_row(out + r * hidden, x + r * x_stride, weight, hidden, eps);
}

KV_CLONES void fused_add_rms_norm_rows(float* out, float* residual_out, const float* residual, const float* x,
                                       const float* weight, int64_t begin, int64_t end, int64_t hidden, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    float* res = residual_out + r * hidden;
    const float* res_in = residual + r * hidden;
    const float* in = x + r * hidden;
    for (int64_t i = 0; i < hidden; ++i) res[i] = in[i] + res_in[i];
    normalize_row(out + r * hidden, res, weight, hidden, eps);
  }
}

}  // namespace

void rms_norm(float* out, const float* x, const float* weight, int64_t rows, int64_t hidden, int64_t x_stride,
              float eps, int num_threads) {
  split_rows(rows, rows * hidden, num_threads, [&](int64_t begin, int64_t end) {
    rms_norm_rows(out, x, weight, begin, end, hidden, x_stride, eps);
  });
}

void fused_add_rms_norm(float* out, float* residual_out, const float* residual, const float* x, const float* weight,
                        int64_t rows, int64_t hidden, float eps, int num_threads) {
  split_rows(rows, rows * hidden, num_threads, [&](int64_t begin, int64_t end) {
    fused_add_rms_norm_rows(out, residual_out, residual, x, weight, begin, end, hidden, eps);
  });
}

void rms_norm_bf16(uint16_t* out, const uint16_t* x, const uint16_t* weight, int64_t rows, int64_t hidden,
                   int64_t x_stride, float eps, int num_threads) {
  split_rows(rows, rows * hidden, num_threads, [&](int64_t begin, int64_t end) {
    rms_norm_bf16_rows(out, nullptr, nullptr, x, weight, begin, end, hidden, x_stride, eps);
  });
}

void fused_add_rms_norm_bf16(uint16_t* out, uint16_t* residual_out, const uint16_t* residual, const uint16_t* x,
                             const uint16_t* weight, int64_t rows, int64_t hidden, float eps, int num_threads) {
  split_rows(rows, rows * hidden, num_threads, [&](int64_t begin, int64_t end) {
    rms_norm_bf16_rows(out, residual_out, residual, x, weight, begin, end, hidden, hidden, eps);
  });
}

}  // namespace kvserve::cpu
