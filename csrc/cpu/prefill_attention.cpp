// Causal attention of prompt chunks (requests with more than one query row) over a paged KV cache of float32,
// float16 or bfloat16 values, with float32 math: the flash-attention order (a tile of query rows against
// tiles of 16 keys, an online softmax, the output rows kept in L1 until the last key), in AVX2 + FMA + F16C.
// torch's CPU attention ran at 20-30 GFLOP/s on these shapes (RESULTS.md, #14); a tile here is two small
// register-blocked matrix products.
//
// Work items are (request, KV head, tile of query tokens), split across OpenMP threads with the dynamic
// schedule (later tiles see more keys). The query heads of one KV head share its keys, so a tile's rows are
// its tokens × that group of heads; the keys of a tile are read once for all of them.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "avx2_math.h"
#include "cpu_isa.h"
#include "kernels.h"
#include "kv_cache_rows.h"
#include "paged_kv.h"

namespace kvserve::cpu {
namespace {

constexpr int64_t kKeys = 16;  // keys per tile: two vectors of scores a query row
// Query rows × head_dim values of a tile: its queries and outputs take 8 KiB each, which with a tile of keys
// and of values stays in L1.
constexpr int64_t kTileValues = 2048;

using PrefillArgs = PagedAttentionArgs;

struct Item {
  int64_t request, kv_head, t0, t1;  // query tokens [t0, t1) of the request's rows
};

struct Buffers {
  std::vector<float> q, o, s, keys, values, top, total;
  Buffers(int64_t rows, int64_t head_dim)
      : q(rows * head_dim), o(rows * head_dim), s(rows * kKeys), keys(head_dim * kKeys), values(kKeys * head_dim),
        top(rows), total(rows) {}
};

// r[0..8) (rows of 8) transposed in place.
KV_AVX2 void transpose8(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// keys[d * kKeys + j] = key(p0 + j)[d] and values[j * D + d] = value(p0 + j)[d] as float32, for j < n; key
// columns past n repeat key p0 (finite values; their scores are masked).
template <CacheDtype T>
KV_AVX2 void load_tile(const PrefillArgs& a, const int32_t* table, int64_t kvh, int64_t p0, int64_t n, Buffers& b) {
  const int64_t d_size = a.head_dim;
  int64_t key_at[kKeys];
  for (int64_t j = 0; j < kKeys; ++j) key_at[j] = slot_offset(a, table, 0, p0 + (j < n ? j : 0), kvh);
  for (int64_t j0 = 0; j0 < kKeys; j0 += 8) {
    for (int64_t d0 = 0; d0 < d_size; d0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = load8<T>(a.kv_cache, key_at[j0 + i] + d0);
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(b.keys.data() + (d0 + i) * kKeys + j0, r[i]);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t at = slot_offset(a, table, 1, p0 + j, kvh);
    float* row = b.values.data() + j * d_size;
    for (int64_t d0 = 0; d0 < d_size; d0 += 8) _mm256_storeu_ps(row + d0, load8<T>(a.kv_cache, at + d0));
  }
}

// s[m][0..16) = q[m] · keys for R rows from m0.
template <int R>
KV_AVX2 void score_rows(const float* q, const float* keys, int64_t d_size, float* s) {
  __m256 acc[R][2];
  for (auto& row : acc) row[0] = row[1] = _mm256_setzero_ps();
  for (int64_t d = 0; d < d_size; ++d) {
    const __m256 k0 = _mm256_loadu_ps(keys + d * kKeys), k1 = _mm256_loadu_ps(keys + d * kKeys + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(q + r * d_size + d);
      acc[r][0] = _mm256_fmadd_ps(x, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s + r * kKeys, acc[r][0]);
    _mm256_storeu_ps(s + r * kKeys + 8, acc[r][1]);
  }
}

// o[m][c0 * 8, (c0 + C) * 8) += Σ_j p[m][j] values[j] for R rows.
template <int R, int C>
KV_AVX2 void weigh_rows(const float* p, const float* values, int64_t n, int64_t d_size, int64_t c0, float* o) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_loadu_ps(o + r * d_size + 8 * (c0 + c));
  }
  for (int64_t j = 0; j < n; ++j) {
    __m256 v[C];
    for (int c = 0; c < C; ++c) v[c] = _mm256_loadu_ps(values + j * d_size + 8 * (c0 + c));
    for (int r = 0; r < R; ++r) {
      const __m256 w = _mm256_broadcast_ss(p + r * kKeys + j);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(w, v[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + r * d_size + 8 * (c0 + c), acc[r][c]);
  }
}

template <int R>
KV_AVX2 void weigh_rows_all_columns(const float* p, const float* values, int64_t n, int64_t d_size, float* o) {
  int64_t c0 = 0;
  for (; c0 + 4 <= d_size / 8; c0 += 4) weigh_rows<R, 4>(p, values, n, d_size, c0, o);
  for (; c0 < d_size / 8; ++c0) weigh_rows<R, 1>(p, values, n, d_size, c0, o);
}

// The largest and the total of v's lanes.
KV_AVX2 float lane_max(__m256 v) {
  v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
  return _mm256_cvtss_f32(_mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0xB1)));
}

KV_AVX2 float lane_total(__m256 v) {
  v = _mm256_add_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
  return _mm256_cvtss_f32(_mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0xB1)));
}

// The online softmax of one row's scores s[0..16) (visible keys [lo, hi); the rest masked): the row's running
// maximum and total are updated, its output rescaled, and s becomes the weights of this tile's values.
KV_AVX2 void softmax_update(float* s, int64_t lo, int64_t hi, float& top, float& total, float* o, int64_t d_size) {
  if (hi <= lo) {  // nothing visible: weights of zero
    std::fill(s, s + kKeys, 0.0f);
    return;
  }
  const __m256 none = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 visible[2], scores[2];
  for (int h = 0; h < 2; ++h) {
    const __m256i at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i j = _mm256_add_epi32(at, _mm256_set1_epi32(8 * h));
    visible[h] = _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_cmpgt_epi32(j, _mm256_set1_epi32(static_cast<int>(lo - 1))),
                         _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), j)));
    scores[h] = _mm256_blendv_ps(none, _mm256_loadu_ps(s + 8 * h), visible[h]);
  }
  const float new_top = std::max(top, lane_max(_mm256_max_ps(scores[0], scores[1])));
  const __m256 shift = _mm256_set1_ps(new_top);
  __m256 sum = _mm256_setzero_ps();
  for (int h = 0; h < 2; ++h) {
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(scores[h], shift)), visible[h]);
    _mm256_storeu_ps(s + 8 * h, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (top != new_top) {
    const float shrink = std::exp(top - new_top);  // 0 for the first visible tile (top is -inf)
    total *= shrink;
    const __m256 factor = _mm256_set1_ps(shrink);
    for (int64_t d = 0; d < d_size; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), factor));
    top = new_top;
  }
  total += lane_total(sum);
}

template <CacheDtype T>
__attribute__((target("avx2,fma,f16c"))) void attend_tile(const PrefillArgs& a, const Item& item, Buffers& b) {
  const int64_t group = a.heads / a.kv_heads, d_size = a.head_dim;
  const int64_t start = a.query_start_loc[item.request];
  const int64_t q_len = a.query_start_loc[item.request + 1] - start, seq_len = a.seq_lens[item.request];
  const int64_t context = seq_len - q_len, rows = (item.t1 - item.t0) * group;
  const int32_t* table = a.block_tables + item.request * a.table_width;
  // Row m = (token i, head g of the group): its query, pre-scaled.
  const __m256 scale = _mm256_set1_ps(a.scale);
  for (int64_t m = 0; m < rows; ++m) {
    const int64_t token = start + item.t0 + m / group, head = item.kv_head * group + m % group;
    const float* q = a.query + token * a.query_stride + head * d_size;
    for (int64_t d = 0; d < d_size; d += 8) {
      _mm256_storeu_ps(b.q.data() + m * d_size + d, _mm256_mul_ps(_mm256_loadu_ps(q + d), scale));
    }
  }
  std::fill(b.o.begin(), b.o.begin() + rows * d_size, 0.0f);
  std::fill(b.top.begin(), b.top.begin() + rows, -std::numeric_limits<float>::infinity());
  std::fill(b.total.begin(), b.total.begin() + rows, 0.0f);
  const int64_t first_pos = context + item.t0, last_pos = context + item.t1 - 1;
  const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, first_pos - a.sliding_window + 1) : 0;
  for (int64_t p0 = lo; p0 <= last_pos;) {
    const int64_t n = std::min(kKeys, last_pos + 1 - p0);
    load_tile<T>(a, table, item.kv_head, p0, n, b);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) score_rows<4>(b.q.data() + m * d_size, b.keys.data(), d_size, b.s.data() + m * kKeys);
    for (; m < rows; ++m) score_rows<1>(b.q.data() + m * d_size, b.keys.data(), d_size, b.s.data() + m * kKeys);
    for (m = 0; m < rows; ++m) {
      const int64_t pos = context + item.t0 + m / group;  // keys (pos - window, pos] are visible
      const int64_t j_lo = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1 - p0) : 0;
      const int64_t j_hi = std::min(n, pos + 1 - p0);
      softmax_update(b.s.data() + m * kKeys, j_lo, j_hi, b.top[m], b.total[m], b.o.data() + m * d_size, d_size);
    }
    for (m = 0; m + 2 <= rows; m += 2) {
      weigh_rows_all_columns<2>(b.s.data() + m * kKeys, b.values.data(), n, d_size, b.o.data() + m * d_size);
    }
    if (m < rows) {
      weigh_rows_all_columns<1>(b.s.data() + m * kKeys, b.values.data(), n, d_size, b.o.data() + m * d_size);
    }
    p0 += n;
  }
  for (int64_t m = 0; m < rows; ++m) {  // every row sees at least its own key: total > 0
    float* out = a.out + ((start + item.t0 + m / group) * a.heads + item.kv_head * group + m % group) * d_size;
    const __m256 inv = _mm256_set1_ps(1.0f / b.total[m]);
    for (int64_t d = 0; d < d_size; d += 8) {
      _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(b.o.data() + m * d_size + d), inv));
    }
  }
}

using TileFn = void (*)(const PrefillArgs&, const Item&, Buffers&);

TileFn tile_for(CacheDtype dtype) {
  switch (dtype) {
    case CacheDtype::kFloat32:
      return attend_tile<CacheDtype::kFloat32>;
    case CacheDtype::kFloat16:
      return attend_tile<CacheDtype::kFloat16>;
    default:
      return attend_tile<CacheDtype::kBFloat16>;
  }
}

}  // namespace

bool paged_attention_prefill_fits(int64_t head_dim) {
  static const bool has_avx2 = detect_isa() != Isa::kBaseline;
  return has_avx2 && head_dim > 0 && head_dim % 8 == 0;
}

void paged_attention_prefill(float* out, const float* query, const void* kv_cache, int cache_dtype,
                             const int32_t* block_tables, const int32_t* seq_lens, const int32_t* query_start_loc,
                             int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
                             int64_t block_size, int64_t table_width, int64_t query_stride, float scale,
                             int64_t sliding_window, int num_threads) {
  cache_element_bytes(cache_dtype);  // throws for an unknown type
  if (!paged_attention_prefill_fits(head_dim)) {
    throw std::invalid_argument("prefill attention: no kernel for this CPU or head size");
  }
  const PrefillArgs a{out,      query,           kv_cache, static_cast<CacheDtype>(cache_dtype), block_tables,
                      seq_lens, query_start_loc, heads,    kv_heads, head_dim, num_blocks * block_size, block_size,
                      table_width, query_stride, scale, sliding_window};
  const int64_t group = heads / kv_heads;
  const int64_t tile_tokens = std::max<int64_t>(1, kTileValues / head_dim / group);
  std::vector<Item> items;
  for (int64_t r = 0; r < reqs; ++r) {
    const int64_t q_len = query_start_loc[r + 1] - query_start_loc[r];
    if (q_len < 2) continue;  // a decode row: paged_attention_decode's
    for (int64_t t0 = 0; t0 < q_len; t0 += tile_tokens) {
      for (int64_t kvh = 0; kvh < kv_heads; ++kvh) items.push_back({r, kvh, t0, std::min(q_len, t0 + tile_tokens)});
    }
  }
  const int64_t count = static_cast<int64_t>(items.size());
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, count)));
  const TileFn run = tile_for(a.dtype);
#pragma omp parallel num_threads(threads)
  {
    Buffers buffers(tile_tokens * group, head_dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < count; ++i) run(a, items[i], buffers);
  }
}

}  // namespace kvserve::cpu
