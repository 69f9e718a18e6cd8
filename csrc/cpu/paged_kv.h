// Reading a paged KV cache [2, num_blocks, block_size, kv_heads, head_dim] (keys, then values) from the
// attention kernels: where a position's row is, and eight of its values widened to float32.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "avx2_math.h"
#include "kv_cache_rows.h"

namespace kvserve::cpu {

// The arguments of the attention kernels over a paged cache (kernels.h): queries [T, H, D] with rows
// query_stride apart; the cache [2, num_slots, KVH, D] of type dtype. query_start_loc (prefill only): the
// first query row of each request.
struct PagedAttentionArgs {
  float* out;
  const float* query;
  const void* kv_cache;
  CacheDtype dtype;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  const int32_t* query_start_loc;
  int64_t heads, kv_heads, head_dim, num_slots, block_size, table_width, query_stride;
  float scale;
  int64_t sliding_window;
};

// The first cached position a decode query at position seq_len - 1 attends to: all of them, or the last
// sliding_window when it is positive.
inline int64_t first_visible_position(int64_t seq_len, int64_t sliding_window) {
  return sliding_window > 0 ? std::max<int64_t>(0, seq_len - sliding_window) : 0;
}

// Element offset of the key (half 0) or value (half 1) at position p of the request whose block table is
// `table`, for KV head kvh.
inline int64_t slot_offset(const PagedAttentionArgs& a, const int32_t* table, int half, int64_t p, int64_t kvh) {
  return (half * a.num_slots + table[p / a.block_size] * a.block_size + p % a.block_size) * a.kv_heads * a.head_dim +
         kvh * a.head_dim;
}

// Eight cached values of type T at element `at` of the cache, widened to float32 (exactly).
template <CacheDtype T>
KV_AVX2 __m256 load8(const void* cache, int64_t at) {
  if constexpr (T == CacheDtype::kFloat32) {
    return _mm256_loadu_ps(static_cast<const float*>(cache) + at);
  } else {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(cache) + at));
    if constexpr (T == CacheDtype::kFloat16) return _mm256_cvtph_ps(bits);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));  // bfloat16: the high half
  }
}

}  // namespace kvserve::cpu
