// An elementwise op's rows shared out among OpenMP threads (the runtime torch's ops use: one pool).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace kvserve::cpu {

// Below this many values in all, an elementwise op's rows run on one thread: waking the others costs more.
constexpr int64_t kMinElementwiseValues = 1 << 14;

// Calls body(begin, end) for contiguous ranges of `rows` (`values` in all) on up to num_threads threads.
template <class Body>
void split_rows(int64_t rows, int64_t values, int num_threads, Body body) {
  const int threads = values < kMinElementwiseValues ? 1 : static_cast<int>(std::min<int64_t>(num_threads, rows));
  if (threads <= 1) {
    body(int64_t{0}, rows);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    body(rows * t / n, rows * (t + 1) / n);
  }
}

}  // namespace kvserve::cpu
