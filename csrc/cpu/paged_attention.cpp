// Decode attention over a paged KV cache of float32, float16 or bfloat16 values, with float32 math. Work items
// are (request, KV head) pairs, split across OpenMP threads: torch's CPU ops and the matmuls
// (quant_matmul.cpp) run on the same runtime, so all share one pool.
//
// With AVX2+FMA+F16C (and a head size a multiple of 32) an item runs in registers (`avx2::attend`): cached
// values are widened eight at a time as they are loaded, eight keys are scored at once (their partial sums
// folded together, not one horizontal sum per key), the softmax's exp is vectorised, and the output rows stay
// in registers across the values. Elsewhere a half-precision cache is widened a block (of one KV head) at a
// time into a buffer in L1, a float32 one is read in place, and the loops are left to the compiler.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "avx2_math.h"
#include "cpu_isa.h"
#include "kernels.h"
#include "kv_cache_rows.h"
#include "paged_kv.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

using DecodeArgs = PagedAttentionArgs;

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

namespace avx2 {

// The eight sums of v[0..8)'s lanes, as one vector (v[j]'s sum in lane j).
KV_AVX2 __m256 lane_sums(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

template <CacheDtype T>
constexpr int64_t kElementBytes = T == CacheDtype::kFloat32 ? 4 : 2;

// Asks for `bytes` of each of a block's rows from element `at` on, ahead of their use: blocks are scattered,
// so the hardware's prefetchers cannot see the next one coming, and a head's part of a row is a few cache
// lines a whole row apart. Into L2, not L1: with a cache larger than L3, prefetching into L1 gained a quarter
// and into L2 half (bfloat16, 32 × 192 context: 520 -> 255 µs a layer); a block's worth of L1 prefetches
// holds the core's few line-fill buffers while the loads it should overlap wait.
template <CacheDtype T>
KV_AVX2 void prefetch_rows(const DecodeArgs& a, int64_t at, int64_t rows, int64_t bytes) {
  const char* p = static_cast<const char*>(a.kv_cache) + at * kElementBytes<T>;
  const int64_t row_bytes = a.kv_heads * a.head_dim * kElementBytes<T>;
  for (int64_t r = 0; r < rows; ++r, p += row_bytes) {
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  }
}

// How many blocks ahead of the one being read the next rows are asked for.
constexpr int64_t kBlocksAhead = 2;

// Prefetches the rows of the block kBlocksAhead after the one holding p0 (of a head's column range from
// `column`, `bytes` long), and at the first block of a pass the blocks before that one too.
template <CacheDtype T>
KV_AVX2 void prefetch_ahead(const DecodeArgs& a, const int32_t* table, int half, int64_t p0, int64_t first,
                            int64_t seq_len, int64_t kvh, int64_t column, int64_t bytes) {
  const int64_t block = p0 / a.block_size;
  for (int64_t b = p0 == first ? block + 1 : block + kBlocksAhead; b <= block + kBlocksAhead; ++b) {
    const int64_t start = b * a.block_size;
    if (start >= seq_len) return;
    prefetch_rows<T>(a, slot_offset(a, table, half, start, kvh) + column, std::min(a.block_size, seq_len - start),
                     bytes);
  }
}

// scores[g * span + i] = scale * q_g · key(first + i), eight keys at a time within each block.
template <CacheDtype T>
KV_AVX2 void score_keys(const DecodeArgs& a, const int32_t* table, int64_t first, int64_t seq_len, int64_t kvh,
                        const float* q, int64_t group, float* scores) {
  const int64_t span = seq_len - first, row = a.kv_heads * a.head_dim, chunks = a.head_dim / 8;
  const __m256 scale = _mm256_set1_ps(a.scale);
  for (int64_t p0 = first; p0 < seq_len;) {
    const int64_t p1 = std::min(seq_len, (p0 / a.block_size + 1) * a.block_size);  // this block's end
    const int64_t base = slot_offset(a, table, 0, p0, kvh);
    prefetch_ahead<T>(a, table, 0, p0, first, seq_len, kvh, 0, a.head_dim * kElementBytes<T>);
    for (int64_t p = p0; p < p1; p += 8) {
      const int64_t n = std::min<int64_t>(8, p1 - p);
      int64_t at[8];
      for (int64_t j = 0; j < 8; ++j) at[j] = base + (p - p0 + (j < n ? j : 0)) * row;  // past n: a repeat
      for (int64_t g = 0; g < group; ++g) {
        const float* qg = q + g * a.head_dim;
        __m256 acc[8];
        for (__m256& v : acc) v = _mm256_setzero_ps();
        for (int64_t c = 0; c < chunks; ++c) {
          const __m256 qv = _mm256_loadu_ps(qg + 8 * c);
          for (int64_t j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load8<T>(a.kv_cache, at[j] + 8 * c), acc[j]);
        }
        const __m256 s = _mm256_mul_ps(lane_sums(acc), scale);
        float* out = scores + g * span + (p - first);
        if (n == 8) {
          _mm256_storeu_ps(out, s);
        } else {
          alignas(32) float lanes[8];
          _mm256_store_ps(lanes, s);
          std::copy(lanes, lanes + n, out);
        }
      }
    }
    p0 = p1;
  }
}

// s[0..n) = softmax(s[0..n)) in place.
KV_AVX2 void softmax(float* s, int64_t n) {
  __m256 top = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(s + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  float max_score = *std::max_element(lanes, lanes + 8);
  for (int64_t t = i; t < n; ++t) max_score = std::max(max_score, s[t]);
  const __m256 shift = _mm256_set1_ps(max_score);
  __m256 total = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), shift));
    _mm256_storeu_ps(s + i, e);
    total = _mm256_add_ps(total, e);
  }
  _mm256_store_ps(lanes, total);
  float sum = fold(lanes);
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - max_score);
    sum += s[i];
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), inv));
  for (; i < n; ++i) s[i] *= 1.0f / sum;
}

// o_g[c0 * 8, c0 * 8 + 32) = Σ_i p_g[i] value(first + i)[...] for heads g0..g0+G: 4G accumulators in registers.
template <CacheDtype T, int G>
KV_AVX2 void weigh_values(const DecodeArgs& a, const int32_t* table, int64_t first, int64_t seq_len, int64_t kvh,
                          const float* probs, int64_t g0, int64_t c0, float* o) {
  const int64_t span = seq_len - first, row = a.kv_heads * a.head_dim;
  __m256 acc[G][4];
  for (auto& head : acc) {
    for (__m256& v : head) v = _mm256_setzero_ps();
  }
  for (int64_t p0 = first; p0 < seq_len;) {
    const int64_t p1 = std::min(seq_len, (p0 / a.block_size + 1) * a.block_size);
    int64_t at = slot_offset(a, table, 1, p0, kvh) + 8 * c0;
    prefetch_ahead<T>(a, table, 1, p0, first, seq_len, kvh, 8 * c0, 32 * kElementBytes<T>);
    for (int64_t p = p0; p < p1; ++p, at += row) {
      __m256 v[4];
      for (int c = 0; c < 4; ++c) v[c] = load8<T>(a.kv_cache, at + 8 * c);
      for (int g = 0; g < G; ++g) {
        const __m256 weight = _mm256_broadcast_ss(probs + (g0 + g) * span + (p - first));
        for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_fmadd_ps(weight, v[c], acc[g][c]);
      }
    }
    p0 = p1;
  }
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) _mm256_storeu_ps(o + (g0 + g) * a.head_dim + 8 * (c0 + c), acc[g][c]);
  }
}

template <CacheDtype T>
__attribute__((target("avx2,fma,f16c"))) void attend(const DecodeArgs& a, int64_t item, Workspace& ws) {
  const int64_t r = item / a.kv_heads, kvh = item % a.kv_heads;
  const int64_t group = a.heads / a.kv_heads, seq_len = a.seq_lens[r];
  const int64_t first = first_position(a, seq_len), span = seq_len - first;
  const int32_t* table = a.block_tables + r * a.table_width;
  float* scores = ws.scores.data();
  score_keys<T>(a, table, first, seq_len, kvh, a.query + r * a.query_stride + kvh * group * a.head_dim, group,
                scores);
  for (int64_t g = 0; g < group; ++g) softmax(scores + g * span, span);
  float* o = a.out + (r * a.heads + kvh * group) * a.head_dim;
  for (int64_t c0 = 0; c0 < a.head_dim / 8; c0 += 4) {
    int64_t g0 = 0;
    for (; g0 + 2 <= group; g0 += 2) weigh_values<T, 2>(a, table, first, seq_len, kvh, scores, g0, c0, o);
    if (g0 < group) weigh_values<T, 1>(a, table, first, seq_len, kvh, scores, g0, c0, o);
  }
}

}  // namespace avx2

using AttendFn = void (*)(const DecodeArgs&, int64_t, Workspace&);

// The AVX2 kernel for this cache type where the CPU and head size allow it, else the portable one.
AttendFn attend_for(const DecodeArgs& a) {
  static const bool has_avx2 = detect_isa() != Isa::kBaseline;
  if (!has_avx2 || a.head_dim % 32 != 0) return attend;
  switch (a.dtype) {
    case CacheDtype::kFloat32:
      return avx2::attend<CacheDtype::kFloat32>;
    case CacheDtype::kFloat16:
      return avx2::attend<CacheDtype::kFloat16>;
    default:
      return avx2::attend<CacheDtype::kBFloat16>;
  }
}

}  // namespace

void paged_attention_decode(float* out, const float* query, const void* kv_cache, int cache_dtype,
                            const int32_t* block_tables, const int32_t* seq_lens, int64_t reqs, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t num_blocks, int64_t block_size,
                            int64_t table_width, int64_t query_stride, float scale, int64_t sliding_window,
                            int num_threads) {
  cache_element_bytes(cache_dtype);  // throws for an unknown type
  const DecodeArgs a{out,      query,    kv_cache,   static_cast<CacheDtype>(cache_dtype), block_tables,
                     seq_lens, nullptr,  heads,      kv_heads, head_dim, num_blocks * block_size, block_size,
                     table_width, query_stride, scale, sliding_window};
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
  const AttendFn run = attend_for(a);
  if (threads == 1) {
    Workspace ws = workspace();
    for (int64_t item = 0; item < items; ++item) run(a, item, ws);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    Workspace ws = workspace();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) run(a, item, ws);
  }
}

}  // namespace kvserve::cpu
