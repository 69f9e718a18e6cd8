// y = x · Wᵀ (+ bias) for a float32 weight in the blocked layout oneDNN packs linear weights into
// (packed_weights.py): [ceil(N / 64)][K rounded up to 16][64], the 64 output columns of a block for one k
// contiguous. At a decode step's few rows oneDNN's own kernel ran bench_throughput's shapes at 151-177 GFLOP/s
// with the weight streamed from DRAM against 182-215 with it in cache: every weight is read once a step, and
// its next block was late. Here a tile of rows times one block accumulates in registers (each of the block's
// k rows is one load per 16 columns, broadcast against each activation row), and the thread's next panel is
// prefetched a few lines per k step, among the multiply-adds: 171-197 GFLOP/s from DRAM. At a prompt's
// thousands of rows both run at ~200. AVX-512 only (see blocked_matmul_fits).
//
// Each output is one chain of multiply-adds in k order from zero, the bias added last, whatever the number of
// rows or threads: a row's result does not depend on the batch it is in.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>

#include "cpu_isa.h"
#include "kernels.h"

namespace kvserve::cpu {
namespace {

constexpr int64_t kBlock = 64;  // output columns of a block

struct BlockedArgs {
  float* out;          // [rows, n], row stride out_stride
  const float* x;      // [rows, k], row stride x_stride
  const float* w;      // [ceil(n / 64)][k_padded][64]
  const float* bias;   // [n] or nullptr
  int64_t rows, n, k, k_padded, x_stride, out_stride;
};

// What a thread prefetches into L2 while its tiles run, a few lines per k step: the next weight panel it will
// read, and its share of the caller's side spans (SidePrefetch), spread over all its k steps.
struct Prefetcher {
  const char* panel = nullptr;  // nullptr: no next panel
  int64_t panel_next = 0, panel_lines = 0, panel_per_step = 0;
  const SidePrefetch* side = nullptr;
  int64_t span = 0, span_end = 0, offset = 0, side_per_step = 0;

  inline __attribute__((always_inline)) void step() {
    for (int64_t i = 0; i < panel_per_step && panel_next < panel_lines; ++i, ++panel_next) {
      _mm_prefetch(panel + panel_next * 64, _MM_HINT_T1);
    }
    for (int64_t i = 0; i < side_per_step && span < span_end; ++i) {
      _mm_prefetch(side->starts[span] + offset, _MM_HINT_T1);
      offset += 64;
      if (offset >= side->bytes[span]) {
        ++span;
        offset = 0;
      }
    }
  }
};

// What one tile computes: rows [r0, r0 + R) of the output's columns [n0, n0 + 64), over the weight block's rows
// [k0, k1) (`wb`: the block's start). The sums start from zero (`fresh`) or from what the previous range of k
// left in the output, and the bias is added after the last range.
struct TileJob {
  int64_t r0, n0;
  const float* wb;
  int64_t k0, k1;
  bool fresh, last;
};

template <int R>
__attribute__((target("avx512f"))) void tile_avx512(const BlockedArgs& a, const TileJob& job, Prefetcher& prefetch) {
  const int64_t valid = std::min(kBlock, a.n - job.n0);
  __mmask16 masks[4];
  for (int c = 0; c < 4; ++c) {
    const int64_t lanes = std::clamp<int64_t>(valid - 16 * c, 0, 16);
    masks[c] = lanes == 16 ? 0xFFFF : static_cast<__mmask16>((1u << lanes) - 1);
  }
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r) {
    const float* o = a.out + (job.r0 + r) * a.out_stride + job.n0;
    for (int c = 0; c < 4; ++c) acc[r][c] = job.fresh ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[c], o + 16 * c);
  }
  const float* x = a.x + job.r0 * a.x_stride;
  for (int64_t kk = job.k0; kk < job.k1; ++kk) {
    const float* wk = job.wb + kk * kBlock;
    const __m512 w[4] = {_mm512_loadu_ps(wk), _mm512_loadu_ps(wk + 16), _mm512_loadu_ps(wk + 32),
                         _mm512_loadu_ps(wk + 48)};
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * a.x_stride + kk]);
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(xv, w[c], acc[r][c]);
    }
    prefetch.step();
  }
  for (int r = 0; r < R; ++r) {
    float* o = a.out + (job.r0 + r) * a.out_stride + job.n0;
    for (int c = 0; c < 4; ++c) {
      __m512 v = acc[r][c];
      if (job.last && a.bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[c], a.bias + job.n0 + 16 * c));
      _mm512_mask_storeu_ps(o + 16 * c, masks[c], v);
    }
  }
}

using TileFn = void (*)(const BlockedArgs&, const TileJob&, Prefetcher&);

// The tile of r rows is kTiles[r], up to kTileRows.
constexpr int64_t kTileRows = 6;
constexpr TileFn kTiles[kTileRows + 1] = {nullptr,        tile_avx512<1>, tile_avx512<2>, tile_avx512<3>,
                                          tile_avx512<4>, tile_avx512<5>, tile_avx512<6>};

// Activation rows and weight rows (k) a tile pass covers: a chunk of up to 96 rows of x meets each block's
// panels of 512 k x 64 columns (128 KiB) in turn, each panel's slice of x (96 x 512 values, 192 KiB) in L2, so
// W is read from memory once per chunk: once a step for a decode step's rows, whatever k (a chunk sized to keep
// all of x's k in L2 would have read an 8B model's down projection six times a step). Split into ranges of k,
// an output is still one chain of multiply-adds in k order (stored and reloaded exactly between ranges).
constexpr int64_t kChunkRows = 96, kChunkK = 512;

// Below this many multiply-adds a thread is not worth waking.
constexpr int64_t kMinWorkPerThread = 1 << 16;

// The work: units of (chunk of rows, block), chunk-major, claimed one at a time from a counter the threads
// share, so a thread held up (by the event loop's, say, on a host with as many cores as threads) is not
// waited for.
struct Units {
  int64_t chunk_rows, blocks, count;
  std::atomic<int64_t> next{0};
};

// A thread's units: each one's panels in k order, the next panel prefetched while the tiles run (its lines
// spread over all their k steps; the next unit is claimed as its predecessor's last panel starts, so that its
// first panel can be); side spans [s0, s1) prefetched evenly over `steps` k steps.
void run_units(const BlockedArgs& a, Units& units, const SidePrefetch* side, int64_t s0,
               int64_t s1, int64_t steps) {
  const int64_t block_floats = a.k_padded * kBlock;
  const auto tile_steps = [&](int64_t rows, int64_t ks) {
    return std::max<int64_t>(1, (rows + kTileRows - 1) / kTileRows * ks);
  };
  Prefetcher prefetch;
  if (side != nullptr && s0 < s1) {
    int64_t side_lines = 0;
    for (int64_t i = s0; i < s1; ++i) side_lines += (side->bytes[i] + 63) / 64;
    prefetch.side = side;
    prefetch.span = s0;
    prefetch.span_end = s1;
    prefetch.side_per_step = (side_lines + steps - 1) / std::max<int64_t>(1, steps);
  }
  for (int64_t unit = units.next.fetch_add(1, std::memory_order_relaxed); unit < units.count;) {
    const int64_t m0 = unit / units.blocks * units.chunk_rows, b = unit % units.blocks;
    const int64_t rows = std::min(units.chunk_rows, a.rows - m0);
    int64_t following = units.count;
    for (int64_t kc = 0; kc < a.k; kc += kChunkK) {
      const int64_t k1 = std::min(a.k, kc + kChunkK);
      prefetch.panel = nullptr;
      prefetch.panel_next = prefetch.panel_lines = 0;
      if (k1 < a.k) {
        prefetch.panel = reinterpret_cast<const char*>(a.w + b * block_floats + k1 * kBlock);
        prefetch.panel_lines = std::min(kChunkK, a.k - k1) * kBlock * 4 / 64;
      } else if ((following = units.next.fetch_add(1, std::memory_order_relaxed)) < units.count) {
        prefetch.panel = reinterpret_cast<const char*>(a.w + following % units.blocks * block_floats);
        prefetch.panel_lines = std::min(kChunkK, a.k) * kBlock * 4 / 64;
      }
      prefetch.panel_per_step = (prefetch.panel_lines + tile_steps(rows, k1 - kc) - 1) / tile_steps(rows, k1 - kc);
      const float* wb = a.w + b * block_floats;
      for (int64_t r0 = m0; r0 < m0 + rows; r0 += kTileRows) {
        const int64_t tile_rows = std::min(kTileRows, m0 + rows - r0);
        const TileJob job{r0, b * kBlock, wb, kc, k1, kc == 0, k1 == a.k};
        kTiles[tile_rows](a, job, prefetch);
      }
    }
    unit = following;
  }
}

}  // namespace

// AVX-512 only: an AVX2 build of the same tiles (3 rows x 32 columns, 12 accumulators) reached 80-95 GFLOP/s
// where oneDNN's AVX2 kernel reached 140-205, so AVX2-only CPUs keep oneDNN's.
bool blocked_matmul_fits() { return detect_isa() == Isa::kAvx512; }

void blocked_matmul(float* out, const float* x, const float* w, const float* bias, int64_t rows, int64_t n, int64_t k,
                    int64_t k_padded, int64_t x_stride, int64_t out_stride, int num_threads, const SidePrefetch* side) {
  const BlockedArgs a{out, x, w, bias, rows, n, k, k_padded, x_stride, out_stride};
  if (rows == 0) return;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  Units units;
  units.chunk_rows = kChunkRows;  // a multiple of kTileRows
  units.blocks = blocks;
  units.count = (rows + units.chunk_rows - 1) / units.chunk_rows * blocks;
  const int64_t useful = std::max<int64_t>(1, rows * n * k / kMinWorkPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, units.count, useful})));
  const int64_t spans = side == nullptr ? 0 : side->count;
  // Each thread's expected share of the k steps, over which its share of the side spans is spread.
  const int64_t steps = (rows + kTileRows - 1) / kTileRows * k * blocks / threads;
  if (threads == 1) {
    run_units(a, units, side, 0, spans, steps);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
    run_units(a, units, side, spans * t / count, spans * (t + 1) / count, steps);
  }
}

}  // namespace kvserve::cpu
