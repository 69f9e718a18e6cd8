// A decode step's decoder layers in one C++ call, for Llama-family models whose projections are kept in
// their stored formats (quant_formats.h) or are float32 in oneDNN's blocked layout (blocked_matmul.cpp): the
// per-op Python and torch dispatch of ~10 ops a layer is what
// dominates a small model's step and every model at one stream. The kernels are the ones kvserve.ops calls
// one by one, in the same order on the same buffers, so the result is bit-identical to the op-by-op path.
#pragma once

#include <cstdint>
#include <vector>

namespace kvserve::cpu {

// One projection: up to three row segments of a [out, row_stride] uint8 matrix (a fused q|k|v may join
// formats), each multiplied by its own format's kernel into its columns, plus an optional float32 bias; or
// one segment of format kBlockedFloat32, a float32 weight in the blocked layout with k_padded in features.
struct StoredProjection {
  static constexpr int kMaxSegments = 3;
  static constexpr int kBlockedFloat32 = -1;
  int num_segments = 0;
  const uint8_t* segment_data[kMaxSegments] = {};  // each segment's first row
  int segment_format[kMaxSegments] = {};
  int64_t segment_rows[kMaxSegments] = {};
  int64_t row_stride = 0;  // bytes between rows
  int64_t out_features = 0;
  int64_t k_padded = 0;  // kBlockedFloat32 only
  const float* bias = nullptr;  // [out_features] or nullptr
};

struct DecoderLayerWeights {
  StoredProjection qkv, o, gate_up, down;
  const float* input_norm = nullptr;  // [hidden]
  const float* post_norm = nullptr;   // [hidden]
  const float* q_norm = nullptr;      // [head_dim] or nullptr (Qwen3)
  const float* k_norm = nullptr;
  int64_t sliding_window = 0;
};

struct DecoderShape {
  int64_t hidden, heads, kv_heads, head_dim, intermediate, rot_dim;
  float eps, scale;
};

// The model's layers and the scratch activations of a step; one caller at a time (the runner's thread).
class DecodeLayers {
 public:
  DecodeLayers(DecoderShape shape, std::vector<DecoderLayerWeights> layers, const float* final_norm);

  // out = final_norm(residual stream after every layer) for one decode token per request (T == R).
  // kv_caches[i]: layer i's cache [2, NB, BS, KVH, D], every layer's of the element type cache_dtype (CacheDtype).
  void run(float* out,                        // [T, hidden]
           const float* hidden,               // [T, hidden]: the embeddings
           const float* cos, const float* sin,  // [T, rot_dim / 2]
           const std::vector<void*>& kv_caches, int cache_dtype,
           const int64_t* slot_mapping,       // [T]
           const int32_t* block_tables,       // [T, table_width]
           const int32_t* seq_lens,           // [T]
           int64_t tokens, int64_t num_blocks, int64_t block_size, int64_t table_width, int num_threads);

 private:
  // span_starts_/span_bytes_ = the runs of cached rows (a block's, keys then values, request by request) that
  // the attention over kv_cache will read.
  void plan_kv_prefetch(const void* kv_cache, int cache_dtype, const int32_t* block_tables, const int32_t* seq_lens,
                        int64_t tokens, int64_t num_blocks, int64_t block_size, int64_t table_width,
                        int64_t sliding_window);

  DecoderShape shape_;
  std::vector<DecoderLayerWeights> layers_;
  const float* final_norm_;
  std::vector<float> residual_, normed_, qkv_, attn_, hidden_, gate_up_, act_;
  std::vector<const char*> span_starts_;
  std::vector<int64_t> span_bytes_;
};

}  // namespace kvserve::cpu
