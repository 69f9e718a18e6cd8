// What one schedule() and one update() hand to Python: flat batch arrays, exposed as numpy views.
#pragma once

#include <cstdint>
#include <vector>

namespace kvserve {

// One step's counts. Every field describes this step alone (or the state right after it): a consumer sums
// the deltas, nothing here is cumulative.
struct StepStats {
  int32_t num_running = 0;           // after this schedule
  int32_t num_waiting = 0;           // after this schedule
  int32_t num_used_blocks = 0;       // referenced by a request (cached free blocks are not used)
  int32_t num_free_blocks = 0;
  int32_t num_total_blocks = 0;
  int32_t prefix_cache_queries = 0;  // tokens of the requests admitted this step that queried the cache
  int32_t prefix_cache_hits = 0;     // of those, tokens served from cached blocks
  int32_t num_preemptions = 0;
  int32_t num_scheduled_tokens = 0;
  int32_t num_scheduled_reqs = 0;
  int32_t num_encoder_tokens = 0;    // encoder inputs run this step
};

// The batch of one step. R scheduled requests, T scheduled tokens, S sampled rows, P pooled requests,
// E encoder runs, X placeholder tokens, W block-table width, Wc cross-block-table width.
// Requests appear running-first, then newly admitted, and their tokens are contiguous in that order.
// A request whose prompt completes this step is a sampled row, or a pooled one if it is prefill-only.
struct SchedulerOutput {
  std::vector<int64_t> req_handles;        // [R]
  std::vector<int32_t> req_slots;          // [R] each request's row in the runner's persistent batch
  std::vector<int32_t> input_ids;          // [T] -1 at placeholder positions
  std::vector<int32_t> positions;          // [T]
  std::vector<int64_t> slot_mapping;       // [T] block_id * block_size + offset of each token's KV
  std::vector<int32_t> block_tables;       // [R, W] row-major, padded with 0
  std::vector<int32_t> query_start_loc;    // [R + 1]
  std::vector<int32_t> seq_lens;           // [R] context length after this step
  std::vector<int32_t> logits_indices;     // [S] rows of the hidden states to sample
  std::vector<int64_t> sample_handles;     // [S] the request of each sampled row
  std::vector<int32_t> sample_slots;       // [S]
  std::vector<int64_t> pool_handles;       // [P] prefill-only requests whose prompt completes this step
  std::vector<int32_t> pool_req_indices;   // [P] index into req_handles: rows query_start_loc[i]..[i + 1]
  std::vector<int32_t> pool_slots;         // [P]
  std::vector<int64_t> encoder_handles;    // [E] encoder-decoder requests whose encoder runs this step
  std::vector<int32_t> encoder_req_indices;  // [E] index into req_handles
  std::vector<int32_t> cross_block_tables;   // [R, Wc] row-major, padded with 0
  std::vector<int32_t> cross_seq_lens;       // [R] num_encoder_tokens, 0 for the other kinds
  std::vector<int64_t> cross_slot_mapping;   // [sum of the E encoder lengths] where each encoder output goes
  std::vector<int64_t> preempted_handles;  // requests sent back to waiting in this step
  // Overlapped scheduling: tokens whose id the previous step samples. The runner fills input_ids[index]
  // with the token it last sampled for the request in that slot, on the device.
  std::vector<int32_t> placeholder_indices;  // [X] into input_ids
  std::vector<int32_t> placeholder_slots;    // [X] the slot whose last sampled token goes there
  int32_t block_table_width = 0;
  int32_t cross_block_table_width = 0;
  int32_t max_query_len = 0;
  int32_t max_seq_len = 0;
  StepStats stats;

  int32_t num_reqs() const { return static_cast<int32_t>(req_handles.size()); }
  int32_t num_tokens() const { return static_cast<int32_t>(input_ids.size()); }
};

// One entry per sampled row of the step whose request still exists, in sampled-row order; pooled requests
// (which sample nothing) are listed apart.
struct UpdateOutput {
  std::vector<int64_t> handles;            // [N]
  std::vector<int32_t> token_ids;          // [N] the appended token
  std::vector<int8_t> finish_reasons;      // [N] FinishReason
  std::vector<int32_t> stop_reasons;       // [N] the matched stop token id, or -1
  std::vector<int32_t> num_cached_tokens;  // [N] prompt tokens served from the prefix cache
  std::vector<int64_t> pooled_handles;     // [P'] prefill-only requests finished by this update, pool order
};

}  // namespace kvserve
