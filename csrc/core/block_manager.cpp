#include "block_manager.h"

#include <algorithm>

#include "block_hash.h"
#include "check.h"

namespace kvserve {

void BlockManager::hash_full_blocks(Request& request, int32_t count) const {
  const int32_t bs = block_size();
  request.block_hashes.reserve(count);
  for (int32_t i = static_cast<int32_t>(request.block_hashes.size()); i < count; ++i) {
    uint64_t parent = i == 0 ? request.root_hash : request.block_hashes[i - 1];
    request.block_hashes.push_back(hash_block(parent, &request.token_ids[static_cast<size_t>(i) * bs], bs));
  }
}

std::vector<int32_t> BlockManager::find_cached_blocks(Request& request) const {
  std::vector<int32_t> hits;
  if (!pool_.enable_caching()) return hits;
  const int32_t bs = block_size();
  const int32_t max_hits = (request.num_tokens() - 1) / bs;
  hash_full_blocks(request, max_hits);
  for (int32_t i = 0; i < max_hits; ++i) {
    uint64_t parent = i == 0 ? request.root_hash : request.block_hashes[i - 1];
    int32_t block_id =
        pool_.lookup(request.block_hashes[i], parent, &request.token_ids[static_cast<size_t>(i) * bs]);
    if (block_id < 0) break;
    hits.push_back(block_id);
  }
  return hits;
}

bool BlockManager::try_allocate(Request& request, const std::vector<int32_t>& cached_hits, int32_t num_new_tokens,
                                int32_t num_cross_blocks) {
  const int32_t bs = block_size();
  const int32_t total_tokens = request.num_computed_tokens + num_new_tokens;
  const int32_t num_held = static_cast<int32_t>(request.block_ids.size() + cached_hits.size());
  const int32_t num_new_blocks = std::max(0, (total_tokens + bs - 1) / bs - num_held);
  if (num_new_blocks + num_cross_blocks + pool_.count_free(cached_hits) > pool_.num_free_blocks()) return false;

  pool_.touch(cached_hits);
  // Hits come only to a request that holds no blocks, and are registered already. (Taking the size of a
  // table that already holds blocks would count its partial last block as registered: blocks filled by
  // decoding would never be cached.)
  request.block_ids.insert(request.block_ids.end(), cached_hits.begin(), cached_hits.end());
  request.num_registered_blocks += static_cast<int32_t>(cached_hits.size());
  pool_.take_free(num_new_blocks, request.block_ids);
  pool_.take_free(num_cross_blocks, request.cross_block_ids);

  // Blocks full of real tokens only: a placeholder (request.h) has no id to hash yet; its block registers at
  // a later allocation, once the id has arrived.
  const int32_t num_full = std::min(total_tokens, request.num_tokens()) / bs;
  if (pool_.enable_caching() && request.registers_prefix_cache() && num_full > request.num_registered_blocks) {
    hash_full_blocks(request, num_full);
    for (int32_t i = request.num_registered_blocks; i < num_full; ++i) {
      uint64_t parent = i == 0 ? request.root_hash : request.block_hashes[i - 1];
      pool_.register_block(request.block_ids[i], request.block_hashes[i], parent,
                           &request.token_ids[static_cast<size_t>(i) * bs]);
    }
  }
  request.num_registered_blocks = std::max(request.num_registered_blocks, num_full);
  return true;
}

void BlockManager::free(Request& request) {
  pool_.release(request.cross_block_ids);
  request.cross_block_ids.clear();
  pool_.release(request.block_ids);
  request.block_ids.clear();
  request.num_registered_blocks = 0;
}

}  // namespace kvserve
