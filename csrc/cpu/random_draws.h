// Counter-based random draws for the sampler: a value is a pure function of (seed, counter, index), so a seeded
// request's draws depend on nothing but its seed and how many steps it has sampled, and any subset of indices
// can be drawn on its own.
#pragma once

#include <cstdint>

namespace kvserve::cpu {

// out[r * out_stride + c] = an Exp(1) draw for (seeds[r], counters[r], index c): -log(u) of a uniform u in
// (0, 1) from word c % 4 of Philox4x32-10 (Salmon et al., SC'11) keyed by the seed, at counter
// (c / 4, counter). u has 23 random bits, so draws lie in [6e-8, 16.6]. Rows are split across num_threads
// OpenMP threads.
void exponential_draws(float* out, int64_t rows, int64_t cols, int64_t out_stride, const uint64_t* seeds,
                       const uint64_t* counters, int num_threads);

// The exponential race of each row in one pass, without the probabilities: out[r] = argmax_c of
// logits[r, c] / temperatures[r] - log(E), E the draw exponential_draws gives for (seeds[r], counters[r], c).
// That is argmax_c p_c / E of the race over softmax(logits / temperature), the same token for the same draws
// (up to the roundings of the two ways). NaN keys count as the maximum, the first maximum wins (as row_argmax).
void exponential_race(int64_t* out, const float* logits, int64_t rows, int64_t cols, int64_t logits_stride,
                      const float* temperatures, const uint64_t* seeds, const uint64_t* counters, int num_threads);

}  // namespace kvserve::cpu
