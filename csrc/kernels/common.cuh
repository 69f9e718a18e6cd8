// Shared by the .cu files: dtype dispatch, 16-byte vector access, float conversions, launch checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../core/check.h"
#include "kernels.h"

namespace kvserve::kernels {

// Runs BODY with scalar_t bound to the CUDA type of `dtype`.
#define KV_DISPATCH_DTYPE(dtype, ...)                                        \
  [&] {                                                                      \
    switch (dtype) {                                                         \
      case ::kvserve::kernels::DType::kFloat32: {                            \
        using scalar_t = float;                                              \
        return __VA_ARGS__();                                                \
      }                                                                      \
      case ::kvserve::kernels::DType::kFloat16: {                            \
        using scalar_t = __half;                                             \
        return __VA_ARGS__();                                                \
      }                                                                      \
      case ::kvserve::kernels::DType::kBFloat16: {                           \
        using scalar_t = __nv_bfloat16;                                      \
        return __VA_ARGS__();                                                \
      }                                                                      \
    }                                                                        \
    throw ::kvserve::InvalidArgument("unsupported dtype code " +             \
                                     std::to_string(static_cast<int>(dtype))); \
  }()

// Throws with file:line when the last launch failed (bad configuration, no device, a sticky fault).
#define KV_CHECK_LAUNCH()                                                                     \
  do {                                                                                        \
    const cudaError_t err_ = cudaGetLastError();                                              \
    KV_CHECK(err_ == cudaSuccess, std::string("CUDA launch failed: ") + cudaGetErrorString(err_)); \
  } while (0)

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float(float v) { return v; }
template <>
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }

// Rounds a float to T's precision and back: where the torch reference rounds an intermediate to the
// activation dtype, the kernels do too, so results match it to the last bit or close.
template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float(from_float<T>(v)); }

// 16 bytes of T: the unit of every vectorised load and store (one LDG.128 / STG.128).
template <typename T>
struct alignas(16) Vec {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

template <typename T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) { return *reinterpret_cast<const Vec<T>*>(p); }

template <typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) { *reinterpret_cast<Vec<T>*>(p) = v; }

// kVec elements from p: one 16-byte access when kVec fills a Vec, else one scalar (kVec == 1).
template <int kVec, typename T>
__device__ __forceinline__ Vec<T> load(const T* p) {
  static_assert(kVec == 1 || kVec == Vec<T>::kSize, "kVec is 1 or a whole vector");
  if constexpr (kVec > 1) {
    return load_vec(p);
  } else {
    Vec<T> v;
    v.v[0] = *p;
    return v;
  }
}

template <int kVec, typename T>
__device__ __forceinline__ void store(T* p, const Vec<T>& v) {
  if constexpr (kVec > 1) {
    store_vec(p, v);
  } else {
    *p = v.v[0];
  }
}

// Sum over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace kvserve::kernels
