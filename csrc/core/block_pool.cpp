#include "block_pool.h"

#include <algorithm>
#include <string>

#include "check.h"

namespace kvserve {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, bool enable_caching)
    : block_size_(block_size),
      enable_caching_(enable_caching),
      ref_counts_(num_blocks, 0),
      registered_(num_blocks, 0),
      hashes_(num_blocks, 0),
      parent_hashes_(num_blocks, 0),
      token_ids_(enable_caching ? static_cast<size_t>(num_blocks) * block_size : 0),
      free_queue_(num_blocks) {
  KV_REQUIRE(num_blocks > 0, "num_blocks must be positive, got " + std::to_string(num_blocks));
  KV_REQUIRE(block_size > 0, "block_size must be positive, got " + std::to_string(block_size));
  if (enable_caching) cache_.reserve(num_blocks);
}

double BlockPool::usage() const {
  return static_cast<double>(num_blocks() - num_free_blocks()) / num_blocks();
}

int32_t BlockPool::ref_count(int32_t block_id) const {
  KV_REQUIRE(block_id >= 0 && block_id < num_blocks(), "no block " + std::to_string(block_id));
  return ref_counts_[block_id];
}

std::optional<uint64_t> BlockPool::block_hash(int32_t block_id) const {
  KV_REQUIRE(block_id >= 0 && block_id < num_blocks(), "no block " + std::to_string(block_id));
  if (!registered_[block_id]) return std::nullopt;
  return hashes_[block_id];
}

int32_t BlockPool::lookup(uint64_t hash, uint64_t parent_hash, const int32_t* tokens) const {
  auto it = cache_.find(hash);
  if (it == cache_.end()) return -1;
  int32_t block_id = it->second;
  const int32_t* stored = &token_ids_[static_cast<size_t>(block_id) * block_size_];
  if (parent_hashes_[block_id] != parent_hash || !std::equal(tokens, tokens + block_size_, stored)) return -1;
  return block_id;
}

void BlockPool::register_block(int32_t block_id, uint64_t hash, uint64_t parent_hash, const int32_t* tokens) {
  KV_CHECK(enable_caching_, "prefix caching is disabled");
  KV_CHECK(!registered_[block_id], "block " + std::to_string(block_id) + " is registered already");
  if (!cache_.emplace(hash, block_id).second) return;
  registered_[block_id] = 1;
  hashes_[block_id] = hash;
  parent_hashes_[block_id] = parent_hash;
  std::copy(tokens, tokens + block_size_, &token_ids_[static_cast<size_t>(block_id) * block_size_]);
}

void BlockPool::record_query(int32_t num_tokens, int32_t num_hit_tokens) {
  stats_.num_requests += 1;
  stats_.num_query_tokens += num_tokens;
  stats_.num_hit_tokens += num_hit_tokens;
}

void BlockPool::unregister(int32_t block_id) {
  cache_.erase(hashes_[block_id]);
  registered_[block_id] = 0;
}

int32_t BlockPool::count_free(const std::vector<int32_t>& block_ids) const {
  int32_t count = 0;
  for (int32_t block_id : block_ids) count += ref_counts_[block_id] == 0;
  return count;
}

void BlockPool::touch(const std::vector<int32_t>& block_ids) {
  for (int32_t block_id : block_ids) {
    if (ref_counts_[block_id] == 0) free_queue_.remove(block_id);
    ++ref_counts_[block_id];
  }
}

void BlockPool::take_free(int32_t count, std::vector<int32_t>& out) {
  KV_CHECK(count <= free_queue_.size(), "taking more blocks than are free");
  for (int32_t i = 0; i < count; ++i) {
    int32_t block_id = free_queue_.pop_front();
    if (registered_[block_id]) unregister(block_id);
    ref_counts_[block_id] = 1;
    out.push_back(block_id);
  }
}

void BlockPool::release(const std::vector<int32_t>& block_ids) {
  for (auto it = block_ids.rbegin(); it != block_ids.rend(); ++it) {
    int32_t block_id = *it;
    KV_CHECK(ref_counts_[block_id] > 0, "block " + std::to_string(block_id) + " freed twice");
    if (--ref_counts_[block_id] > 0) continue;
    // An unregistered block holds nothing reusable: hand it out before any cached one.
    if (registered_[block_id]) {
      free_queue_.push_back(block_id);
    } else {
      free_queue_.push_front(block_id);
    }
  }
}

bool BlockPool::reset_prefix_cache() {
  if (num_free_blocks() != num_blocks()) return false;
  std::fill(registered_.begin(), registered_.end(), 0);
  cache_.clear();
  return true;
}

void BlockPool::check_invariants() const {
  int32_t num_unreferenced = 0;
  int32_t num_registered = 0;
  for (int32_t block_id = 0; block_id < num_blocks(); ++block_id) {
    const int32_t refs = ref_counts_[block_id];
    KV_CHECK(refs >= 0, "negative ref count on block " + std::to_string(block_id));
    KV_CHECK((refs == 0) == free_queue_.contains(block_id),
             "block " + std::to_string(block_id) + " is free iff unreferenced");
    num_unreferenced += refs == 0;
    if (registered_[block_id]) {
      ++num_registered;
      auto it = cache_.find(hashes_[block_id]);
      KV_CHECK(it != cache_.end() && it->second == block_id,
               "registered block " + std::to_string(block_id) + " is missing from the cache map");
    }
  }
  KV_CHECK(num_unreferenced == free_queue_.size(), "free queue size");
  KV_CHECK(num_registered == static_cast<int32_t>(cache_.size()), "cache map size");
}

}  // namespace kvserve
