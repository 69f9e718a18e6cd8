// Decode attention over a paged KV cache of float32, float16 or bfloat16 values, with float32 math. Work items
// are a request's KV heads (all of them when there are enough requests to keep every thread busy, a share of
// them otherwise), claimed one at a time by up to num_threads OpenMP threads: torch's CPU ops and the matmuls
// (quant_matmul.cpp) run on the same runtime, so all share one pool.
//
// Reading the cache is the cost of a step with many requests (a float32 cache of 32 requests x 192 tokens is
// 12.6 MB a layer of bench_throughput's Llama), so each thread prefetches the rows it is about to read, across
// blocks, passes and items (ChunkStream), a little at a time among the arithmetic.
//
// With AVX2+FMA+F16C (and a head size a multiple of 32) an item runs in registers (`avx2::attend`): cached
// values are widened eight at a time as they are loaded, eight keys are scored at once (their partial sums
// folded together, not one horizontal sum per key), the softmax's exp is vectorised, and the output rows stay
// in registers across a block's values. Elsewhere a half-precision cache is widened a block (of one KV head)
// at a time into a buffer in L1, a float32 one is read in place, and the loops are left to the compiler.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
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
  std::vector<float> scores;  // [query heads of the item, span]
  std::vector<float> rows;    // [block_size, head_dim]: one block of one KV head, widened
};

// Below this many multiply-adds a step is not worth waking the other threads for.
constexpr int64_t kMinWorkPerThread = 1 << 16;

// How far ahead of its reads a thread prefetches: 8 KB ran at 17-21 GB/s from DRAM, 16 KB at 23-28, 32 KB at
// 29-31, 64 KB at 30-34 and 128 KB at 29-32 (float32, 32 requests x 192 tokens, 8 layers).
constexpr int64_t kPrefetchBytes = 64 << 10;

// A step that reads less than this from the cache is not prefetched: the rows are likely in L2 already (a
// small model's cache), where the prefetches cost time of their own (the 1.6M-parameter model's one-stream
// token took 0.94 ms with them against 0.87 without).
constexpr int64_t kMinPrefetchedBytes = 1 << 20;

// A unit of work: request r's KV heads [h0, h1).
struct Item {
  int64_t r, h0, h1;
};

// One thread's items and the cache rows they read, in reading order: for each item, its keys block by block
// (a block's rows of the item's heads), then its values. Items are claimed one at a time from a counter all
// threads share, so a thread held up (by the event loop's, say) is not waited for; the prefetcher claims them
// ahead of the reader, so its stream runs on across items.
//
// Blocks are scattered, so the hardware's prefetchers cannot see the next one coming. Into L2, not L1: with a
// cache larger than L3, prefetching into L1 gained a quarter and into L2 half (bfloat16, 32 x 192 context:
// 520 -> 255 us a layer); L1 prefetches hold the core's few line-fill buffers while the loads they should
// overlap wait.
class ChunkStream {
 public:
  ChunkStream(const DecodeArgs& a, std::atomic<int64_t>& next_item, int64_t items, int64_t splits, bool prefetch)
      : prefetch_(prefetch),
        a_(a),
        next_item_(next_item),
        items_(items),
        splits_(splits),
        element_bytes_(cache_element_bytes(static_cast<int>(a.dtype))) {}

  // The next item to attend; false when none is left.
  bool next(Item* item) {
    if (read_ == claimed_.size() && !claim()) return false;
    *item = claimed_[read_++];
    return true;
  }

  // The reader starts on its next `bytes` of the stream: prefetch up to kPrefetchBytes beyond them, a line
  // for each line read, so the prefetches stay spread among the loads and arithmetic. (Issued a block at a
  // time they stalled the loop: compute and memory then took turns, 19 GB/s instead of 30+.)
  KV_INLINE void consumed(int64_t bytes) {
    if (!prefetch_) return;
    ahead_ -= bytes;
    while (ahead_ < kPrefetchBytes) {
      if (offset_ == bytes_per_row_ && !next_row()) return;
      _mm_prefetch(row_ + offset_, _MM_HINT_T1);
      offset_ += 64;
      ahead_ += 64;
    }
  }

 private:
  // Moves the prefetcher to its stream's next row (claiming the next item when it has walked them all); false
  // when the stream has ended.
  bool next_row() {
    if (rows_left_ > 0) {
      --rows_left_;
      row_ += a_.kv_heads * a_.head_dim * element_bytes_;
      offset_ = 0;
      return true;
    }
    while (true) {
      if (walk_ == claimed_.size() && !claim()) return false;
      const Item& item = claimed_[walk_];
      const int64_t seq_len = a_.seq_lens[item.r];
      if (position_ < 0) position_ = first_visible_position(seq_len, a_.sliding_window);
      if (position_ >= seq_len) {  // this pass is walked: on to the values, or to the next item
        position_ = -1;
        half_ ^= 1;
        if (half_ == 0) ++walk_;
        continue;
      }
      const int64_t end = std::min(seq_len, (position_ / a_.block_size + 1) * a_.block_size);
      const int64_t at = slot_offset(a_, a_.block_tables + item.r * a_.table_width, half_, position_, item.h0);
      row_ = static_cast<const char*>(a_.kv_cache) + at * element_bytes_;
      bytes_per_row_ = (item.h1 - item.h0) * a_.head_dim * element_bytes_;
      offset_ = 0;
      rows_left_ = end - position_ - 1;
      position_ = end;
      return true;
    }
  }

  bool claim() {
    const int64_t index = next_item_.fetch_add(1, std::memory_order_relaxed);
    if (index >= items_) return false;
    const int64_t r = index / splits_, share = index % splits_;
    claimed_.push_back({r, share * a_.kv_heads / splits_, (share + 1) * a_.kv_heads / splits_});
    return true;
  }

  const bool prefetch_;
  const DecodeArgs& a_;
  std::atomic<int64_t>& next_item_;
  const int64_t items_, splits_, element_bytes_;
  std::vector<Item> claimed_;
  size_t read_ = 0;          // the reader's next item in claimed_
  size_t walk_ = 0;          // the prefetcher's item in claimed_,
  int half_ = 0;             // its pass (keys 0, values 1),
  int64_t position_ = -1;    // the position after its block's rows (-1: the pass's first),
  const char* row_ = nullptr;  // the row it is in,
  int64_t rows_left_ = 0;    // the rows of the block after that one,
  int64_t offset_ = 0, bytes_per_row_ = 0;  // and its place in the row's bytes of the item's heads
  int64_t ahead_ = 0;        // bytes prefetched and not yet read
};

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
KV_CLONES void attend_head(const DecodeArgs& a, int64_t r, int64_t kvh, Workspace& ws) {
  const int64_t group = a.heads / a.kv_heads, head_dim = a.head_dim;
  const int64_t seq_len = a.seq_lens[r];
  const int64_t first = first_visible_position(seq_len, a.sliding_window);
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

void attend(const DecodeArgs& a, const Item& item, Workspace& ws, ChunkStream&) {
  for (int64_t kvh = item.h0; kvh < item.h1; ++kvh) attend_head(a, item.r, kvh, ws);
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

// Scores of one block's rows of one KV head: scores[g * span + i] = scale * q_g · key(row i), i < rows, eight keys
// at a time (`base`: the element offset of the block's first row for that head). Each slice of eight values of
// eight rows read is reported to the stream, so its prefetches are spread among the arithmetic, not in bursts.
template <CacheDtype T>
KV_AVX2 void score_block(const DecodeArgs& a, int64_t base, int64_t rows, const float* q, int64_t group,
                         float* scores, int64_t span, ChunkStream& stream) {
  const int64_t row = a.kv_heads * a.head_dim, chunks = a.head_dim / 8;
  const __m256 scale = _mm256_set1_ps(a.scale);
  for (int64_t i = 0; i < rows; i += 8) {
    const int64_t n = std::min<int64_t>(8, rows - i);
    int64_t at[8];
    for (int64_t j = 0; j < 8; ++j) at[j] = base + (i + (j < n ? j : 0)) * row;  // past n: a repeat
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * a.head_dim;
      __m256 acc[8];
      for (__m256& v : acc) v = _mm256_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c) {
        if (g == 0) stream.consumed(n * 8 * kElementBytes<T>);
        const __m256 qv = _mm256_loadu_ps(qg + 8 * c);
        for (int64_t j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load8<T>(a.kv_cache, at[j] + 8 * c), acc[j]);
      }
      const __m256 s = _mm256_mul_ps(lane_sums(acc), scale);
      float* out = scores + g * span + i;
      if (n == 8) {
        _mm256_storeu_ps(out, s);
      } else {
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, s);
        std::copy(lanes, lanes + n, out);
      }
    }
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

// o_g[0, 32) += Σ_i p_g[i] value(row i)[0, 32) for heads g < G over one block's rows, in registers across the
// rows (`base`: the element offset of the block's first row at the first of those columns; o_g starts from zero
// when `fresh`): position by position in order, the sums one pass over the whole context would make.
template <CacheDtype T, int G>
KV_AVX2 void weigh_block(const DecodeArgs& a, int64_t base, int64_t rows, const float* probs, int64_t span,
                         float* o, bool fresh, ChunkStream* stream) {
  const int64_t row = a.kv_heads * a.head_dim;
  __m256 acc[G][4];
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) acc[g][c] = fresh ? _mm256_setzero_ps() : _mm256_loadu_ps(o + g * a.head_dim + 8 * c);
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (stream != nullptr) stream->consumed(32 * kElementBytes<T>);
    __m256 v[4];
    for (int c = 0; c < 4; ++c) v[c] = load8<T>(a.kv_cache, base + i * row + 8 * c);
    for (int g = 0; g < G; ++g) {
      const __m256 weight = _mm256_broadcast_ss(probs + g * span + i);
      for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_fmadd_ps(weight, v[c], acc[g][c]);
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) _mm256_storeu_ps(o + g * a.head_dim + 8 * c, acc[g][c]);
  }
}

// Request r's KV heads [h0, h1): one pass over their cached keys block by block, a softmax per query head, then
// one pass over the values.
template <CacheDtype T>
__attribute__((target("avx2,fma,f16c"))) void attend(const DecodeArgs& a, const Item& item, Workspace& ws,
                                                     ChunkStream& stream) {
  const int64_t group = a.heads / a.kv_heads, head_dim = a.head_dim, seq_len = a.seq_lens[item.r];
  const int64_t first = first_visible_position(seq_len, a.sliding_window), span = seq_len - first, heads = item.h1 - item.h0;
  const int32_t* table = a.block_tables + item.r * a.table_width;
  const float* q = a.query + item.r * a.query_stride + item.h0 * group * head_dim;
  float* scores = ws.scores.data();
  for (int64_t p0 = first; p0 < seq_len;) {
    const int64_t p1 = std::min(seq_len, (p0 / a.block_size + 1) * a.block_size);  // this block's end
    const int64_t base = slot_offset(a, table, 0, p0, item.h0);
    for (int64_t h = 0; h < heads; ++h) {
      score_block<T>(a, base + h * head_dim, p1 - p0, q + h * group * head_dim, group,
                     scores + h * group * span + (p0 - first), span, stream);
    }
    p0 = p1;
  }
  for (int64_t g = 0; g < heads * group; ++g) softmax(scores + g * span, span);
  float* o = a.out + (item.r * a.heads + item.h0 * group) * head_dim;
  for (int64_t p0 = first; p0 < seq_len;) {
    const int64_t p1 = std::min(seq_len, (p0 / a.block_size + 1) * a.block_size);
    const int64_t base = slot_offset(a, table, 1, p0, item.h0);
    for (int64_t h = 0; h < heads; ++h) {
      const float* probs = scores + h * group * span + (p0 - first);
      float* oh = o + h * group * head_dim;
      for (int64_t c = 0; c < head_dim; c += 32) {
        int64_t g = 0;  // the first call over these rows reports them to the stream; the others read them in L1
        for (; g + 2 <= group; g += 2) {
          weigh_block<T, 2>(a, base + h * head_dim + c, p1 - p0, probs + g * span, span, oh + g * head_dim + c,
                            p0 == first, g == 0 ? &stream : nullptr);
        }
        if (g < group) {
          weigh_block<T, 1>(a, base + h * head_dim + c, p1 - p0, probs + g * span, span, oh + g * head_dim + c,
                            p0 == first, g == 0 ? &stream : nullptr);
        }
      }
    }
    p0 = p1;
  }
}

}  // namespace avx2

using AttendFn = void (*)(const DecodeArgs&, const Item&, Workspace&, ChunkStream&);

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
    const int64_t span = seq_lens[r] - first_visible_position(seq_lens[r], a.sliding_window);
    max_span = std::max(max_span, span);
    total_span += span;
  }
  const int64_t useful = std::max<int64_t>(1, 2 * total_span * heads * head_dim / kMinWorkPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, reqs * kv_heads, useful})));
  // A request's KV heads are split only when there are fewer requests than threads: an item reading whole rows
  // reads each block as one contiguous run, and items of one head each (the rows' quarters, say) ran at
  // 17-19 GB/s from DRAM where whole rows ran at 28-33 (float32, 32 requests x 192 tokens, 8 layers).
  const int64_t splits = std::min<int64_t>(kv_heads, (threads + reqs - 1) / reqs);
  const bool prefetch = 2 * total_span * kv_heads * head_dim * cache_element_bytes(cache_dtype) >= kMinPrefetchedBytes;
  const AttendFn run = attend_for(a);
  std::atomic<int64_t> next_item{0};
  const auto attend_items = [&] {
    Workspace ws{std::vector<float>(static_cast<size_t>(heads * max_span)),
                 std::vector<float>(static_cast<size_t>(block_size * head_dim))};
    ChunkStream stream(a, next_item, reqs * splits, splits, prefetch);
    for (Item item; stream.next(&item);) run(a, item, ws, stream);
  };
  if (threads == 1) {
    attend_items();
    return;
  }
#pragma omp parallel num_threads(threads)
  attend_items();
}

}  // namespace kvserve::cpu
