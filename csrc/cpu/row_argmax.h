// The greedy sampler's argmax over float32 logits.
#pragma once

#include <cstdint>

namespace kvserve::cpu {

// out[r] = index of the first maximum of row r (NaN counts as the maximum, as torch.argmax and numpy do);
// rows are split across num_threads OpenMP threads.
void row_argmax(int64_t* out,    // [rows]
                const float* x,  // [rows, cols], row stride x_stride
                int64_t rows, int64_t cols, int64_t x_stride, int num_threads);

}  // namespace kvserve::cpu
