#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace kvserve::cpu {

// For each request and KV head, one pass over the cached keys scores every query head of the group (the
// key row is loaded once for all of them), a softmax per head, then one pass over the values.
KV_CLONES void paged_attention_decode(float* out, const float* query, const float* kv_cache,
                                      const int32_t* block_tables, const int32_t* seq_lens, int64_t reqs,
                                      int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
                                      int64_t block_size, int64_t table_width, int64_t query_stride, float scale,
                                      int64_t sliding_window) {
  const int64_t group = heads / kv_heads;
  const int64_t row = kv_heads * head_dim;  // floats per cached token
  const float* keys = kv_cache;
  const float* values = kv_cache + num_blocks * block_size * row;
  std::vector<float> scores;
  for (int64_t r = 0; r < reqs; ++r) {
    const int64_t seq_len = seq_lens[r];
    const int64_t first = sliding_window > 0 ? std::max<int64_t>(0, seq_len - sliding_window) : 0;
    const int64_t span = seq_len - first;
    const int32_t* table = block_tables + r * table_width;
    scores.assign(static_cast<size_t>(group * span), 0.0f);
    for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
      const float* q = query + r * query_stride + kvh * group * head_dim;
      for (int64_t p = first; p < seq_len; ++p) {
        const float* k = keys + (static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size) * row +
                         kvh * head_dim;
        for (int64_t g = 0; g < group; ++g) scores[g * span + (p - first)] = dot(q + g * head_dim, k, head_dim) * scale;
      }
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * span;
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < span; ++i) max_score = std::max(max_score, s[i]);
        float total = 0.0f;
        for (int64_t i = 0; i < span; ++i) {
          s[i] = std::exp(s[i] - max_score);
          total += s[i];
        }
        const float inv = 1.0f / total;
        for (int64_t i = 0; i < span; ++i) s[i] *= inv;
      }
      float* o = out + (r * heads + kvh * group) * head_dim;
      std::fill(o, o + group * head_dim, 0.0f);
      for (int64_t p = first; p < seq_len; ++p) {
        const float* v = values + (static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size) * row +
                         kvh * head_dim;
        for (int64_t g = 0; g < group; ++g) axpy(o + g * head_dim, scores[g * span + (p - first)], v, head_dim);
      }
    }
  }
}

}  // namespace kvserve::cpu
