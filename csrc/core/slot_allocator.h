// Batch slots: each live request's row in the runner's persistent batch. The lowest free slot is handed out
// first, so the rows in use stay dense and num_slots (the high-water mark) stays as small as it can.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace kvserve {

class SlotAllocator {
 public:
  /// @return the lowest slot not in use.
  int32_t acquire() {
    if (freed_.empty()) return num_slots_++;
    const int32_t slot = freed_.top();
    freed_.pop();
    return slot;
  }
  void release(int32_t slot) { freed_.push(slot); }
  /// @return how many slots were ever in use at once: the rows the runner must have.
  int32_t num_slots() const { return num_slots_; }
  int32_t num_free() const { return static_cast<int32_t>(freed_.size()); }

 private:
  // Every slot below num_slots_ is either held by a request or in freed_ (a min-heap).
  std::priority_queue<int32_t, std::vector<int32_t>, std::greater<int32_t>> freed_;
  int32_t num_slots_ = 0;
};

}  // namespace kvserve
