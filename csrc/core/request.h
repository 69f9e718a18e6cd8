// One request's scheduling state. The scheduler owns it; nothing outside the core holds a pointer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvserve {

enum class FinishReason : int8_t { kNone = 0, kStop = 1, kLength = 2, kAbort = 3 };

enum class RequestStatus : int8_t { kWaiting = 0, kRunning = 1, kFinished = 2 };

// What a request asks of the model. The kinds differ only in what a finished prompt leads to:
//   generate         sample a token, then keep going (decode) until a stop rule fires
//   prefill only     nothing sampled: the prompt's output row is pooled and the request is done
//   encoder-decoder  as generate, plus an encoder input that runs once per admission and whose output
//                    (num_encoder_tokens positions of cross-attention K/V) lives in cross blocks
enum class TaskKind : int8_t { kGenerate = 0, kPrefillOnly = 1, kEncoderDecoder = 2 };

// Stopping rules and queueing attributes, validated by Scheduler::add_request.
struct RequestParams {
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;
  std::vector<int32_t> eos_token_ids;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int64_t priority = 0;  // lower runs first under the priority policy
  double arrival_time = 0.0;
  std::string cache_salt;  // requests share cached blocks only with requests of the same salt
  bool skip_prefix_cache = false;  // compute every prompt token (prompt logprobs need them); still registers
  TaskKind task = TaskKind::kGenerate;
  int32_t num_encoder_tokens = 0;  // encoder-decoder only: the cross-attention K/V length
  // May be scheduled again while its last sampled token is still in flight (overlapped scheduling). Off for
  // requests whose next step needs that token on the host first (a grammar's next bitmask).
  bool allow_overlap = true;
};

//   | computed (KV in blocks) | scheduled this step | not yet scheduled | in flight (placeholders) |
//   0                num_computed_tokens                        token_ids.size()     + num_output_placeholders
// A placeholder is a token sampled by a scheduled step whose id has not come back yet; with overlapped
// scheduling the next step already computes it (its id is filled in on the device), so num_computed_tokens
// may run one past token_ids.size(). update() turns the oldest placeholder into a real token.
// Only real tokens are hashed into the prefix cache.
// block_ids covers ceil(num_computed_tokens / block_size) blocks once a step is scheduled; the first
// num_registered_blocks of them went through the prefix cache (registered, or found there).
//
// An encoder-decoder request also holds cross blocks, for its encoder output:
//   waiting   cross_block_ids empty (a preempted request gives them back and reruns its encoder)
//   running   cross_block_ids = ceil(num_encoder_tokens / block_size) fresh blocks, taken at admission,
//             never registered in the prefix cache; freed on finish, abort and preemption
// The slot (the request's row in the runner's persistent batch) lives from add_request to finish or abort,
// across preemptions.
struct Request {
  std::string request_id;
  int64_t handle = 0;  // also the arrival sequence number: FCFS order
  RequestParams params;
  std::vector<int32_t> token_ids;  // prompt, then output
  int32_t num_prompt_tokens = 0;
  int32_t num_computed_tokens = 0;
  int32_t num_output_placeholders = 0;  // sampled rows of scheduled steps not yet updated (at most 2)
  int32_t num_cached_tokens = -1;  // prefix hit at first admission; -1 until admitted
  RequestStatus status = RequestStatus::kWaiting;

  std::vector<int32_t> block_ids;
  int32_t num_registered_blocks = 0;
  uint64_t root_hash = 0;               // chain root, from the cache salt
  std::vector<uint64_t> block_hashes;   // of the full blocks of token_ids, extended lazily
  std::vector<int32_t> cross_block_ids;
  int32_t slot = -1;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  int32_t num_tokens_with_placeholders() const { return num_tokens() + num_output_placeholders; }
  bool is_prefill_only() const { return params.task == TaskKind::kPrefillOnly; }
  bool is_encoder_decoder() const { return params.task == TaskKind::kEncoderDecoder; }
  // The decoder's K/V depends on the encoder input, which the block hashes do not cover: an
  // encoder-decoder request neither reads nor registers cached blocks, so two requests with the same
  // decoder prompt and different audio can never share K/V.
  bool reads_prefix_cache() const { return !params.skip_prefix_cache && !is_encoder_decoder(); }
  bool registers_prefix_cache() const { return !is_encoder_decoder(); }
};

}  // namespace kvserve
