// Per-row selections over float32 logits for the sampler: the greedy argmax, and the top k candidates.
#pragma once

#include <cstdint>

namespace kvserve::cpu {

// out[r] = index of the first maximum of row r (NaN counts as the maximum, as torch.argmax and numpy do);
// rows are split across num_threads OpenMP threads.
void row_argmax(int64_t* out,    // [rows]
                const float* x,  // [rows, cols], row stride x_stride
                int64_t rows, int64_t cols, int64_t x_stride, int num_threads);

// The k largest values of each row and their indices, in descending order (NaN counting as the largest, as
// torch.topk orders them; among equal values the lower index first); 1 <= k <= cols.
void row_topk(float* values,     // [rows, k]
              int64_t* indices,  // [rows, k]
              const float* x,    // [rows, cols], row stride x_stride
              int64_t rows, int64_t cols, int64_t x_stride, int64_t k, int num_threads);

}  // namespace kvserve::cpu
