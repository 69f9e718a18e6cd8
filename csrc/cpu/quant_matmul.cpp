// y = x · Wᵀ with W kept in its stored format (GGUF blocks or half-precision rows) and float32 activations
// and accumulation. On AVX2/AVX-512 every format is dequantized in registers, eight values at a time
// (quant_avx2.h), into register tiles of several activation rows by several weight rows (see `tile`); the
// baseline build dequantizes each weight row once into a float32 buffer in L1 and dots it with every
// activation row. Either way W is read from memory once per 64 activation rows.
//
// One build runs on any x86-64: the loops are compiled three times (AVX-512, AVX2+FMA+F16C, baseline) and
// the widest the CPU supports is chosen once. Rows are split across OpenMP threads: torch's CPU ops run on
// the same OpenMP runtime (one libgomp per process, loaded by whichever of torch and this module comes
// first), so both share one pool of threads and the caller passes torch's thread count.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_isa.h"
#include "kernels.h"
#include "quant_avx2.h"
#include "quant_formats.h"

namespace kvserve::cpu {
namespace {

struct MatmulArgs {
  float* out;            // [M, N], row stride out_stride
  const float* x;        // [M, K], row stride x_stride
  const uint8_t* w;      // [N, row_stride] bytes
  int64_t m, k, x_stride, out_stride, row_stride;
  const float* panels;   // x regrouped for the register tiles (see pack_panels), or x itself when M is 1
};

// The activation rows of each register tile (tile_rows at a time, then halves: 4, 2, 1) interleaved eight
// values at a time, [K8 / 8][rows][8] per tile from offset r0 * K8, so that a tile reads all its activations
// through one pointer; K8 is K rounded down to whole 32-value blocks (a plain row's tail is read from x).
// A single row is its own panel.
void pack_panels(const float* x, int64_t x_stride, int64_t m, int64_t k8, int tile_rows, float* out) {
  for (int64_t r = 0; r < m;) {
    int64_t rows = tile_rows;
    while (rows > m - r) rows /= 2;
    float* panel = out + r * k8;
    for (int64_t g = 0; g < k8 / 8; ++g) {
      for (int64_t i = 0; i < rows; ++i) std::memcpy(panel + (g * rows + i) * 8, x + (r + i) * x_stride + g * 8, 32);
    }
    r += rows;
  }
}

#define KV_INLINE_ALL inline __attribute__((always_inline))

// Row n of W as K float32 values.
template <class F>
KV_INLINE_ALL void dequantize_row(const uint8_t* row, int64_t k, float* out) {
  const int64_t num_blocks = k / F::kValues;
  for (int64_t b = 0; b < num_blocks; ++b) F::dequantize(row + b * F::kBytes, out + b * F::kValues);
  if constexpr (F::kRows) {  // plain rows: a tail shorter than a block
    for (int64_t i = num_blocks * F::kValues; i < k; ++i) out[i] = F::value(row + F::kBytes / F::kValues * i);
  }
}

// out[r][n] = dot(w_row, x[r]) for MB rows r, with L partial sums per row folded pairwise.
template <int MB, int L>
KV_INLINE_ALL void dot_rows(const float* w_row, const float* x, int64_t x_stride, int64_t k, float* out,
                            int64_t out_stride) {
  float acc[MB][L] = {};
  int64_t i = 0;
  for (; i + L <= k; i += L) {
    for (int r = 0; r < MB; ++r) {
      for (int l = 0; l < L; ++l) acc[r][l] += w_row[i + l] * x[r * x_stride + i + l];
    }
  }
  for (int r = 0; r < MB; ++r) {
    for (int width = L / 2; width > 0; width /= 2) {
      for (int l = 0; l < width; ++l) acc[r][l] += acc[r][l + width];
    }
    float sum = acc[r][0];
    for (int64_t j = i; j < k; ++j) sum += w_row[j] * x[r * x_stride + j];
    out[r * out_stride] = sum;
  }
}

template <class F, int L>
KV_INLINE_ALL void matmul_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  std::vector<float> buffer(static_cast<size_t>(a.k));
  for (int64_t n = n0; n < n1; ++n) {
    dequantize_row<F>(a.w + n * a.row_stride, a.k, buffer.data());
    int64_t r = 0;
    for (; r + 4 <= a.m; r += 4) {
      dot_rows<4, L>(buffer.data(), a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n, a.out_stride);
    }
    for (; r < a.m; ++r) {
      dot_rows<1, L>(buffer.data(), a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n, a.out_stride);
    }
  }
}

// out: [n1 - n0, k], the rows n0..n1 of W.
template <class F>
KV_INLINE_ALL void dequantize_rows_range(float* out, const uint8_t* w, int64_t row_stride, int64_t k, int64_t n0,
                                         int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) dequantize_row<F>(w + n * row_stride, k, out + (n - n0) * k);
}

using MatmulFn = void (*)(const MatmulArgs&, int64_t, int64_t);
using DequantizeFn = void (*)(float*, const uint8_t*, int64_t, int64_t, int64_t, int64_t);

#define KV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define KV_AVX2 __attribute__((target("avx2,fma,f16c")))

// The register path's block type for a format (the avx2 struct whose Format it is).
template <class F, class... Blocks>
struct FindBlocks {
  using type = void;
};
template <class F, class B, class... Rest>
struct FindBlocks<F, B, Rest...> {
  using type = std::conditional_t<std::is_same_v<typename B::Format, F>, B, typename FindBlocks<F, Rest...>::type>;
};
template <class F>
using RegisterBlocks = typename FindBlocks<F, avx2::Q4_0, avx2::Q4_1, avx2::Q8_0, avx2::Q4_K, avx2::Q5_K, avx2::Q6_K,
                                           avx2::F32, avx2::F16, avx2::BF16>::type;

// Groups G.. of one block of NB weight rows into the tile's accumulators.
template <class B, int MB, int NB, int G = 0>
KV_AVX2_INLINE void multiply_groups(const typename B::State* state, const float* panel, __m256 (*acc)[NB]) {
  __m256 values[NB];
  for (int j = 0; j < NB; ++j) values[j] = B::template group<G>(state[j]);
  for (int r = 0; r < MB; ++r) {
    __m256 xv = _mm256_loadu_ps(panel + (G * MB + r) * 8);
    // One load per activation vector, not one per weight row: the compiler would fold it into each FMA, and
    // the load ports, not the FMA units, would bound the tile.
    if constexpr (NB > 1) __asm__("" : "+x"(xv));
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm256_fmadd_ps(values[j], xv, acc[r][j]);
  }
  if constexpr (G + 1 < B::kGroups) multiply_groups<B, MB, NB, G + 1>(state, panel, acc);
}

// A register tile: out[r][n] for MB activation rows r0.. and NB weight rows n0... Each group of eight weights
// is dequantized once and multiplied into MB rows; each activation vector is loaded once for NB weight rows;
// MB * NB accumulators, one per output.
template <class B, int MB, int NB>
KV_AVX2_INLINE void tile(const MatmulArgs& a, int64_t r0, int64_t n0) {
  using F = typename B::Format;
  __m256 acc[MB][NB];
  for (int r = 0; r < MB; ++r) {
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const uint8_t* w = a.w + n0 * a.row_stride;
  const int64_t num_blocks = a.k / F::kValues;
  const float* panel = a.panels + r0 * num_blocks * F::kValues;
  // The hardware prefetchers lose track of NB interleaved row streams: the first row tile fetches the next
  // tile's weights (the NB rows after these, contiguous) one line at a time as it consumes its own.
  const uint8_t* ahead = w + NB * a.row_stride;
  const uint8_t* ahead_end = r0 == 0 ? ahead + NB * a.row_stride : ahead;
  const int64_t ahead_step = (NB * a.row_stride + num_blocks - 1) / std::max<int64_t>(num_blocks, 1);
  const uint8_t* ahead_limit = ahead;
  for (int64_t b = 0; b < num_blocks; ++b) {
    ahead_limit += ahead_step;
    for (; ahead < ahead_limit && ahead < ahead_end; ahead += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
    }
    typename B::State state[NB];
    for (int j = 0; j < NB; ++j) state[j] = B::load(w + j * a.row_stride + b * F::kBytes);
    multiply_groups<B, MB, NB>(state, panel + b * F::kValues * MB, acc);
  }
  const float* x = a.x + r0 * a.x_stride;
  for (int r = 0; r < MB; ++r) {
    for (int j = 0; j < NB; ++j) {
      float sum = avx2::horizontal_sum(acc[r][j]);
      if constexpr (F::kRows) {  // the values after the last whole block of 32
        constexpr int kValueBytes = F::kBytes / F::kValues;
        for (int64_t i = num_blocks * F::kValues; i < a.k; ++i) {
          sum += F::value(w + j * a.row_stride + kValueBytes * i) * x[r * a.x_stride + i];
        }
      }
      a.out[(r0 + r) * a.out_stride + n0 + j] = sum;
    }
  }
}

// Tile shapes: kRows activation rows at a time (then 4, 2, 1 for the rest), cols(MB) weight rows.
struct Avx512Tiles {  // 32 vector registers
  static constexpr int kRows = 8;
  static constexpr int cols(int mb) { return mb >= 8 ? 2 : 4; }
};
struct Avx2Tiles {  // 16 vector registers
  static constexpr int kRows = 4;
  static constexpr int cols(int mb) { return mb >= 4 ? 2 : 4; }
};

// Activation rows [r, r + MB) against weight rows [n0, n1), T::cols(MB) at a time.
template <class B, class T, int MB>
KV_AVX2_INLINE void row_sweep(const MatmulArgs& a, int64_t r, int64_t n0, int64_t n1) {
  constexpr int NB = T::cols(MB);
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) tile<B, MB, NB>(a, r, n);
  for (; n < n1; ++n) tile<B, MB, 1>(a, r, n);
}

// Weights per chunk of rows: a chunk stays in L2 while each group of activation rows (in L1) sweeps it, so W
// is read from memory once and the activations are not evicted by it.
constexpr int64_t kChunkBytes = 1 << 18;

// Weight rows [n0, n1): chunks of rows (a multiple of every tile's width), each swept by T::kRows activation
// rows at a time, then by halves of that (the same split as pack_panels).
template <class B, class T>
KV_AVX2_INLINE void matmul_tiles(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / a.row_stride / 4) * 4;
  for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
    const int64_t c1 = std::min(c0 + chunk, n1);
    int64_t r = 0;
    for (; r + T::kRows <= a.m; r += T::kRows) row_sweep<B, T, T::kRows>(a, r, c0, c1);
    if constexpr (T::kRows > 4) {
      if (a.m - r >= 4) row_sweep<B, T, 4>(a, r, c0, c1), r += 4;
    }
    if (a.m - r >= 2) row_sweep<B, T, 2>(a, r, c0, c1), r += 2;
    if (a.m - r >= 1) row_sweep<B, T, 1>(a, r, c0, c1);
  }
}

template <class F>
KV_AVX512 void matmul_avx512(const MatmulArgs& a, int64_t n0, int64_t n1) {
  matmul_tiles<RegisterBlocks<F>, Avx512Tiles>(a, n0, n1);
}
template <class F>
KV_AVX2 void matmul_avx2(const MatmulArgs& a, int64_t n0, int64_t n1) {
  matmul_tiles<RegisterBlocks<F>, Avx2Tiles>(a, n0, n1);
}
template <class F>
void matmul_baseline(const MatmulArgs& a, int64_t n0, int64_t n1) {
  matmul_rows<F, 8>(a, n0, n1);
}
template <class F>
KV_AVX512 void dequantize_avx512(float* out, const uint8_t* w, int64_t row_stride, int64_t k, int64_t n0, int64_t n1) {
  dequantize_rows_range<F>(out, w, row_stride, k, n0, n1);
}
template <class F>
KV_AVX2 void dequantize_avx2(float* out, const uint8_t* w, int64_t row_stride, int64_t k, int64_t n0, int64_t n1) {
  dequantize_rows_range<F>(out, w, row_stride, k, n0, n1);
}
template <class F>
void dequantize_baseline(float* out, const uint8_t* w, int64_t row_stride, int64_t k, int64_t n0, int64_t n1) {
  dequantize_rows_range<F>(out, w, row_stride, k, n0, n1);
}

const Isa kIsa = detect_isa();

struct Kernels {
  MatmulFn matmul;
  DequantizeFn dequantize;
  int values_per_block;
  int bytes_per_block;
  int tile_rows;  // activation rows per register tile (pack_panels), 0 for the baseline build
};

template <class F>
Kernels kernels_of() {
  switch (kIsa) {
    case Isa::kAvx512:
      return {matmul_avx512<F>, dequantize_avx512<F>, F::kValues, F::kBytes, Avx512Tiles::kRows};
    case Isa::kAvx2:
      return {matmul_avx2<F>, dequantize_avx2<F>, F::kValues, F::kBytes, Avx2Tiles::kRows};
    default:
      return {matmul_baseline<F>, dequantize_baseline<F>, F::kValues, F::kBytes, 0};
  }
}

Kernels kernels_for(int format) {
  switch (static_cast<WeightFormat>(format)) {
    case WeightFormat::kF32:
      return kernels_of<F32>();
    case WeightFormat::kF16:
      return kernels_of<F16>();
    case WeightFormat::kBF16:
      return kernels_of<BF16>();
    case WeightFormat::kQ4_0:
      return kernels_of<Q4_0>();
    case WeightFormat::kQ4_1:
      return kernels_of<Q4_1>();
    case WeightFormat::kQ8_0:
      return kernels_of<Q8_0>();
    case WeightFormat::kQ4_K:
      return kernels_of<Q4_K>();
    case WeightFormat::kQ5_K:
      return kernels_of<Q5_K>();
    case WeightFormat::kQ6_K:
      return kernels_of<Q6_K>();
  }
  throw std::invalid_argument(std::string(__FILE__) + ":" + std::to_string(__LINE__) +
                              ": no CPU kernel for weight format " + std::to_string(format));
}

bool is_rows(int format) {
  switch (static_cast<WeightFormat>(format)) {
    case WeightFormat::kF32:
    case WeightFormat::kF16:
    case WeightFormat::kBF16:
      return true;
    default:
      return false;
  }
}


// Activation rows packed at a time (a multiple of every tile height): bounds the panel buffer for prefill.
constexpr int64_t kPanelRows = 64;

// Below this many weights a layer is not worth waking the other threads for.
constexpr int64_t kMinWeightsPerThread = 1 << 15;

// Splits [0, rows) into one contiguous range per thread and calls body(begin, end) on each.
template <class Body>
void parallel_rows(int64_t rows, int64_t weights_per_row, int num_threads, Body body) {
  const int64_t useful = std::max<int64_t>(1, rows * weights_per_row / kMinWeightsPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, useful)));
  if (threads == 1) {
    body(0, rows);
    return;
  }
  // Boundaries on multiples of 16 rows: whole register tiles, and no cache line of an output row written by
  // two threads.
  const auto boundary = [rows](int64_t t, int64_t count) { return t == count ? rows : rows * t / count / 16 * 16; };
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
    body(boundary(t, count), boundary(t + 1, count));
  }
}

}  // namespace

const char* quant_matmul_isa() {
  switch (kIsa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

int64_t weight_row_bytes(int format, int64_t k) {
  const Kernels kernels = kernels_for(format);
  if (is_rows(format)) return k * kernels.bytes_per_block / kernels.values_per_block;
  if (k % kernels.values_per_block != 0) {
    throw std::invalid_argument(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": a row of " +
                                std::to_string(k) + " values is not a whole number of blocks of " +
                                std::to_string(kernels.values_per_block));
  }
  return k / kernels.values_per_block * kernels.bytes_per_block;
}

namespace {

void check_stride(int format, int64_t k, int64_t row_stride) {
  if (row_stride < weight_row_bytes(format, k)) {
    throw std::invalid_argument(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": row stride " +
                                std::to_string(row_stride) + " is shorter than a row of " + std::to_string(k) +
                                " values");
  }
}

}  // namespace

void quant_matmul(float* out, const float* x, const uint8_t* w, int format, int64_t m, int64_t n, int64_t k,
                  int64_t row_stride, int64_t x_stride, int64_t out_stride, int num_threads) {
  const Kernels kernels = kernels_for(format);
  check_stride(format, k, row_stride);
  if (m == 1 || kernels.tile_rows == 0) {
    const MatmulArgs args{out, x, w, m, k, x_stride, out_stride, row_stride, x};
    parallel_rows(n, k * m, num_threads, [&](int64_t n0, int64_t n1) { kernels.matmul(args, n0, n1); });
    return;
  }
  // Activation rows kPanelRows at a time, packed into panels once for all threads; the buffer is kept per
  // calling thread, so a decode step does not allocate.
  thread_local std::vector<float> panels;
  const int64_t k8 = k / 32 * 32;
  panels.resize(static_cast<size_t>(std::min(m, kPanelRows) * k8));
  for (int64_t r = 0; r < m; r += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, m - r);
    pack_panels(x + r * x_stride, x_stride, rows, k8, kernels.tile_rows, panels.data());
    const MatmulArgs args{out + r * out_stride, x + r * x_stride, w, rows, k, x_stride, out_stride, row_stride,
                          panels.data()};
    parallel_rows(n, k * rows, num_threads, [&](int64_t n0, int64_t n1) { kernels.matmul(args, n0, n1); });
  }
}

void dequantize_weight_rows(float* out, const uint8_t* w, int format, int64_t rows, int64_t k, int64_t row_stride,
                            int num_threads) {
  const Kernels kernels = kernels_for(format);
  check_stride(format, k, row_stride);
  parallel_rows(rows, k, num_threads,
                [&](int64_t n0, int64_t n1) { kernels.dequantize(out + n0 * k, w, row_stride, k, n0, n1); });
}

void dequantize_gathered_rows(float* out, const uint8_t* w, int format, const int64_t* ids, int64_t num_ids,
                              int64_t k, int64_t row_stride) {
  const Kernels kernels = kernels_for(format);
  check_stride(format, k, row_stride);
  for (int64_t i = 0; i < num_ids; ++i) kernels.dequantize(out + i * k, w, row_stride, k, ids[i], ids[i] + 1);
}

}  // namespace kvserve::cpu
