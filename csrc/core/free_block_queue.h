// O(1) LRU queue of free block ids: an intrusive circular doubly linked list over two index arrays.
// The head is evicted (reused) first; a freed block joins the tail, or the head when it holds nothing
// worth caching.
#pragma once

#include <cstdint>
#include <vector>

namespace kvserve {

class FreeBlockQueue {
 public:
  // Every block starts free, in id order.
  explicit FreeBlockQueue(int32_t num_blocks);

  int32_t size() const { return size_; }
  bool contains(int32_t block_id) const { return prev_[block_id] != kUnlinked; }

  /// @return the head (least recently freed) block id, unlinked. The queue must not be empty.
  int32_t pop_front();
  void push_front(int32_t block_id);
  void push_back(int32_t block_id);
  void remove(int32_t block_id);

  /// @return the ids from head to tail (tests and invariant checks).
  std::vector<int32_t> to_vector() const;

 private:
  static constexpr int32_t kUnlinked = -1;
  void link_after(int32_t anchor, int32_t block_id);

  int32_t sentinel_;
  int32_t size_;
  std::vector<int32_t> prev_;  // [num_blocks + 1], kUnlinked when not in the queue
  std::vector<int32_t> next_;  // [num_blocks + 1]
};

}  // namespace kvserve
