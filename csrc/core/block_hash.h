// Chained hashes of full KV blocks for the prefix cache. A hash only finds a candidate block; the block
// pool then compares the stored token ids and parent hash, so a collision can cost a miss, never a wrong hit.
#pragma once

#include <cstdint>
#include <string_view>

namespace kvserve {

// A per-process random seed keeps chained hashes unpredictable, so colliding prefixes cannot be crafted.
uint64_t hash_seed();

// Root of a request's chain: the hash of its extra keys (the cache salt); 0-length salt is still seeded.
uint64_t hash_salt(std::string_view salt);

// Hash of one full block: parent: hash of the previous block (or the root), tokens: [num_tokens].
uint64_t hash_block(uint64_t parent, const int32_t* tokens, int32_t num_tokens);

}  // namespace kvserve
