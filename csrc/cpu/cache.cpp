#include <cstring>

#include "kernels.h"

namespace kvserve::cpu {

void reshape_and_cache(float* kv_cache, const float* key, const float* value, const int64_t* slot_mapping,
                       int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride) {
  float* keys = kv_cache;
  float* values = kv_cache + num_slots * row;
  const size_t bytes = static_cast<size_t>(row) * sizeof(float);
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    std::memcpy(keys + slot * row, key + t * key_stride, bytes);
    std::memcpy(values + slot * row, value + t * value_stride, bytes);
  }
}

}  // namespace kvserve::cpu
