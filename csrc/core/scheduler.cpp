#include "scheduler.h"

#include <algorithm>
#include <tuple>

#include "block_hash.h"
#include "check.h"

namespace kvserve {
namespace {

std::string field_error(const char* name, int64_t value, const char* rule) {
  return std::string(name) + " must be " + rule + ", got " + std::to_string(value);
}

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

int32_t ceil_div(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

}  // namespace

void SchedulerConfig::validate() const {
  KV_REQUIRE(num_blocks > 0, field_error("num_blocks", num_blocks, "positive"));
  KV_REQUIRE(block_size > 0, field_error("block_size", block_size, "positive"));
  KV_REQUIRE(max_num_seqs > 0, field_error("max_num_seqs", max_num_seqs, "positive"));
  KV_REQUIRE(max_num_batched_tokens > 0,
             field_error("max_num_batched_tokens", max_num_batched_tokens, "positive"));
  KV_REQUIRE(max_model_len > 1, field_error("max_model_len", max_model_len, "at least 2"));
  KV_REQUIRE(max_num_encoder_input_tokens >= 0,
             field_error("max_num_encoder_input_tokens", max_num_encoder_input_tokens, "non-negative"));
}

SchedulerConfig SchedulerConfig::resolved() const {
  validate();
  SchedulerConfig c = *this;
  if (c.max_num_encoder_input_tokens == 0) c.max_num_encoder_input_tokens = c.max_num_batched_tokens;
  return c;
}

Scheduler::Scheduler(SchedulerConfig config)
    : config_(config.resolved()),
      blocks_(config_.num_blocks, config_.block_size, config_.enable_prefix_caching),
      waiting_(QueueOrder{this}) {}

bool Scheduler::runs_before(const Request& a, const Request& b) const {
  if (config_.policy == SchedulingPolicy::kPriority) {
    return std::tie(a.params.priority, a.params.arrival_time, a.handle) <
           std::tie(b.params.priority, b.params.arrival_time, b.handle);
  }
  return a.handle < b.handle;
}

void Scheduler::check_params(const std::string& request_id, int64_t num_prompt, const RequestParams& params) const {
  const std::string who = "request '" + request_id + "': ";
  const bool prefill_only = params.task == TaskKind::kPrefillOnly;
  const bool encoder_decoder = params.task == TaskKind::kEncoderDecoder;
  if (prefill_only) {
    // Nothing is sampled, so the stopping rules (max_tokens included) do not apply.
    KV_REQUIRE(params.max_tokens >= 0, field_error("max_tokens", params.max_tokens, "at least 0"));
    KV_REQUIRE(num_prompt <= config_.max_num_batched_tokens,
               who + "a prefill-only prompt of " + std::to_string(num_prompt) +
                   " tokens exceeds max_num_batched_tokens (" + std::to_string(config_.max_num_batched_tokens) +
                   "); it is never chunked");
  } else {
    KV_REQUIRE(params.max_tokens >= 1, field_error("max_tokens", params.max_tokens, "at least 1"));
    KV_REQUIRE(params.min_tokens >= 0 && params.min_tokens <= params.max_tokens,
               field_error("min_tokens", params.min_tokens, "between 0 and max_tokens"));
  }
  if (encoder_decoder) {
    KV_REQUIRE(params.num_encoder_tokens >= 1,
               who + "an encoder-decoder request needs num_encoder_tokens of at least 1, got " +
                   std::to_string(params.num_encoder_tokens));
    KV_REQUIRE(params.num_encoder_tokens <= config_.max_num_encoder_input_tokens,
               who + "num_encoder_tokens (" + std::to_string(params.num_encoder_tokens) +
                   ") exceeds max_num_encoder_input_tokens (" +
                   std::to_string(config_.max_num_encoder_input_tokens) + ")");
  } else {
    KV_REQUIRE(params.num_encoder_tokens == 0,
               who + "num_encoder_tokens is only for encoder-decoder requests, got " +
                   std::to_string(params.num_encoder_tokens));
  }
  // The last sampled token never gets KV, so that is what the request can ever hold.
  const int64_t max_kv_tokens =
      prefill_only ? num_prompt
                   : std::max(num_prompt,
                              std::min<int64_t>(num_prompt + params.max_tokens, config_.max_model_len) - 1);
  const int32_t max_blocks =
      ceil_div(max_kv_tokens, config_.block_size) + ceil_div(params.num_encoder_tokens, config_.block_size);
  KV_REQUIRE(max_blocks <= config_.num_blocks,
             "request '" + request_id + "' may need " + std::to_string(max_blocks) +
                 " KV blocks, but the cache has only " + std::to_string(config_.num_blocks));
  KV_REQUIRE(config_.enable_chunked_prefill || num_prompt <= config_.max_num_batched_tokens,
             who + "a prompt of " + std::to_string(num_prompt) +
                 " tokens exceeds max_num_batched_tokens without chunked prefill");
}

int64_t Scheduler::add_request(std::string request_id, std::vector<int32_t> prompt_token_ids,
                               RequestParams params) {
  const int64_t num_prompt = static_cast<int64_t>(prompt_token_ids.size());
  KV_REQUIRE(!requests_.count(request_id), "duplicate request id '" + request_id + "'");
  KV_REQUIRE(num_prompt > 0, "request '" + request_id + "': the prompt must contain at least one token");
  KV_REQUIRE(num_prompt <= config_.max_model_len,
             "request '" + request_id + "': the prompt has " + std::to_string(num_prompt) +
                 " tokens, more than max_model_len (" + std::to_string(config_.max_model_len) + ")");
  for (int32_t id : prompt_token_ids) KV_REQUIRE(id >= 0, field_error("token id", id, "non-negative"));
  check_params(request_id, num_prompt, params);

  auto request = std::make_unique<Request>();
  request->request_id = request_id;
  request->handle = next_handle_++;
  request->slot = slots_.acquire();
  request->num_prompt_tokens = static_cast<int32_t>(num_prompt);
  request->token_ids = std::move(prompt_token_ids);
  request->root_hash = hash_salt(params.cache_salt);
  request->params = std::move(params);
  Request* raw = request.get();
  requests_.emplace(std::move(request_id), std::move(request));
  waiting_.insert(raw);
  return raw->handle;
}

int64_t Scheduler::abort(const std::string& request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) throw UnknownRequest("no request with id '" + request_id + "'");
  Request& request = *it->second;
  if (request.status == RequestStatus::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), &request));
  } else {
    waiting_.erase(&request);
  }
  forget_pending(request);
  const int64_t handle = request.handle;
  release(request);
  return handle;
}

void Scheduler::forget_pending(Request& request) {
  for (PendingStep& step : pending_) {
    std::replace(step.samples.begin(), step.samples.end(), &request, static_cast<Request*>(nullptr));
    std::replace(step.pools.begin(), step.pools.end(), &request, static_cast<Request*>(nullptr));
  }
}

void Scheduler::release(Request& request) {
  blocks_.free(request);
  slots_.release(request.slot);
  requests_.erase(requests_.find(request.request_id));  // by iterator: the key lives in the request
}

void Scheduler::preempt(Request& request) {
  blocks_.free(request);
  request.num_computed_tokens = 0;
  request.status = RequestStatus::kWaiting;
  waiting_.insert(&request);
}

// A running request has nothing to schedule while a prefill-only request waits for the update that
// finishes it, or while a request's token is in flight and it either waits for it (no overlap) or will
// certainly stop on length once it arrives (computing one more token would be wasted, and could exceed the
// blocks check_params granted).
bool Scheduler::has_work(const Request& request) const {
  const int32_t in_flight = request.num_output_placeholders;
  if (in_flight == 0) return request.num_computed_tokens < request.num_tokens();
  return request.params.allow_overlap && request.num_output_tokens() + in_flight < request.params.max_tokens &&
         request.num_tokens() + in_flight < config_.max_model_len;
}

std::shared_ptr<SchedulerOutput> Scheduler::schedule() {
  if (pending_.size() >= 2) throw InternalError("schedule() called with two steps not updated (at most one overlaps)");
  auto out = std::make_shared<SchedulerOutput>();
  scheduled_.clear();
  scheduled_.reserve(std::min<size_t>(running_.size() + waiting_.size(), config_.max_num_seqs));
  int32_t token_budget = config_.max_num_batched_tokens;
  int32_t encoder_budget = config_.max_num_encoder_input_tokens;

  // Hot path: the one loop over the running batch. Everything per request below is O(1) amortised.
  // A prefill-only request never reaches it: it is admitted whole and finishes in the next update().
  for (size_t i = 0; i < running_.size() && token_budget > 0; ++i) {
    Request* request = running_[i];
    if (!has_work(*request)) continue;
    const int32_t num_new =
        std::min(request->num_tokens_with_placeholders() - request->num_computed_tokens, token_budget);
    while (!blocks_.try_allocate(*request, {}, num_new)) {
      Request* victim = running_.back();
      running_.pop_back();
      preempt(*victim);
      out->preempted_handles.push_back(victim->handle);
      if (victim == request) break;
    }
    if (request->status != RequestStatus::kRunning) break;
    scheduled_.push_back({request, num_new, false});
    token_budget -= num_new;
  }

  // A step that had to preempt admits nothing: the freed blocks go to the running requests first.
  if (out->preempted_handles.empty()) {
    while (!waiting_.empty() && token_budget > 0 &&
           static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
      if (!admit_waiting(token_budget, encoder_budget, *out)) break;
    }
  }
  build_batch(*out);
  fill_stats(*out);
  return out;
}

bool Scheduler::admit_waiting(int32_t& token_budget, int32_t& encoder_budget, SchedulerOutput& out) {
  Request* request = *waiting_.begin();
  // A request preempted with a token in flight is admitted again once update() has resolved that token:
  // its prompt for recomputation is only known then.
  if (request->num_output_placeholders > 0) return false;
  // An encoder-decoder request runs its encoder at every admission, so it needs the encoder budget first.
  const int32_t num_encoder_tokens = request->params.num_encoder_tokens;
  if (num_encoder_tokens > encoder_budget) return false;
  const std::vector<int32_t> hits =
      request->reads_prefix_cache() ? blocks_.find_cached_blocks(*request) : std::vector<int32_t>{};
  const int32_t num_hit_tokens = static_cast<int32_t>(hits.size()) * config_.block_size;
  int32_t num_new = request->num_tokens() - num_hit_tokens;
  const bool may_chunk = config_.enable_chunked_prefill && !request->is_prefill_only();
  if (!may_chunk && num_new > token_budget) return false;
  num_new = std::min(num_new, token_budget);
  request->num_computed_tokens = num_hit_tokens;
  if (!blocks_.try_allocate(*request, hits, num_new, ceil_div(num_encoder_tokens, config_.block_size))) {
    request->num_computed_tokens = 0;
    return false;
  }
  if (config_.enable_prefix_caching && request->reads_prefix_cache()) {
    blocks_.pool().record_query(request->num_tokens(), num_hit_tokens);
    out.stats.prefix_cache_queries += request->num_tokens();
    out.stats.prefix_cache_hits += num_hit_tokens;
  }
  if (request->num_cached_tokens < 0) request->num_cached_tokens = num_hit_tokens;
  waiting_.erase(waiting_.begin());
  request->status = RequestStatus::kRunning;
  running_.insert(std::upper_bound(running_.begin(), running_.end(), request, QueueOrder{this}), request);
  scheduled_.push_back({request, num_new, request->is_encoder_decoder()});
  token_budget -= num_new;
  encoder_budget -= num_encoder_tokens;
  return true;
}

void Scheduler::build_batch(SchedulerOutput& out) {
  const int32_t bs = config_.block_size;
  // Sizes first, so that every array below is allocated once.
  size_t num_tokens = 0;
  size_t num_pooled = 0;
  size_t num_encoder_runs = 0;
  size_t num_encoder_tokens = 0;
  int32_t width = 0;
  int32_t cross_width = 0;
  for (const Scheduled& s : scheduled_) {
    const Request& request = *s.request;
    num_tokens += s.num_new_tokens;
    num_pooled += request.is_prefill_only();
    if (s.runs_encoder) {
      ++num_encoder_runs;
      num_encoder_tokens += request.params.num_encoder_tokens;
    }
    width = std::max(width, static_cast<int32_t>(request.block_ids.size()));
    cross_width = std::max(cross_width, static_cast<int32_t>(request.cross_block_ids.size()));
  }
  const size_t num_reqs = scheduled_.size();
  out.block_table_width = width;
  out.cross_block_table_width = cross_width;
  out.req_handles.reserve(num_reqs);
  out.req_slots.reserve(num_reqs);
  out.input_ids.reserve(num_tokens);
  out.positions.reserve(num_tokens);
  out.slot_mapping.reserve(num_tokens);
  out.block_tables.assign(num_reqs * width, 0);
  out.query_start_loc.reserve(num_reqs + 1);
  out.query_start_loc.push_back(0);
  out.seq_lens.reserve(num_reqs);
  out.logits_indices.reserve(num_reqs - num_pooled);
  out.sample_handles.reserve(num_reqs - num_pooled);
  out.sample_slots.reserve(num_reqs - num_pooled);
  out.pool_handles.reserve(num_pooled);
  out.pool_req_indices.reserve(num_pooled);
  out.pool_slots.reserve(num_pooled);
  out.encoder_handles.reserve(num_encoder_runs);
  out.encoder_req_indices.reserve(num_encoder_runs);
  out.cross_block_tables.assign(num_reqs * cross_width, 0);
  out.cross_seq_lens.reserve(num_reqs);
  out.cross_slot_mapping.reserve(num_encoder_tokens);
  PendingStep pending;
  pending.samples.reserve(num_reqs - num_pooled);
  pending.pools.reserve(num_pooled);

  for (size_t r = 0; r < num_reqs; ++r) {
    Request& request = *scheduled_[r].request;
    const int32_t num_new = scheduled_[r].num_new_tokens;
    const int32_t start = request.num_computed_tokens;
    const int32_t end = start + num_new;
    out.req_handles.push_back(request.handle);
    out.req_slots.push_back(request.slot);
    const int32_t real_end = std::min(end, request.num_tokens());
    out.input_ids.insert(out.input_ids.end(), request.token_ids.begin() + start,
                         request.token_ids.begin() + std::max(start, real_end));
    for (int32_t pos = std::max(start, real_end); pos < end; ++pos) {
      out.placeholder_indices.push_back(static_cast<int32_t>(out.input_ids.size()));
      out.placeholder_slots.push_back(request.slot);
      out.input_ids.push_back(-1);
    }
    for (int32_t pos = start; pos < end; ++pos) {
      out.positions.push_back(pos);
      out.slot_mapping.push_back(static_cast<int64_t>(request.block_ids[pos / bs]) * bs + pos % bs);
    }
    std::copy(request.block_ids.begin(), request.block_ids.end(), out.block_tables.begin() + r * width);
    std::copy(request.cross_block_ids.begin(), request.cross_block_ids.end(),
              out.cross_block_tables.begin() + r * cross_width);
    out.cross_seq_lens.push_back(request.params.num_encoder_tokens);
    if (scheduled_[r].runs_encoder) {
      out.encoder_handles.push_back(request.handle);
      out.encoder_req_indices.push_back(static_cast<int32_t>(r));
      for (int32_t pos = 0; pos < request.params.num_encoder_tokens; ++pos) {
        out.cross_slot_mapping.push_back(static_cast<int64_t>(request.cross_block_ids[pos / bs]) * bs + pos % bs);
      }
    }
    out.query_start_loc.push_back(out.query_start_loc.back() + num_new);
    out.seq_lens.push_back(end);
    out.max_query_len = std::max(out.max_query_len, num_new);
    out.max_seq_len = std::max(out.max_seq_len, end);
    request.num_computed_tokens = end;
    if (end == request.num_tokens_with_placeholders()) {
      if (request.is_prefill_only()) {
        out.pool_handles.push_back(request.handle);
        out.pool_req_indices.push_back(static_cast<int32_t>(r));
        out.pool_slots.push_back(request.slot);
        pending.pools.push_back(&request);
      } else {
        out.logits_indices.push_back(out.query_start_loc.back() - 1);
        out.sample_handles.push_back(request.handle);
        out.sample_slots.push_back(request.slot);
        pending.samples.push_back(&request);
        ++request.num_output_placeholders;
      }
    }
  }
  if (num_reqs > 0) pending_.push_back(std::move(pending));
}

void Scheduler::fill_stats(SchedulerOutput& out) const {
  StepStats& stats = out.stats;
  const BlockPool& pool = blocks_.pool();
  stats.num_running = num_running();
  stats.num_waiting = num_waiting();
  stats.num_free_blocks = pool.num_free_blocks();
  stats.num_total_blocks = pool.num_blocks();
  stats.num_used_blocks = stats.num_total_blocks - stats.num_free_blocks;
  stats.num_preemptions = static_cast<int32_t>(out.preempted_handles.size());
  stats.num_scheduled_tokens = out.num_tokens();
  stats.num_scheduled_reqs = out.num_reqs();
  stats.num_encoder_tokens = static_cast<int32_t>(out.cross_slot_mapping.size());
}

void Scheduler::check_stop(Request& request, int32_t token, int8_t& reason, int32_t& stop_reason) const {
  const RequestParams& p = request.params;
  stop_reason = -1;
  if (request.num_tokens() >= config_.max_model_len || request.num_output_tokens() >= p.max_tokens) {
    reason = static_cast<int8_t>(FinishReason::kLength);
  } else if (request.num_output_tokens() < p.min_tokens) {
    reason = static_cast<int8_t>(FinishReason::kNone);
  } else if (!p.ignore_eos && contains(p.eos_token_ids, token)) {
    reason = static_cast<int8_t>(FinishReason::kStop);
  } else if (contains(p.stop_token_ids, token)) {
    reason = static_cast<int8_t>(FinishReason::kStop);
    stop_reason = token;
  } else {
    reason = static_cast<int8_t>(FinishReason::kNone);
  }
}

std::shared_ptr<UpdateOutput> Scheduler::update(const int32_t* sampled_token_ids, int64_t num_sampled) {
  if (pending_.empty()) throw InternalError("update() without a scheduled batch");
  const std::vector<Request*>& samples = pending_.front().samples;
  const std::vector<Request*>& pools = pending_.front().pools;
  KV_REQUIRE(num_sampled == static_cast<int64_t>(samples.size()),
             "update() got " + std::to_string(num_sampled) + " sampled tokens for " +
                 std::to_string(samples.size()) + " sampled rows");
  const size_t n = samples.size();
  for (size_t i = 0; i < n; ++i) {
    KV_REQUIRE(sampled_token_ids[i] >= 0, field_error("sampled token id", sampled_token_ids[i], "non-negative"));
  }
  auto out = std::make_shared<UpdateOutput>();
  out->handles.reserve(n);
  out->token_ids.reserve(n);
  out->finish_reasons.reserve(n);
  out->stop_reasons.reserve(n);
  out->num_cached_tokens.reserve(n);
  out->pooled_handles.reserve(pools.size());
  std::vector<Request*> finished;
  for (size_t i = 0; i < n; ++i) {
    Request* request = samples[i];
    if (request == nullptr) continue;  // aborted, or finished by an earlier step, after this one was scheduled
    const int32_t token = sampled_token_ids[i];
    --request->num_output_placeholders;
    request->token_ids.push_back(token);
    int8_t reason;
    int32_t stop_reason;
    check_stop(*request, token, reason, stop_reason);
    out->handles.push_back(request->handle);
    out->token_ids.push_back(token);
    out->finish_reasons.push_back(reason);
    out->stop_reasons.push_back(stop_reason);
    out->num_cached_tokens.push_back(request->num_cached_tokens);
    if (reason != static_cast<int8_t>(FinishReason::kNone)) finished.push_back(request);
  }
  // A prefill-only request is done once its prompt is computed.
  for (Request* request : pools) {
    if (request == nullptr) continue;  // aborted after its batch was scheduled
    out->pooled_handles.push_back(request->handle);
    finished.push_back(request);
  }
  pending_.pop_front();
  if (!finished.empty()) {
    // Keep running_ sorted: drop finished requests in one pass, then free them in sampled order, then the
    // pooled ones in pool order. A request preempted by the overlapping schedule() finishes from waiting_.
    // Its row in the step still in flight, if any, is dropped: that token is never reported.
    for (Request* request : finished) {
      if (request->status == RequestStatus::kWaiting) waiting_.erase(request);
      request->status = RequestStatus::kFinished;
      forget_pending(*request);
    }
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const Request* r) { return r->status == RequestStatus::kFinished; }),
                   running_.end());
    for (Request* request : finished) release(*request);
  }
  return out;
}

RequestState Scheduler::request_state(const std::string& request_id) const {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) throw UnknownRequest("no request with id '" + request_id + "'");
  const Request& r = *it->second;
  return RequestState{r.handle,          r.status,          r.num_prompt_tokens, r.num_computed_tokens,
                      r.num_output_placeholders, r.num_cached_tokens, r.token_ids,  r.block_ids,
                      r.cross_block_ids, r.slot};
}

bool Scheduler::reset_prefix_cache() { return blocks_.pool().reset_prefix_cache(); }

void Scheduler::check_invariants() const {
  const BlockPool& pool = blocks_.pool();
  pool.check_invariants();
  std::vector<int32_t> refs(pool.num_blocks(), 0);
  for (const Request* request : running_) {
    KV_CHECK(request->status == RequestStatus::kRunning, "running request not marked running");
    KV_CHECK(request->num_output_placeholders >= 0 &&
                 request->num_output_placeholders <= static_cast<int32_t>(pending_.size()) &&
                 request->num_computed_tokens <= request->num_tokens_with_placeholders(),
             "request '" + request->request_id + "' has a bad count of tokens in flight");
    KV_CHECK(static_cast<int32_t>(request->block_ids.size()) ==
                 ceil_div(request->num_computed_tokens, config_.block_size),
             "request '" + request->request_id + "' holds the wrong number of blocks");
    KV_CHECK(static_cast<int32_t>(request->cross_block_ids.size()) ==
                 ceil_div(request->params.num_encoder_tokens, config_.block_size),
             "request '" + request->request_id + "' holds the wrong number of cross blocks");
    for (int32_t block_id : request->block_ids) ++refs[block_id];
    for (int32_t block_id : request->cross_block_ids) ++refs[block_id];
  }
  for (const Request* request : waiting_) {
    KV_CHECK(request->status == RequestStatus::kWaiting, "waiting request not marked waiting");
    KV_CHECK(request->block_ids.empty() && request->cross_block_ids.empty(),
             "waiting request '" + request->request_id + "' holds blocks");
  }
  std::vector<uint8_t> slot_used(slots_.num_slots(), 0);
  for (const auto& [request_id, request] : requests_) {
    KV_CHECK(request->slot >= 0 && request->slot < slots_.num_slots(),
             "request '" + request_id + "' has slot " + std::to_string(request->slot) + " out of range");
    KV_CHECK(!slot_used[request->slot], "slot " + std::to_string(request->slot) + " is held twice");
    slot_used[request->slot] = 1;
  }
  KV_CHECK(static_cast<int32_t>(requests_.size()) + slots_.num_free() == slots_.num_slots(),
           "every slot is held or free");
  for (int32_t block_id = 0; block_id < pool.num_blocks(); ++block_id) {
    KV_CHECK(refs[block_id] == pool.ref_count(block_id),
             "ref count of block " + std::to_string(block_id) + " does not match the block tables");
  }
  KV_CHECK(std::is_sorted(running_.begin(), running_.end(), QueueOrder{this}), "running order");
  KV_CHECK(running_.size() + waiting_.size() == requests_.size(), "every request is running or waiting");
  KV_CHECK(static_cast<int32_t>(running_.size()) <= config_.max_num_seqs, "max_num_seqs exceeded");
}

}  // namespace kvserve
