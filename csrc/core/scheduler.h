// Continuous-batching scheduler: no prefill or decode phase, each request's num_computed_tokens catches
// up to its num_tokens. Running requests are served first (highest priority first), then waiting ones,
// within max_num_seqs and the max_num_batched_tokens budget; long prompts are chunked; when blocks run
// out the last running request (lowest priority, newest) is preempted and recomputed later.
// Task kinds (request.h) add two rules at admission: a prefill-only prompt is never chunked, and an
// encoder-decoder request also needs its encoder length from the per-step encoder budget and its cross
// blocks from the pool.
//
// Overlapped scheduling: schedule() may run again before update() of the previous step (at most two steps
// scheduled and not updated: one executing, one next). A request whose last token is still in flight is
// scheduled with a placeholder input token (request.h) if it allows overlap and that token cannot end it
// on length; update() then applies the steps' tokens in order and drops the rows of requests that finished
// in the meantime, so every stopping rule is decided on real tokens, exactly as without overlap.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "block_manager.h"
#include "request.h"
#include "scheduler_output.h"
#include "slot_allocator.h"

namespace kvserve {

enum class SchedulingPolicy : int8_t { kFcfs = 0, kPriority = 1 };

struct SchedulerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 2048;
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  int32_t max_num_encoder_input_tokens = 0;  // encoder budget per step; 0 means max_num_batched_tokens

  /// Throws InvalidArgument naming the first bad field.
  void validate() const;
  /// @return a validated copy with every "0 means default" field replaced by its effective value.
  SchedulerConfig resolved() const;
};

// A copy of one request's state, for tests and introspection.
struct RequestState {
  int64_t handle;
  RequestStatus status;
  int32_t num_prompt_tokens;
  int32_t num_computed_tokens;
  int32_t num_output_placeholders;
  int32_t num_cached_tokens;
  std::vector<int32_t> token_ids;
  std::vector<int32_t> block_ids;
  std::vector<int32_t> cross_block_ids;
  int32_t slot;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// @return the request's handle (unique, increasing), used in every batch array.
  int64_t add_request(std::string request_id, std::vector<int32_t> prompt_token_ids, RequestParams params);
  /// Frees the request's blocks at once. @return its handle. Throws UnknownRequest.
  int64_t abort(const std::string& request_id);

  /// Builds the next batch; an empty batch needs no update(). Otherwise update() must follow; one more
  /// schedule() may come first (overlap). Throws InternalError with two non-empty batches not updated.
  std::shared_ptr<SchedulerOutput> schedule();
  /// Appends one sampled token per sampled row of the oldest batch not updated and applies the stopping
  /// rules; rows of requests aborted or finished since that batch was scheduled are skipped.
  ///   sampled_token_ids: [S] in the order of SchedulerOutput::sample_handles
  std::shared_ptr<UpdateOutput> update(const int32_t* sampled_token_ids, int64_t num_sampled);

  const SchedulerConfig& config() const { return config_; }
  const BlockPool& block_pool() const { return blocks_.pool(); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  bool has_unfinished() const { return !requests_.empty(); }
  bool has_pending_update() const { return !pending_.empty(); }
  /// @return the scheduled batches not updated yet (0, 1, or 2 with overlap).
  int32_t num_pending_updates() const { return static_cast<int32_t>(pending_.size()); }
  /// @return the high-water mark of batch slots: the persistent batch's capacity.
  int32_t num_slots() const { return slots_.num_slots(); }
  RequestState request_state(const std::string& request_id) const;
  /// Forgets every cached block; refused (false) while requests hold blocks.
  bool reset_prefix_cache();
  void check_invariants() const;

 private:
  // One entry of a step's batch, in batch order.
  struct Scheduled {
    Request* request;
    int32_t num_new_tokens;
    bool runs_encoder;  // admitted this step as an encoder-decoder request
  };

  // The rows of a scheduled batch that update() resolves; nullptr once the request is gone.
  struct PendingStep {
    std::vector<Request*> samples;  // [S]
    std::vector<Request*> pools;    // [P]
  };

  struct QueueOrder {
    const Scheduler* scheduler;
    bool operator()(const Request* a, const Request* b) const { return scheduler->runs_before(*a, *b); }
  };

  bool runs_before(const Request& a, const Request& b) const;
  bool has_work(const Request& request) const;
  void forget_pending(Request& request);
  void preempt(Request& request);
  void release(Request& request);
  bool admit_waiting(int32_t& token_budget, int32_t& encoder_budget, SchedulerOutput& out);
  void build_batch(SchedulerOutput& out);
  void fill_stats(SchedulerOutput& out) const;
  void check_params(const std::string& request_id, int64_t num_prompt, const RequestParams& params) const;
  void check_stop(Request& request, int32_t token, int8_t& reason, int32_t& stop_reason) const;

  SchedulerConfig config_;
  BlockManager blocks_;
  std::unordered_map<std::string, std::unique_ptr<Request>> requests_;
  std::set<Request*, QueueOrder> waiting_;
  std::vector<Request*> running_;  // sorted by runs_before: the back is the preemption victim
  int64_t next_handle_ = 0;
  SlotAllocator slots_;
  std::vector<Scheduled> scheduled_;       // this step's batch while schedule() builds it
  std::deque<PendingStep> pending_;  // scheduled batches not updated yet, oldest first (at most 2)
};

}  // namespace kvserve
