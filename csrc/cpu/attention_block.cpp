#include "kernels.h"
#include "kv_cache_rows.h"
#include "row_ops.h"
#include "row_split.h"

namespace kvserve::cpu {
namespace {

KV_CLONES void prepare_tokens(float* qkv, const float* q_norm, const float* k_norm, const float* cos,
                              const float* sin, void* kv_cache, CacheDtype dtype, const int64_t* slot_mapping,
                              int64_t begin, int64_t end, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t rot_dim, int64_t num_slots, int64_t qkv_stride, float eps) {
  const int64_t row = kv_heads * head_dim;  // values per cached token
  const int64_t half = rot_dim / 2;
  for (int64_t t = begin; t < end; ++t) {
    float* q = qkv + t * qkv_stride;
    float* k = q + heads * head_dim;
    const float* v = k + row;
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* x = q + h * head_dim;
      if (q_norm != nullptr) normalize_row(x, x, q_norm, head_dim, eps);
      rotate_neox(x, c, s, rot_dim);
    }
    for (int64_t h = 0; h < kv_heads; ++h) {
      float* x = k + h * head_dim;
      if (k_norm != nullptr) normalize_row(x, x, k_norm, head_dim, eps);
      rotate_neox(x, c, s, rot_dim);
    }
    const int64_t slot = slot_mapping[t];
    store_cache_row(kv_cache, dtype, slot * row, k, row);
    store_cache_row(kv_cache, dtype, (num_slots + slot) * row, v, row);
  }
}

}  // namespace

void prepare_qkv(float* qkv, const float* q_norm, const float* k_norm, const float* cos, const float* sin,
                 void* kv_cache, int cache_dtype, const int64_t* slot_mapping, int64_t tokens, int64_t heads,
                 int64_t kv_heads, int64_t head_dim, int64_t rot_dim, int64_t num_slots, int64_t qkv_stride, float eps,
                 int num_threads) {
  cache_element_bytes(cache_dtype);  // throws for an unknown type
  const auto dtype = static_cast<CacheDtype>(cache_dtype);
  // Tokens are independent (each writes its own slot): a prompt's share out among the threads.
  split_rows(tokens, tokens * (heads + 2 * kv_heads) * head_dim, num_threads, [&](int64_t begin, int64_t end) {
    prepare_tokens(qkv, q_norm, k_norm, cos, sin, kv_cache, dtype, slot_mapping, begin, end, heads, kv_heads,
                   head_dim, rot_dim, num_slots, qkv_stride, eps);
  });
}

void decode_attention_block(float* out, float* qkv, const float* q_norm, const float* k_norm, const float* cos,
                            const float* sin, void* kv_cache, int cache_dtype, const int64_t* slot_mapping,
                            const int32_t* block_tables, const int32_t* seq_lens, int64_t reqs, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t rot_dim, int64_t num_blocks,
                            int64_t block_size, int64_t table_width, int64_t qkv_stride, float eps, float scale,
                            int64_t sliding_window, int num_threads) {
  prepare_qkv(qkv, q_norm, k_norm, cos, sin, kv_cache, cache_dtype, slot_mapping, reqs, heads, kv_heads, head_dim,
              rot_dim, num_blocks * block_size, qkv_stride, eps, num_threads);
  paged_attention_decode(out, qkv, kv_cache, cache_dtype, block_tables, seq_lens, reqs, heads, kv_heads, head_dim,
                         num_blocks, block_size, table_width, qkv_stride, scale, sliding_window, num_threads);
}

}  // namespace kvserve::cpu
