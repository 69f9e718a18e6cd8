// Decode attention over a paged KV cache of float32, float16 or bfloat16 values, with float32 math: a
// half-precision cache is widened a block (of one KV head) at a time into a buffer in L1, a float32 one is
// read in place. Work items are (request, KV head) pairs, split across OpenMP threads: torch's CPU ops and
// the matmuls (quant_matmul.cpp) run on the same runtime, so all share one pool.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"
#include "kv_cache_rows.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

struct DecodeArgs {
  float* out;
  const float* query;
  const void* kv_cache;
  CacheDtype dtype;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  int64_t heads, kv_heads, head_dim, num_slots, block_size, table_width, query_stride;
  float scale;
  int64_t sliding_window;
};

struct Workspace {
  std::vector<float> scores;  // [group, span]
  std::vector<float> rows;    // [block_size, head_dim]: one block of one KV head, widened
};

// Below this many multiply-adds a step is not worth waking the other threads for.
constexpr int64_t kMinWorkPerThread = 1 << 16;

KV_INLINE int64_t first_position(const DecodeArgs& a, int64_t seq_len) {
  return a.sliding_window > 0 ? std::max<int64_t>(0, seq_len - a.sliding_window) : 0;
}

// Calls body(p, row) for each position p in [first, seq_len) of a request, with KV head kvh's cached key (half
// 0) or value (half 1) at p as float32: read in place from a float32 cache, widened a block at a time into
// `buffer` otherwise.
template <class Body>
KV_INLINE void for_each_cached_row(const DecodeArgs& a, const int32_t* table, int half, int64_t first,
                                   int64_t seq_len, int64_t kvh, float* buffer, Body body) {
  const int64_t row = a.kv_heads * a.head_dim;
  for (int64_t p0 = first; p0 < seq_len;) {
    const int64_t block = p0 / a.block_size, p1 = std::min(seq_len, (block + 1) * a.block_size);
    const int64_t at = (half * a.num_slots + table[block] * a.block_size + p0 % a.block_size) * row + kvh * a.head_dim;
    const float* rows = buffer;
    int64_t stride = a.head_dim;
    if (a.dtype == CacheDtype::kFloat32) {
      rows = static_cast<const float*>(a.kv_cache) + at;
      stride = row;
    } else {
      widen_rows(buffer, static_cast<const uint16_t*>(a.kv_cache) + at, a.dtype, p1 - p0, a.head_dim, row);
    }
    for (int64_t p = p0; p < p1; ++p) body(p, rows + (p - p0) * stride);
    p0 = p1;
  }
}

// One request and KV head: one pass over the cached keys scores every query head of the group (a key row is
// loaded once for all of them), a softmax per head, then one pass over the values.
KV_CLONES void attend(const DecodeArgs& a, int64_t item, Workspace& ws) {
  const int64_t r = item / a.kv_heads, kvh = item % a.kv_heads;
  const int64_t group = a.heads / a.kv_heads, head_dim = a.head_dim;
  const int64_t seq_len = a.seq_lens[r];
  const int64_t first = first_position(a, seq_len);
  const int64_t span = seq_len - first;
  const int32_t* table = a.block_tables + r * a.table_width;
  const float* q = a.query + r * a.query_stride + kvh * group * head_dim;
  float* scores = ws.scores.data();
  // The lambdas are inlined, so their loops compile for the clone's instruction set.
  for_each_cached_row(a, table, 0, first, seq_len, kvh, ws.rows.data(),
                      [&](int64_t p, const float* k) __attribute__((always_inline)) {
                        for (int64_t g = 0; g < group; ++g) {
                          scores[g * span + (p - first)] = dot(q + g * head_dim, k, head_dim) * a.scale;
                        }
                      });
  for (int64_t g = 0; g < group; ++g) {
    float* s = scores + g * span;
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
  float* o = a.out + (r * a.heads + kvh * group) * head_dim;
  std::fill(o, o + group * head_dim, 0.0f);
  for_each_cached_row(a, table, 1, first, seq_len, kvh, ws.rows.data(),
                      [&](int64_t p, const float* v) __attribute__((always_inline)) {
                        for (int64_t g = 0; g < group; ++g) {
                          axpy(o + g * head_dim, scores[g * span + (p - first)], v, head_dim);
                        }
                      });
}

}  // namespace

void paged_attention_decode(float* out, const float* query, const void* kv_cache, int cache_dtype,
                            const int32_t* block_tables, const int32_t* seq_lens, int64_t reqs, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t num_blocks, int64_t block_size,
                            int64_t table_width, int64_t query_stride, float scale, int64_t sliding_window,
                            int num_threads) {
  cache_element_bytes(cache_dtype);  // throws for an unknown type
  const DecodeArgs a{out,      query,        kv_cache, static_cast<CacheDtype>(cache_dtype),
                     block_tables, seq_lens, heads,    kv_heads,
                     head_dim, num_blocks * block_size, block_size, table_width,
                     query_stride, scale,  sliding_window};
  int64_t max_span = 0, total_span = 0;
  for (int64_t r = 0; r < reqs; ++r) {
    const int64_t span = seq_lens[r] - first_position(a, seq_lens[r]);
    max_span = std::max(max_span, span);
    total_span += span;
  }
  const int64_t items = reqs * kv_heads;
  const int64_t useful = std::max<int64_t>(1, 2 * total_span * heads * head_dim / kMinWorkPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, items, useful})));
  const auto workspace = [&] {
    return Workspace{std::vector<float>(static_cast<size_t>(heads / kv_heads * max_span)),
                     std::vector<float>(static_cast<size_t>(block_size * head_dim))};
  };
  if (threads == 1) {
    Workspace ws = workspace();
    for (int64_t item = 0; item < items; ++item) attend(a, item, ws);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    Workspace ws = workspace();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) attend(a, item, ws);
  }
}

}  // namespace kvserve::cpu
