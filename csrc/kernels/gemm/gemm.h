// Matrix products for linear layers: out[M, N] = a[M, K] @ b[N, K]^T (+ bias), torch-free and
// CUDA-header-free. `b` is a weight in torch's [out_features, in_features] layout, so both operands are
// K-major (what wgmma needs for 8-bit types). All matrices are contiguous; a tile configuration is chosen by
// name (gemm_configs lists them; kvserve.ops.gemm_dispatch picks one per problem size from the tuned table).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../kernels.h"

namespace kvserve::kernels {

// Element type of the GEMM's a and b operands.
enum class Operand : int { kFloat16 = 1, kBFloat16 = 2, kFloat8E4M3 = 3, kInt8 = 4 };

// Names of the configurations compiled for these operand and output types that run on a device of compute
// capability `sm` (major * 10 + minor), best default first; empty when none does.
std::vector<std::string> gemm_configs(Operand operand, DType out_dtype, int sm);

// out = a @ b^T + bias for 16-bit a and b of the output's dtype, accumulated in float32.
void gemm(DType dtype,
          void* out,          // [M, N]
          const void* a,      // [M, K]
          const void* b,      // [N, K]
          const void* bias,   // [N] or null
          int64_t m, int64_t n, int64_t k, const std::string& config, uintptr_t stream);

// out = a_scale * b_scale * (a @ b^T) + bias for 8-bit a and b (fp8 e4m3 or int8), accumulated in float32
// (int32 for int8) and scaled in float32 before the single rounding to out_dtype (float16 or bfloat16).
void scaled_mm(Operand operand, DType out_dtype,
               void* out,              // [M, N]
               const void* a,          // [M, K]
               const void* b,          // [N, K]
               const float* a_scale,   // [M] when a_scale_per_row, else [1]
               const float* b_scale,   // [N]
               const void* bias,       // [N] of out_dtype, or null
               bool a_scale_per_row, int64_t m, int64_t n, int64_t k, const std::string& config, uintptr_t stream);

// Dynamic symmetric per-row quantization to fp8 e4m3 or int8 (activations per token): scales[r] = absmax of
// row r / the type's max (1 for an all-zero row), out[r] = round(x[r] / scales[r]) saturated to the type's
// range, rounding to nearest even as ops.reference's quantization does.
void dynamic_quantize(Operand operand, DType in_dtype,
                      void* out,           // [rows, cols]
                      float* scales,       // [rows]
                      const void* x,       // [rows, cols], row stride x_stride
                      int64_t rows, int64_t cols, int64_t x_stride, uintptr_t stream);

}  // namespace kvserve::kernels
