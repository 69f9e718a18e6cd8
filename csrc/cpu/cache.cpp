#include <cstring>
#include <vector>

#include "kernels.h"
#include "kv_cache_rows.h"

namespace kvserve::cpu {

void reshape_and_cache(void* kv_cache, int cache_dtype, const void* key, const void* value, int input_dtype,
                       const int64_t* slot_mapping, int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride,
                       int64_t value_stride) {
  const auto dtype = static_cast<CacheDtype>(cache_dtype);
  const auto input = static_cast<CacheDtype>(input_dtype);
  const int64_t cache_bytes = cache_element_bytes(cache_dtype), input_bytes = cache_element_bytes(input_dtype);
  std::vector<float> widened(input == CacheDtype::kFloat32 ? 0 : static_cast<size_t>(row));
  // Row `t` of `rows` (key or value) into the cache at element offset `at`: copied when the types agree, else
  // converted through float32 (what torch's `.to(cache dtype)` does).
  const auto store = [&](int64_t at, const void* rows, int64_t stride, int64_t t) {
    const char* src = static_cast<const char*>(rows) + t * stride * input_bytes;
    if (input == dtype) {
      std::memcpy(static_cast<char*>(kv_cache) + at * cache_bytes, src, static_cast<size_t>(row * cache_bytes));
    } else if (input == CacheDtype::kFloat32) {
      store_cache_row(kv_cache, dtype, at, reinterpret_cast<const float*>(src), row);
    } else {
      widen_rows(widened.data(), reinterpret_cast<const uint16_t*>(src), input, 1, row, row);
      store_cache_row(kv_cache, dtype, at, widened.data(), row);
    }
  };
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    store(slot * row, key, key_stride, t);
    store((num_slots + slot) * row, value, value_stride, t);
  }
}

}  // namespace kvserve::cpu
