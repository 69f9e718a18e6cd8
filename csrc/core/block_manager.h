// Request-level KV block operations on top of the BlockPool: prefix lookups, slot allocation and freeing.
//
// Block table of a request whose next step computes n tokens:
//   | full, registered ... | full, registered this step ... | partial (last) |
//   0              num_registered_blocks     (num_computed + n) / bs    ceil((num_computed + n) / bs)
#pragma once

#include <cstdint>
#include <vector>

#include "block_pool.h"
#include "request.h"

namespace kvserve {

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, bool enable_caching)
      : pool_(num_blocks, block_size, enable_caching) {}

  const BlockPool& pool() const { return pool_; }
  BlockPool& pool() { return pool_; }
  int32_t block_size() const { return pool_.block_size(); }

  /// @return the cached blocks that hold a prefix of the request's tokens, at most
  ///   (num_tokens - 1) / block_size of them so the last token is always recomputed for its logits.
  std::vector<int32_t> find_cached_blocks(Request& request) const;

  /// Grows the block table to cover num_computed_tokens + num_new_tokens, first taking `cached_hits`
  /// (found by find_cached_blocks for a request with no blocks), then takes `num_cross_blocks` fresh
  /// blocks into cross_block_ids (an encoder-decoder request's admission). Registers the blocks that
  /// become full, if the request registers.
  /// @return false, changing nothing, when too few blocks are free for all of it.
  bool try_allocate(Request& request, const std::vector<int32_t>& cached_hits, int32_t num_new_tokens,
                    int32_t num_cross_blocks = 0);

  /// Releases the request's cross blocks, then its blocks, keeping their registrations for later hits.
  void free(Request& request);

 private:
  // Extends request.block_hashes to the first `count` full blocks.
  void hash_full_blocks(Request& request, int32_t count) const;

  BlockPool pool_;
};

}  // namespace kvserve
