// The sampler's per-row selections, rows split across OpenMP threads: at 256 rows of a 49k vocabulary a step
// reads 50 MB of logits, which one core cannot stream at the memory's speed.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "row_select.h"
#include "simd.h"  // KV_CLONES

namespace kvserve::cpu {
namespace {

// Rows below this many values in all are not worth waking the other threads for.
constexpr int64_t kMinValuesPerThread = 1 << 16;

// Lanes of GCC vector types: each keeps its running maximum and where it first occurred (a strict > keeps
// the first), one compare and two blends per eight values, in kChains independent chains so that the
// compare-blend latency does not bound the loop; the lanes are then folded, lowest index first among equal
// maxima. NaN is tracked on the side: a row holding one takes its first NaN. One AVX2 register wide: GCC
// splits 64-byte vectors into register pairs badly in the AVX2 build (spilling every blend to the stack: a
// 256 x 49k argmax took 40 ms on one core instead of 4), and the AVX-512 build is bound by memory either way.
typedef float Floats __attribute__((vector_size(32)));
typedef int32_t Ints __attribute__((vector_size(32)));
constexpr int kWidth = 8;
constexpr int kChains = 8;
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

// Whether any lane of a compare's result is set: OR-folded 64 bits at a time, not lane by lane.
KV_INLINE bool any_lane(const Ints& mask) {
  uint64_t words[sizeof(Ints) / 8];
  std::memcpy(words, &mask, sizeof(words));
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  return any != 0;
}

// Candidates of a top-k row: the value and its index; `ranks_below(a, b)`: a comes after b in the output
// (NaN first, then larger values, then lower indices among equal values).
using Candidate = std::pair<float, int64_t>;

inline bool ranks_below(const Candidate& a, const Candidate& b) {
  const bool a_nan = a.first != a.first, b_nan = b.first != b.first;
  if (a_nan || b_nan) return b_nan && (!a_nan || a.second > b.second);
  return a.first < b.first || (a.first == b.first && a.second > b.second);
}

// The least of k chunk maxima bounds the k-th largest value from below (k distinct values reach it), so the
// top k lie among the values >= it: on a trained model's logits a few hundred of 49k. One vectorised pass
// finds the bound, a second (from L2) collects those values, and a selection and a sort of the few finish.
// A row holding NaN collects everything; a bound of -inf (rows masked to -inf, e.g. by min-p) collects the
// finite values and, when they are fewer than k, the first -inf ones.
KV_CLONES void topk_row(const float* x, int64_t n, int64_t k, std::vector<Candidate>& found, float* values,
                        int64_t* indices) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const int64_t chunk = n / k;
  float bound = kInf;
  Ints nan = {};
  for (int64_t c = 0; c < k; ++c) {
    const int64_t begin = c * chunk, end = c == k - 1 ? n : begin + chunk;
    Floats lanes;
    for (int l = 0; l < kWidth; ++l) lanes[l] = -kInf;
    int64_t i = begin;
    for (; i + kWidth <= end; i += kWidth) {
      Floats v;
      std::memcpy(&v, x + i, sizeof(v));
      lanes = v > lanes ? v : lanes;
      nan |= v != v;
    }
    float peak = -kInf;
    for (int l = 0; l < kWidth; ++l) peak = lanes[l] > peak ? lanes[l] : peak;
    for (; i < end; ++i) {
      peak = x[i] > peak ? x[i] : peak;
      nan[0] |= x[i] != x[i];
    }
    bound = peak < bound ? peak : bound;
  }
  bool any_nan = false;
  for (int l = 0; l < kWidth; ++l) any_nan = any_nan || nan[l] != 0;
  found.clear();
  if (any_nan) {
    for (int64_t i = 0; i < n; ++i) found.emplace_back(x[i], i);
  } else {
    const bool finite_only = bound == -kInf;  // then take the values > -inf, topped up below
    int64_t i = 0;
    for (; i + kWidth <= n; i += kWidth) {
      Floats v;
      std::memcpy(&v, x + i, sizeof(v));
      const Ints take = finite_only ? v > bound : v >= bound;
      if (!any_lane(take)) continue;
      for (int l = 0; l < kWidth; ++l) {
        if (take[l]) found.emplace_back(v[l], i + l);
      }
    }
    for (; i < n; ++i) {
      if (finite_only ? x[i] > bound : x[i] >= bound) found.emplace_back(x[i], i);
    }
    for (int64_t j = 0; finite_only && static_cast<int64_t>(found.size()) < k; ++j) {
      if (x[j] == -kInf) found.emplace_back(x[j], j);
    }
  }
  const auto select = [&](auto ranks_above) {
    if (static_cast<int64_t>(found.size()) > k) {
      std::nth_element(found.begin(), found.begin() + (k - 1), found.end(), ranks_above);
      found.resize(static_cast<size_t>(k));
    }
    std::sort(found.begin(), found.end(), ranks_above);
  };
  if (any_nan) {
    select([](const Candidate& a, const Candidate& b) { return ranks_below(b, a); });
  } else {  // the same order without NaN's branches
    select([](const Candidate& a, const Candidate& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
  }
  for (int64_t j = 0; j < k; ++j) values[j] = found[j].first, indices[j] = found[j].second;
}

}  // namespace

void row_argmax(int64_t* out, const float* x, int64_t rows, int64_t cols, int64_t x_stride, int num_threads) {
  if (cols == 0) return;
  const int64_t useful = std::max<int64_t>(1, rows * cols / kMinValuesPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, useful, rows})));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < rows; ++r) out[r] = argmax_row(x + r * x_stride, cols);
}

void row_topk(float* values, int64_t* indices, const float* x, int64_t rows, int64_t cols, int64_t x_stride, int64_t k,
              int num_threads) {
  const int64_t useful = std::max<int64_t>(1, rows * cols / kMinValuesPerThread);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, useful, rows})));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<Candidate> found;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) topk_row(x + r * x_stride, cols, k, found, values + r * k, indices + r * k);
  }
}

}  // namespace kvserve::cpu
