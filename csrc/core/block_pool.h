// The fixed pool of KV blocks: ref counts, the LRU free queue and the prefix cache (hash -> block).
//
// A block is in exactly one of three states:
//   used    ref_count > 0, owned by one or more requests' block tables (shared prefix blocks have > 1)
//   cached  ref_count == 0, in the free queue, still registered under its hash: a later prefix hit revives it
//   empty   ref_count == 0, in the free queue, unregistered
// Eviction is lazy: a cached block loses its registration only when the queue hands it out again.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "free_block_queue.h"

namespace kvserve {

struct PrefixCacheStats {
  int64_t num_requests = 0;      // admitted requests that queried the cache
  int64_t num_query_tokens = 0;  // their tokens
  int64_t num_hit_tokens = 0;    // tokens served from cached blocks
};

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size, bool enable_caching);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t block_size() const { return block_size_; }
  bool enable_caching() const { return enable_caching_; }
  int32_t num_free_blocks() const { return free_queue_.size(); }
  int32_t num_cached_blocks() const { return static_cast<int32_t>(cache_.size()); }
  /// @return the fraction of blocks in use, in [0, 1].
  double usage() const;
  int32_t ref_count(int32_t block_id) const;
  /// @return the hash a block is registered under, if it is.
  std::optional<uint64_t> block_hash(int32_t block_id) const;
  /// @return free block ids, next to be reused first.
  std::vector<int32_t> free_block_ids() const { return free_queue_.to_vector(); }
  const PrefixCacheStats& stats() const { return stats_; }

  /// @return the cached block holding exactly these tokens after this parent, or -1.
  ///   tokens: [block_size]
  int32_t lookup(uint64_t hash, uint64_t parent_hash, const int32_t* tokens) const;
  /// Registers a full block unless its hash is taken (the first copy of a content wins).
  ///   tokens: [block_size]
  void register_block(int32_t block_id, uint64_t hash, uint64_t parent_hash, const int32_t* tokens);
  void record_query(int32_t num_tokens, int32_t num_hit_tokens);

  /// @return how many free blocks taking these blocks would consume (those with ref_count 0).
  int32_t count_free(const std::vector<int32_t>& block_ids) const;
  /// Adds a reference to each block, reviving cached free ones.
  void touch(const std::vector<int32_t>& block_ids);
  /// Moves `count` blocks from the head of the free queue to `out`, evicting their registrations.
  void take_free(int32_t count, std::vector<int32_t>& out);
  /// Drops one reference from each block, last first, so the tails of hash chains are evicted first.
  void release(const std::vector<int32_t>& block_ids);

  /// Forgets every registration; refused (false) while any block is in use.
  bool reset_prefix_cache();
  void check_invariants() const;

 private:
  void unregister(int32_t block_id);

  int32_t block_size_;
  bool enable_caching_;
  std::vector<int32_t> ref_counts_;      // [num_blocks]
  std::vector<uint8_t> registered_;      // [num_blocks]
  std::vector<uint64_t> hashes_;         // [num_blocks], valid while registered
  std::vector<uint64_t> parent_hashes_;  // [num_blocks], valid while registered
  std::vector<int32_t> token_ids_;       // [num_blocks * block_size], valid while registered
  FreeBlockQueue free_queue_;
  std::unordered_map<uint64_t, int32_t> cache_;
  PrefixCacheStats stats_;
};

}  // namespace kvserve
