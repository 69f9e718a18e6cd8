// Greedy sampling's argmax, rows split across OpenMP threads: at 256 rows of a 49k vocabulary the step
// reads 50 MB of logits, which one core cannot stream at the memory's speed.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "row_argmax.h"
#include "simd.h"  // KV_CLONES

namespace kvserve::cpu {
namespace {

// Rows below this many values in all are not worth waking the other threads for.
constexpr int64_t kMinValuesPerThread = 1 << 16;

// Lanes of GCC vector types: each keeps its running maximum and where it first occurred (a strict > keeps
// the first), one compare and two blends per sixteen values, in kChains independent chains so that the
// compare-blend latency does not bound the loop; the lanes are then folded, lowest index first among equal
// maxima. NaN is tracked on the side: a row holding one takes its first NaN.
typedef float Floats __attribute__((vector_size(64)));
typedef int32_t Ints __attribute__((vector_size(64)));
constexpr int kWidth = 16;
constexpr int kChains = 4;
constexpr int64_t kStep = kWidth * kChains;

KV_CLONES int64_t argmax_row(const float* x, int64_t n) {
  float peak = x[0];
  int64_t index = 0;
  bool any_nan = x[0] != x[0];
  int64_t i = 1;
  if (n >= 2 * kStep) {
    Floats best[kChains];
    Ints best_at[kChains], at[kChains], nan[kChains];
    for (int c = 0; c < kChains; ++c) {
      std::memcpy(&best[c], x + c * kWidth, sizeof(Floats));
      for (int l = 0; l < kWidth; ++l) at[c][l] = c * kWidth + l;
      best_at[c] = at[c];
      nan[c] = best[c] != best[c];
    }
    for (i = kStep; i + kStep <= n; i += kStep) {
      for (int c = 0; c < kChains; ++c) {
        Floats v;
        std::memcpy(&v, x + i + c * kWidth, sizeof(v));
        at[c] += kStep;
        const Ints greater = v > best[c];
        best[c] = greater ? v : best[c];
        best_at[c] = greater ? at[c] : best_at[c];
        nan[c] |= v != v;
      }
    }
    peak = best[0][0];
    index = best_at[0][0];
    for (int c = 0; c < kChains; ++c) {
      for (int l = 0; l < kWidth; ++l) {
        const float b = best[c][l];
        if (b > peak || (b == peak && best_at[c][l] < index)) peak = b, index = best_at[c][l];
        any_nan = any_nan || nan[c][l] != 0;
      }
    }
  }
  for (; i < n; ++i) {  // the tail, after every index above: a strict > keeps the first maximum
    if (x[i] > peak) peak = x[i], index = i;
    any_nan = any_nan || x[i] != x[i];
  }
  if (any_nan) {
    for (int64_t j = 0; j < n; ++j) {
      if (x[j] != x[j]) return j;
    }
  }
  return index;
}

}  // namespace

void row_argmax(int64_t* out, const float* x, int64_t rows, int64_t cols, int64_t x_stride, int num_threads) {
  if (cols == 0) return;
  const int64_t useful = std::max<int64_t>(1, rows * cols / kMinValuesPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, useful, rows})));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < rows; ++r) out[r] = argmax_row(x + r * x_stride, cols);
}

}  // namespace kvserve::cpu
