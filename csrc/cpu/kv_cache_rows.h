// The KV cache's element types on CPU and the conversions between them and the float32 the attention math
// uses: keys and values are narrowed once when written and widened a block at a time when read.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvserve::cpu {

// What the Python side passes as `cache_dtype` (ops/cpu_kernels.py CACHE_DTYPES).
enum class CacheDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Bytes of one cached value; throws std::invalid_argument for an id that is not a CacheDtype.
int64_t cache_element_bytes(int cache_dtype);

// out[r * n + i] = in[r * in_stride + i] as float32, for rows of n values of a 16-bit cache type.
void widen_rows(float* out, const uint16_t* in, CacheDtype dtype, int64_t rows, int64_t n, int64_t in_stride);

// out[i] = in[i] rounded to the nearest (ties to even) value of the 16-bit cache type, NaN kept NaN.
void narrow_row(uint16_t* out, const float* in, CacheDtype dtype, int64_t n);

// Writes n float32 values at element offset `at` of a cache of type dtype.
inline void store_cache_row(void* cache, CacheDtype dtype, int64_t at, const float* src, int64_t n) {
  if (dtype == CacheDtype::kFloat32) {
    std::memcpy(static_cast<float*>(cache) + at, src, static_cast<size_t>(n) * sizeof(float));
  } else {
    narrow_row(static_cast<uint16_t*>(cache) + at, src, dtype, n);
  }
}

// The conversions' instruction set: "avx512", "f16c" or "baseline" (KVSERVE_CPU_ISA=avx2|baseline caps it,
// as for the matmuls, so the tests run every path on one machine).
const char* kv_cache_rows_isa();

}  // namespace kvserve::cpu
