// What one schedule() and one update() hand to Python: flat batch arrays, exposed as numpy views.
#pragma once

#include <cstdint>
#include <vector>

namespace kvserve {

// The batch of one step. R scheduled requests, T scheduled tokens, S sampled rows, W block-table width.
// Requests appear running-first, then newly admitted, and their tokens are contiguous in that order.
struct SchedulerOutput {
  std::vector<int64_t> req_handles;        // [R]
  std::vector<int32_t> input_ids;          // [T]
  std::vector<int32_t> positions;          // [T]
  std::vector<int64_t> slot_mapping;       // [T] block_id * block_size + offset of each token's KV
  std::vector<int32_t> block_tables;       // [R, W] row-major, padded with 0
  std::vector<int32_t> query_start_loc;    // [R + 1]
  std::vector<int32_t> seq_lens;           // [R] context length after this step
  std::vector<int32_t> logits_indices;     // [S] rows of the hidden states to sample
  std::vector<int64_t> sample_handles;     // [S] the request of each sampled row
  std::vector<int64_t> preempted_handles;  // requests sent back to waiting in this step
  int32_t block_table_width = 0;
  int32_t max_query_len = 0;
  int32_t max_seq_len = 0;

  int32_t num_reqs() const { return static_cast<int32_t>(req_handles.size()); }
  int32_t num_tokens() const { return static_cast<int32_t>(input_ids.size()); }
};

// One entry per sampled row of the step whose request still exists, in sampled-row order.
struct UpdateOutput {
  std::vector<int64_t> handles;            // [N]
  std::vector<int32_t> token_ids;          // [N] the appended token
  std::vector<int8_t> finish_reasons;      // [N] FinishReason
  std::vector<int32_t> stop_reasons;       // [N] the matched stop token id, or -1
  std::vector<int32_t> num_cached_tokens;  // [N] prompt tokens served from the prefix cache
};

}  // namespace kvserve
