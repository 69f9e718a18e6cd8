// reshape_and_cache: copies this step's keys and values into their paged KV-cache slots.
// Pure data movement: each thread moves one 16-byte vector of a key row and the same of its value row.
#include "common.cuh"

namespace kvserve::kernels {
namespace {

template <typename T, int kVec>
__global__ void reshape_and_cache_kernel(T* __restrict__ kv_cache,              // [2, num_slots, row]
                                         const T* __restrict__ key,             // [T, row], stride key_stride
                                         const T* __restrict__ value,           // [T, row], stride value_stride
                                         const int64_t* __restrict__ slot_mapping,  // [T]
                                         int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride) {
  const int64_t token = blockIdx.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  const int64_t slot = slot_mapping[token];
  // Negative slots mark padded tokens (a captured graph's batch is larger than the real one).
  if (col >= row || slot < 0) return;
  T* key_dst = kv_cache + slot * row + col;
  T* value_dst = key_dst + num_slots * row;
  const Vec<T> k = load<kVec>(key + token * key_stride + col);
  const Vec<T> v = load<kVec>(value + token * value_stride + col);
  store<kVec>(key_dst, k);
  store<kVec>(value_dst, v);
}

}  // namespace

void reshape_and_cache(DType dtype, void* kv_cache, const void* key, const void* value, const int64_t* slot_mapping,
                       int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride,
                       uintptr_t stream) {
  KV_REQUIRE(tokens >= 0 && num_slots > 0 && row > 0, "reshape_and_cache: sizes must be positive");
  KV_REQUIRE(key_stride >= row && value_stride >= row, "reshape_and_cache: token strides must cover a row");
  if (tokens == 0) return;
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    constexpr int kVec = Vec<T>::kSize;
    const bool vectorised = row % kVec == 0 && key_stride % kVec == 0 && value_stride % kVec == 0 &&
                            aligned16(kv_cache) && aligned16(key) && aligned16(value);
    const int64_t per_thread = vectorised ? kVec : 1;
    const int64_t threads_per_row = (row + per_thread - 1) / per_thread;
    const int threads = static_cast<int>(threads_per_row < 256 ? threads_per_row : 256);
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>((threads_per_row + threads - 1) / threads));
    auto* cache = static_cast<T*>(kv_cache);
    auto* k = static_cast<const T*>(key);
    auto* v = static_cast<const T*>(value);
    if (vectorised) {
      reshape_and_cache_kernel<T, kVec><<<grid, threads, 0, as_stream(stream)>>>(cache, k, v, slot_mapping, num_slots,
                                                                                 row, key_stride, value_stride);
    } else {
      reshape_and_cache_kernel<T, 1><<<grid, threads, 0, as_stream(stream)>>>(cache, k, v, slot_mapping, num_slots,
                                                                              row, key_stride, value_stride);
    }
    KV_CHECK_LAUNCH();
  });
}

}  // namespace kvserve::kernels
