#include "kernels.h"
#include "kv_cache_rows.h"

namespace kvserve::cpu {

void reshape_and_cache(void* kv_cache, int cache_dtype, const float* key, const float* value,
                       const int64_t* slot_mapping, int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride,
                       int64_t value_stride) {
  cache_element_bytes(cache_dtype);  // throws for an unknown type
  const auto dtype = static_cast<CacheDtype>(cache_dtype);
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    store_cache_row(kv_cache, dtype, slot * row, key + t * key_stride, row);
    store_cache_row(kv_cache, dtype, (num_slots + slot) * row, value + t * value_stride, row);
  }
}

}  // namespace kvserve::cpu
