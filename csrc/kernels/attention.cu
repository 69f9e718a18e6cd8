// Paged attention for decode and mixed prefill+decode batches, split along the context (flash-decoding).
//
// Work item: (query tile, KV head, split). A request's query rows for one KV head are its (token, head in
// the GQA group) pairs, flattened token-major: row f is token f / G, head kv_head * G + f % G. A tile is kRows
// consecutive rows of one request, so decode rows of a GQA group share every key and value they load. The
// tile's visible keys [key_lo, key_hi) are cut into splits of `partition` tokens, one thread block each.
//
//   keys of request r:  | split 0 (partition) | split 1 (partition) | split 2 (rest) |
//                       key_lo                                                 key_hi = last row's position + 1
//
// A block's 128 threads form groups of kLanes lanes; each lane holds 16 bytes of a key (kVec channels), so a
// group covers one token's head_dim. Each iteration a group loads kUnroll tokens' keys and values before
// using any (loads in flight hide latency), scores them against its kRows query rows, and folds them into a
// running softmax (max m, sum l, weighted values acc) per row; scores are in log2 units (q is scaled by
// scale * log2(e)) so every exponential is one exp2f. The groups' states are merged through shared memory;
// with one split the block writes the output, otherwise a partial (m, l, acc) per row that combine_kernel
// merges over splits.
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace kvserve::kernels {
namespace {

constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  void* out;                        // [T, H, D]
  const void* query;                // [T, H, D], strides q_token_stride, q_head_stride
  const void* kv_cache;             // [2, NB, BS, KVH, D]
  const int32_t* block_tables;      // [R, table_width]
  const int32_t* seq_lens;          // [R]
  const int32_t* query_start_loc;   // [R + 1]
  int32_t* tile_offsets;            // [R + 1]: first tile of each request (prefix sums, filled by tile_offsets_kernel)
  float* part_m;                    // [tile_ub, KVH, max_splits, rows]
  float* part_l;                    // [tile_ub, KVH, max_splits, rows]
  float* part_acc;                  // [tile_ub, KVH, max_splits, rows, D]
  int reqs, heads, kv_heads, group, head_dim, block_size, table_width, rows, partition, max_splits;
  int64_t num_blocks, q_token_stride, q_head_stride;
  float scale_log2;  // scale * log2(e)
  int sliding_window;
};

struct Tile {
  int req;
  int q_start;    // first query token of the request in the batch
  int q_len;
  int seq_len;
  int first_row;  // row index of the tile's row 0 within the request
  int key_lo;     // visible keys of the tile's rows: [key_lo, key_hi)
  int key_hi;
};

__device__ __forceinline__ int div_up(int a, int b) { return (a + b - 1) / b; }

// Tiles per request are ceil(q_len * G / rows); one warp scans them over the requests, 32 at a time.
__global__ void tile_offsets_kernel(Params p) {
  const int lane = threadIdx.x;
  int carry = 0;
  if (lane == 0) p.tile_offsets[0] = 0;
  for (int base = 0; base < p.reqs; base += 32) {
    const int r = base + lane;
    int n = 0;
    if (r < p.reqs) n = div_up((p.query_start_loc[r + 1] - p.query_start_loc[r]) * p.group, p.rows);
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, n, offset);
      if (lane >= offset) n += other;
    }
    if (r < p.reqs) p.tile_offsets[r + 1] = carry + n;
    carry += __shfl_sync(0xffffffffu, n, 31);
  }
}

// Finds the request owning `tile` (binary search over tile_offsets); false when the tile is past the last.
__device__ bool locate_tile(const Params& p, int tile, Tile& t) {
  if (tile >= p.tile_offsets[p.reqs]) return false;
  int lo = 0, hi = p.reqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.tile_offsets[mid] <= tile) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  t.req = lo;
  t.q_start = p.query_start_loc[lo];
  t.q_len = p.query_start_loc[lo + 1] - t.q_start;
  t.seq_len = p.seq_lens[lo];
  t.first_row = (tile - p.tile_offsets[lo]) * p.rows;
  const int last_row = min(t.first_row + p.rows, t.q_len * p.group) - 1;
  const int context = t.seq_len - t.q_len;  // keys before this step's first query token
  const int first_pos = context + t.first_row / p.group;
  t.key_lo = p.sliding_window > 0 ? max(0, first_pos - p.sliding_window + 1) : 0;
  t.key_hi = context + last_row / p.group + 1;
  return true;
}

template <typename T, int D, int kRows>
__global__ void __launch_bounds__(kThreads) attention_kernel(Params p) {
  constexpr int kVec = Vec<T>::kSize;
  constexpr int kLanes = D / kVec;
  constexpr int kGroups = kThreads / kLanes;
  constexpr int kUnroll = kRows >= 8 ? 2 : 4;  // more rows hold more registers: fewer tokens in flight
  __shared__ float sm_m[kGroups][kRows];
  __shared__ float sm_l[kGroups][kRows];
  __shared__ float sm_acc[kGroups][kRows][D];

  Tile tile;
  if (!locate_tile(p, blockIdx.x, tile)) return;
  const int split = blockIdx.z;
  const int start = tile.key_lo + split * p.partition;
  if (start >= tile.key_hi) return;
  const int end = min(start + p.partition, tile.key_hi);
  const int num_splits = div_up(tile.key_hi - tile.key_lo, p.partition);
  const int kv_head = blockIdx.y;
  const int group = threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int num_rows = tile.q_len * p.group;

  // Query rows in registers, pre-scaled; each row's visible keys [row_lo, row_hi) (empty for unused rows).
  float q[kRows][kVec];
  int row_lo[kRows], row_hi[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int f = tile.first_row + i;
    row_lo[i] = 0;
    row_hi[i] = 0;
#pragma unroll
    for (int j = 0; j < kVec; ++j) q[i][j] = 0.f;
    if (f < num_rows) {
      const int token = f / p.group;
      const int head = kv_head * p.group + f % p.group;
      const int pos = tile.seq_len - tile.q_len + token;
      row_hi[i] = pos + 1;
      row_lo[i] = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
      const T* src = static_cast<const T*>(p.query) + (tile.q_start + token) * p.q_token_stride +
                     head * p.q_head_stride + lane * kVec;
      const Vec<T> v = load_vec(src);
#pragma unroll
      for (int j = 0; j < kVec; ++j) q[i][j] = to_float(v.v[j]) * p.scale_log2;
    }
  }

  float m[kRows], l[kRows], acc[kRows][kVec];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[i][j] = 0.f;
  }

  const int64_t token_stride = static_cast<int64_t>(p.kv_heads) * D;
  const T* k_base = static_cast<const T*>(p.kv_cache) + kv_head * D + lane * kVec;
  const T* v_base = k_base + p.num_blocks * p.block_size * token_stride;
  const int32_t* table = p.block_tables + static_cast<int64_t>(tile.req) * p.table_width;

  for (int base = start; base < end; base += kGroups * kUnroll) {
    Vec<T> kv[kUnroll], vv[kUnroll];
    int tok[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      tok[u] = base + u * kGroups + group;
      if (tok[u] < end) {
        const int64_t slot = static_cast<int64_t>(table[tok[u] / p.block_size]) * p.block_size + tok[u] % p.block_size;
        kv[u] = load_vec(k_base + slot * token_stride);
        vv[u] = load_vec(v_base + slot * token_stride);
      } else {
        // Zeros, not garbage: a weight of 0 times a NaN would still poison the sum.
#pragma unroll
        for (int j = 0; j < kVec; ++j) kv[u].v[j] = vv[u].v[j] = from_float<T>(0.f);
      }
    }
    float s[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) kf[j] = to_float(kv[u].v[j]);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < kVec; ++j) dot += q[i][j] * kf[j];
#pragma unroll
        for (int offset = kLanes / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        const bool visible = tok[u] >= row_lo[i] && tok[u] < row_hi[i] && tok[u] < end;
        s[u][i] = visible ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      float chunk_max = m[i];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) chunk_max = fmaxf(chunk_max, s[u][i]);
      if (chunk_max == -INFINITY) continue;  // nothing visible to this row yet
      const float correction = exp2f(m[i] - chunk_max);
      float weight[kUnroll];
      float weight_sum = 0.f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        weight[u] = exp2f(s[u][i] - chunk_max);
        weight_sum += weight[u];
      }
      m[i] = chunk_max;
      l[i] = l[i] * correction + weight_sum;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        float a = acc[i][j] * correction;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) a += weight[u] * to_float(vv[u].v[j]);
        acc[i][j] = a;
      }
    }
  }

  // Merge the groups: each row's max over groups, then the rescaled sums.
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    if (lane == 0) {
      sm_m[group][i] = m[i];
      sm_l[group][i] = l[i];
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) sm_acc[group][i][lane * kVec + j] = acc[i][j];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kRows * D; idx += kThreads) {
    const int i = idx / D;
    const int d = idx % D;
    const int f = tile.first_row + i;
    if (f >= num_rows) continue;
    float row_max = -INFINITY;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) row_max = fmaxf(row_max, sm_m[g][i]);
    float sum = 0.f, value = 0.f;
    if (row_max != -INFINITY) {
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        const float w = sm_m[g][i] == -INFINITY ? 0.f : exp2f(sm_m[g][i] - row_max);
        sum += w * sm_l[g][i];
        value += w * sm_acc[g][i][d];
      }
    }
    if (num_splits == 1) {
      const int token = tile.q_start + f / p.group;
      const int head = kv_head * p.group + f % p.group;
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(token) * p.heads + head) * D + d;
      *out = from_float<T>(sum > 0.f ? value / sum : 0.f);
    } else {
      const int64_t part = ((static_cast<int64_t>(blockIdx.x) * p.kv_heads + kv_head) * p.max_splits + split) * kRows + i;
      p.part_acc[part * D + d] = value;
      if (d == 0) {
        p.part_m[part] = row_max;
        p.part_l[part] = sum;
      }
    }
  }
}

// Merges the splits' partial results of every row of a tile whose context was split.
template <typename T>
__global__ void combine_kernel(Params p) {
  Tile tile;
  if (!locate_tile(p, blockIdx.x, tile)) return;
  const int num_splits = div_up(tile.key_hi - tile.key_lo, p.partition);
  if (num_splits == 1) return;  // the attention kernel wrote this tile's output itself
  const int kv_head = blockIdx.y;
  const int num_rows = tile.q_len * p.group;
  for (int idx = threadIdx.x; idx < p.rows * p.head_dim; idx += blockDim.x) {
    const int i = idx / p.head_dim;
    const int d = idx % p.head_dim;
    const int f = tile.first_row + i;
    if (f >= num_rows) continue;
    const int64_t first = ((static_cast<int64_t>(blockIdx.x) * p.kv_heads + kv_head) * p.max_splits) * p.rows + i;
    float row_max = -INFINITY;
    for (int s = 0; s < num_splits; ++s) row_max = fmaxf(row_max, p.part_m[first + s * p.rows]);
    float sum = 0.f, value = 0.f;
    for (int s = 0; s < num_splits; ++s) {
      const int64_t part = first + s * p.rows;
      const float w = p.part_m[part] == -INFINITY ? 0.f : exp2f(p.part_m[part] - row_max);
      sum += w * p.part_l[part];
      value += w * p.part_acc[part * p.head_dim + d];
    }
    const int token = tile.q_start + f / p.group;
    const int head = kv_head * p.group + f % p.group;
    T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(token) * p.heads + head) * p.head_dim + d;
    *out = from_float<T>(sum > 0.f ? value / sum : 0.f);
  }
}

struct Plan {
  int rows;        // query rows per tile
  int partition;   // keys per split
  int max_splits;
  int64_t tile_ub;  // an upper bound on the number of tiles: the grid's x extent
};

int multiprocessor_count() {
  int device = 0;
  int count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // clear the error: with no device the plan only sizes a workspace
    return 132;
  }
  return count;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Plan make_plan(int64_t tokens, int64_t reqs, int64_t heads, int64_t kv_heads, int64_t max_query_len,
               int64_t max_seq_len) {
  Plan plan;
  const int64_t group = heads / kv_heads;
  // Decode rows of a small group fit 1 or 4 rows; larger groups and prefill chunks take 8.
  plan.rows = max_query_len == 1 && group == 1 ? 1 : (max_query_len == 1 && group <= 4 ? 4 : 8);
  const int64_t per_req = ceil_div(max_query_len * group, plan.rows);
  const int64_t by_tokens = ceil_div(tokens * group, plan.rows) + reqs;
  plan.tile_ub = per_req * reqs < by_tokens ? per_req * reqs : by_tokens;
  // Splits of 512 keys; shorter ones when the batch alone would leave multiprocessors idle.
  const int64_t target_blocks = 2LL * multiprocessor_count();
  plan.partition = 512;
  while (plan.partition > 128 && plan.tile_ub * kv_heads * ceil_div(max_seq_len, plan.partition) < target_blocks) {
    plan.partition /= 2;
  }
  plan.max_splits = static_cast<int>(ceil_div(max_seq_len, plan.partition));
  return plan;
}

struct Workspace {
  int64_t tile_offsets, part_m, part_l, part_acc, total;  // byte offsets and size
};

Workspace layout(const Plan& plan, int64_t reqs, int64_t kv_heads, int64_t head_dim) {
  auto align = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  const int64_t parts = plan.tile_ub * kv_heads * plan.max_splits * plan.rows;
  Workspace w;
  w.tile_offsets = 0;
  w.part_m = align((reqs + 1) * 4);
  w.part_l = w.part_m + align(parts * 4);
  w.part_acc = w.part_l + align(parts * 4);
  w.total = plan.max_splits > 1 ? w.part_acc + align(parts * head_dim * 4) : w.part_m;
  return w;
}

void check_sizes(int64_t tokens, int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim,
                 int64_t max_query_len, int64_t max_seq_len) {
  KV_REQUIRE(head_dim == 64 || head_dim == 128, "paged_attention: head_dim must be 64 or 128");
  KV_REQUIRE(heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
             "paged_attention: heads must be a positive multiple of kv_heads");
  KV_REQUIRE(tokens >= 0 && reqs >= 0 && tokens < (1LL << 31) && reqs < (1LL << 31),
             "paged_attention: bad token or request count");
  KV_REQUIRE(max_query_len >= 1 && max_seq_len >= max_query_len && max_seq_len < (1LL << 31),
             "paged_attention: need 1 <= max_query_len <= max_seq_len");
  KV_REQUIRE(kv_heads <= 65535, "paged_attention: too many kv heads");
}

}  // namespace

int64_t paged_attention_workspace_bytes(int64_t tokens, int64_t reqs, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, int64_t max_query_len, int64_t max_seq_len) {
  check_sizes(tokens, reqs, heads, kv_heads, head_dim, max_query_len, max_seq_len);
  const Plan plan = make_plan(tokens, reqs, heads, kv_heads, max_query_len, max_seq_len);
  return layout(plan, reqs, kv_heads, head_dim).total;
}

void paged_attention(DType dtype, void* out, const void* query, const void* kv_cache, const int32_t* block_tables,
                     const int32_t* seq_lens, const int32_t* query_start_loc, void* workspace, int64_t tokens,
                     int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
                     int64_t block_size, int64_t table_width, int64_t q_token_stride, int64_t q_head_stride,
                     int64_t max_query_len, int64_t max_seq_len, float scale, int64_t sliding_window,
                     uintptr_t stream) {
  check_sizes(tokens, reqs, heads, kv_heads, head_dim, max_query_len, max_seq_len);
  KV_REQUIRE(num_blocks > 0 && block_size > 0 && table_width > 0, "paged_attention: bad cache or table shape");
  KV_REQUIRE(sliding_window >= 0 && sliding_window < (1LL << 31), "paged_attention: bad sliding_window");
  if (tokens == 0 || reqs == 0) return;
  const Plan plan = make_plan(tokens, reqs, heads, kv_heads, max_query_len, max_seq_len);
  const Workspace w = layout(plan, reqs, kv_heads, head_dim);
  KV_REQUIRE(plan.max_splits <= 65535, "paged_attention: context too long for one launch");
  auto* ws = static_cast<char*>(workspace);
  Params p;
  p.out = out;
  p.query = query;
  p.kv_cache = kv_cache;
  p.block_tables = block_tables;
  p.seq_lens = seq_lens;
  p.query_start_loc = query_start_loc;
  p.tile_offsets = reinterpret_cast<int32_t*>(ws + w.tile_offsets);
  p.part_m = reinterpret_cast<float*>(ws + w.part_m);
  p.part_l = reinterpret_cast<float*>(ws + w.part_l);
  p.part_acc = reinterpret_cast<float*>(ws + w.part_acc);
  p.reqs = static_cast<int>(reqs);
  p.heads = static_cast<int>(heads);
  p.kv_heads = static_cast<int>(kv_heads);
  p.group = static_cast<int>(heads / kv_heads);
  p.head_dim = static_cast<int>(head_dim);
  p.block_size = static_cast<int>(block_size);
  p.table_width = static_cast<int>(table_width);
  p.rows = plan.rows;
  p.partition = plan.partition;
  p.max_splits = plan.max_splits;
  p.num_blocks = num_blocks;
  p.q_token_stride = q_token_stride;
  p.q_head_stride = q_head_stride;
  p.scale_log2 = scale * kLog2e;
  p.sliding_window = static_cast<int>(sliding_window);

  const cudaStream_t s = as_stream(stream);
  tile_offsets_kernel<<<1, 32, 0, s>>>(p);
  KV_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>(plan.tile_ub), static_cast<unsigned>(kv_heads),
                  static_cast<unsigned>(plan.max_splits));
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    constexpr int kVec = Vec<T>::kSize;
    KV_REQUIRE(q_token_stride % kVec == 0 && q_head_stride % kVec == 0 && aligned16(query) && aligned16(kv_cache),
               "paged_attention: query strides and pointers must allow 16-byte loads");
    auto launch = [&](auto head_dim_tag, auto rows_tag) {
      constexpr int kD = decltype(head_dim_tag)::value;
      constexpr int kRows = decltype(rows_tag)::value;
      attention_kernel<T, kD, kRows><<<grid, kThreads, 0, s>>>(p);
    };
    auto with_rows = [&](auto head_dim_tag) {
      switch (plan.rows) {
        case 1: return launch(head_dim_tag, std::integral_constant<int, 1>{});
        case 4: return launch(head_dim_tag, std::integral_constant<int, 4>{});
        default: return launch(head_dim_tag, std::integral_constant<int, 8>{});
      }
    };
    if (head_dim == 64) {
      with_rows(std::integral_constant<int, 64>{});
    } else {
      with_rows(std::integral_constant<int, 128>{});
    }
    KV_CHECK_LAUNCH();
    if (plan.max_splits > 1) {
      combine_kernel<T><<<dim3(static_cast<unsigned>(plan.tile_ub), static_cast<unsigned>(kv_heads)), kThreads, 0, s>>>(p);
      KV_CHECK_LAUNCH();
    }
  });
}

}  // namespace kvserve::kernels
