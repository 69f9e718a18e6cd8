// y = x · Wᵀ with W kept in its stored format (GGUF blocks or half-precision rows) and float32 activations
// and accumulation. Q4_0, Q4_1 and Q8_0 are dequantized in registers on AVX2/AVX-512 (quant_avx2.h) and
// multiplied into four activation rows at a time; the other formats (and the baseline build) dequantize
// each weight row once into a float32 buffer in L1 and dot it with every activation row. Either way a
// decode-sized batch reads W once.
//
// One build runs on any x86-64: the loops are compiled three times (AVX-512, AVX2+FMA+F16C, baseline) and
// the widest the CPU supports is chosen once. Rows are split across OpenMP threads: torch's CPU ops run on
// the same OpenMP runtime (one libgomp per process, loaded by whichever of torch and this module comes
// first), so both share one pool of threads and the caller passes torch's thread count.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
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
};

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

// The register path's block type for a format (the avx2 struct whose Format it is), or void.
template <class F, class... Blocks>
struct FindBlocks {
  using type = void;
};
template <class F, class B, class... Rest>
struct FindBlocks<F, B, Rest...> {
  using type = std::conditional_t<std::is_same_v<typename B::Format, F>, B, typename FindBlocks<F, Rest...>::type>;
};
template <class F>
using RegisterBlocks = FindBlocks<F, avx2::Q4_0, avx2::Q4_1, avx2::Q8_0, avx2::F32, avx2::F16, avx2::BF16>;

// The K-quants: each weight row dequantized once into an L1 buffer, then the float32 register path over it.
template <class F>
KV_AVX2_INLINE void matmul_buffered(const MatmulArgs& a, int64_t n0, int64_t n1) {
  std::vector<float> buffer(static_cast<size_t>(a.k));
  const uint8_t* row = reinterpret_cast<const uint8_t*>(buffer.data());
  for (int64_t n = n0; n < n1; ++n) {
    dequantize_row<F>(a.w + n * a.row_stride, a.k, buffer.data());
    int64_t r = 0;
    for (; r + 4 <= a.m; r += 4) {
      avx2::dot_blocks<avx2::F32, 4>(row, a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n,
                                     a.out_stride);
    }
    for (; r < a.m; ++r) {
      avx2::dot_blocks<avx2::F32, 1>(row, a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n,
                                     a.out_stride);
    }
  }
}

template <class B>
KV_AVX2_INLINE void matmul_registers(const MatmulArgs& a, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = a.w + n * a.row_stride;
    int64_t r = 0;
    for (; r + 4 <= a.m; r += 4) {
      avx2::dot_blocks<B, 4>(row, a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n, a.out_stride);
    }
    for (; r < a.m; ++r) {
      avx2::dot_blocks<B, 1>(row, a.x + r * a.x_stride, a.x_stride, a.k, a.out + r * a.out_stride + n, a.out_stride);
    }
  }
}

template <class F>
KV_AVX2_INLINE void matmul_vector(const MatmulArgs& a, int64_t n0, int64_t n1) {
  if constexpr (std::is_void_v<typename RegisterBlocks<F>::type>) {
    matmul_buffered<F>(a, n0, n1);
  } else {
    matmul_registers<typename RegisterBlocks<F>::type>(a, n0, n1);
  }
}

template <class F>
KV_AVX512 void matmul_avx512(const MatmulArgs& a, int64_t n0, int64_t n1) {
  matmul_vector<F>(a, n0, n1);
}
template <class F>
KV_AVX2 void matmul_avx2(const MatmulArgs& a, int64_t n0, int64_t n1) {
  matmul_vector<F>(a, n0, n1);
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
};

template <class F>
Kernels kernels_of() {
  switch (kIsa) {
    case Isa::kAvx512:
      return {matmul_avx512<F>, dequantize_avx512<F>, F::kValues, F::kBytes};
    case Isa::kAvx2:
      return {matmul_avx2<F>, dequantize_avx2<F>, F::kValues, F::kBytes};
    default:
      return {matmul_baseline<F>, dequantize_baseline<F>, F::kValues, F::kBytes};
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
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
    body(rows * t / count, rows * (t + 1) / count);
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
  const MatmulArgs args{out, x, w, m, k, x_stride, out_stride, row_stride};
  parallel_rows(n, k * m, num_threads, [&](int64_t n0, int64_t n1) { kernels.matmul(args, n0, n1); });
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
