#include "block_hash.h"

#include <random>

namespace kvserve {
namespace {

// Finaliser of MurmurHash3: full avalanche on 64 bits.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

}  // namespace

uint64_t hash_seed() {
  static const uint64_t seed = [] {
    std::random_device device;
    return (uint64_t{device()} << 32) ^ device();
  }();
  return seed;
}

uint64_t hash_salt(std::string_view salt) {
  uint64_t h = mix64(hash_seed() ^ salt.size());
  for (unsigned char c : salt) h = mix64(h ^ (c + kGolden));
  return h;
}

uint64_t hash_block(uint64_t parent, const int32_t* tokens, int32_t num_tokens) {
  uint64_t h = mix64(parent + kGolden);
  for (int32_t i = 0; i < num_tokens; ++i) {
    h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) + kGolden + (h << 6)));
  }
  return h;
}

}  // namespace kvserve
