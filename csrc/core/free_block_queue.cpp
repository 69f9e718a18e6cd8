#include "free_block_queue.h"

#include "check.h"

namespace kvserve {

FreeBlockQueue::FreeBlockQueue(int32_t num_blocks)
    : sentinel_(num_blocks), size_(num_blocks), prev_(num_blocks + 1), next_(num_blocks + 1) {
  // A ring through the sentinel (index num_blocks): sentinel -> 0 -> 1 -> ... -> num_blocks - 1 -> sentinel.
  for (int32_t i = 0; i <= num_blocks; ++i) {
    next_[i] = (i + 1) % (num_blocks + 1);
    prev_[(i + 1) % (num_blocks + 1)] = i;
  }
}

void FreeBlockQueue::link_after(int32_t anchor, int32_t block_id) {
  KV_CHECK(!contains(block_id), "block " + std::to_string(block_id) + " is already free");
  int32_t after = next_[anchor];
  prev_[block_id] = anchor;
  next_[block_id] = after;
  next_[anchor] = block_id;
  prev_[after] = block_id;
  ++size_;
}

void FreeBlockQueue::push_front(int32_t block_id) { link_after(sentinel_, block_id); }

void FreeBlockQueue::push_back(int32_t block_id) { link_after(prev_[sentinel_], block_id); }

void FreeBlockQueue::remove(int32_t block_id) {
  KV_CHECK(contains(block_id), "block " + std::to_string(block_id) + " is not free");
  next_[prev_[block_id]] = next_[block_id];
  prev_[next_[block_id]] = prev_[block_id];
  prev_[block_id] = next_[block_id] = kUnlinked;
  --size_;
}

int32_t FreeBlockQueue::pop_front() {
  KV_CHECK(size_ > 0, "no free block");
  int32_t head = next_[sentinel_];
  remove(head);
  return head;
}

std::vector<int32_t> FreeBlockQueue::to_vector() const {
  std::vector<int32_t> ids;
  ids.reserve(size_);
  for (int32_t i = next_[sentinel_]; i != sentinel_; i = next_[i]) ids.push_back(i);
  return ids;
}

}  // namespace kvserve
