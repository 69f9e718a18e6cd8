// dynamic_quantize: one block per row finds the row's absmax, then writes its scale and quantized values.
#include <cuda_fp8.h>

#include "../gemm/gemm.h"
#include "../common.cuh"

namespace kvserve::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float block_max(float v, float* shared) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? shared[lane] : 0.f;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

struct Fp8 {
  using type = __nv_fp8_storage_t;
  static constexpr float kMax = 448.f;
  __device__ static type quantize(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
};

struct Int8 {
  using type = int8_t;
  static constexpr float kMax = 127.f;
  __device__ static type quantize(float v) {
    return static_cast<int8_t>(min(max(__float2int_rn(v), -128), 127));
  }
};

template <typename T, typename Q>
__global__ void __launch_bounds__(kThreads) dynamic_quantize_kernel(typename Q::type* __restrict__ out,  // [rows, cols]
                                                                    float* __restrict__ scales,          // [rows]
                                                                    const T* __restrict__ x,  // [rows, cols]
                                                                    int64_t cols, int64_t x_stride) {
  __shared__ float shared[kThreads / 32];
  const T* row = x + blockIdx.x * x_stride;
  float absmax = 0.f;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) absmax = fmaxf(absmax, fabsf(to_float(row[i])));
  absmax = block_max(absmax, shared);
  // Division, not a reciprocal product: the reference divides, and both must round alike.
  const float scale = absmax > 0.f ? absmax / Q::kMax : 1.f;
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  typename Q::type* out_row = out + blockIdx.x * cols;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) out_row[i] = Q::quantize(to_float(row[i]) / scale);
}

}  // namespace

void dynamic_quantize(Operand operand, DType in_dtype, void* out, float* scales, const void* x, int64_t rows,
                      int64_t cols, int64_t x_stride, uintptr_t stream) {
  KV_REQUIRE(operand == Operand::kFloat8E4M3 || operand == Operand::kInt8,
             "dynamic_quantize: the target must be fp8 or int8");
  KV_REQUIRE(rows >= 0 && cols > 0 && x_stride >= cols, "dynamic_quantize: bad shape or stride");
  KV_REQUIRE(rows <= 0x7fffffff, "dynamic_quantize: too many rows for one launch");
  if (rows == 0) return;
  KV_DISPATCH_DTYPE(in_dtype, [&] {
    const auto* in = static_cast<const scalar_t*>(x);
    if (operand == Operand::kFloat8E4M3) {
      dynamic_quantize_kernel<scalar_t, Fp8><<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
          static_cast<Fp8::type*>(out), scales, in, cols, x_stride);
    } else {
      dynamic_quantize_kernel<scalar_t, Int8><<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
          static_cast<Int8::type*>(out), scales, in, cols, x_stride);
    }
    KV_CHECK_LAUNCH();
  });
}

}  // namespace kvserve::kernels
