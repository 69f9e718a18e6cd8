#include "decode_layers.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "kernels.h"
#include "kv_cache_rows.h"
#include "paged_kv.h"

namespace kvserve::cpu {
namespace {

// out = x · Wᵀ (+ bias), x [tokens, in] contiguous, out [tokens, out_features] contiguous: what
// StoredLinearMethod.apply computes segment by segment, or packed_weights.linear for a blocked weight.
void project(const StoredProjection& p, const float* x, int64_t tokens, int64_t in_features, float* out,
             int num_threads, const SidePrefetch* side = nullptr) {
  if (p.segment_format[0] == StoredProjection::kBlockedFloat32) {
    blocked_matmul(out, x, reinterpret_cast<const float*>(p.segment_data[0]), p.bias, tokens, p.out_features,
                   in_features, p.k_padded, in_features, p.out_features, num_threads, side);
    return;
  }
  int64_t column = 0;
  for (int s = 0; s < p.num_segments; ++s) {
    quant_matmul(out + column, x, p.segment_data[s], p.segment_format[s], tokens, p.segment_rows[s], in_features,
                 p.row_stride, in_features, p.out_features, num_threads);
    column += p.segment_rows[s];
  }
  if (p.bias == nullptr) return;
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = out + t * p.out_features;
    for (int64_t j = 0; j < p.out_features; ++j) row[j] += p.bias[j];
  }
}

template <class T>
T* sized(std::vector<T>& buffer, int64_t values) {
  if (buffer.size() < static_cast<size_t>(values)) buffer.resize(static_cast<size_t>(values));
  return buffer.data();
}

}  // namespace

void DecodeLayers::plan_kv_prefetch(const void* kv_cache, int cache_dtype, const int32_t* block_tables,
                                    const int32_t* seq_lens, int64_t tokens, int64_t num_blocks, int64_t block_size,
                                    int64_t table_width, int64_t sliding_window) {
  const int64_t row_bytes = shape_.kv_heads * shape_.head_dim * cache_element_bytes(cache_dtype);
  const char* base = static_cast<const char*>(kv_cache);
  span_starts_.clear();
  span_bytes_.clear();
  for (int64_t r = 0; r < tokens; ++r) {
    const int64_t seq_len = seq_lens[r];
    const int64_t first = first_visible_position(seq_len, sliding_window);
    for (int64_t half = 0; half < 2; ++half) {
      for (int64_t p0 = first; p0 < seq_len;) {
        const int64_t p1 = std::min(seq_len, (p0 / block_size + 1) * block_size);
        const int64_t slot = int64_t{block_tables[r * table_width + p0 / block_size]} * block_size + p0 % block_size;
        span_starts_.push_back(base + (half * num_blocks * block_size + slot) * row_bytes);
        span_bytes_.push_back((p1 - p0) * row_bytes);
        p0 = p1;
      }
    }
  }
}

DecodeLayers::DecodeLayers(DecoderShape shape, std::vector<DecoderLayerWeights> layers, const float* final_norm)
    : shape_(shape), layers_(std::move(layers)), final_norm_(final_norm) {}

void DecodeLayers::run(float* out, const float* hidden, const float* cos, const float* sin,
                       const std::vector<void*>& kv_caches, int cache_dtype, const int64_t* slot_mapping,
                       const int32_t* block_tables,
                       const int32_t* seq_lens, int64_t tokens, int64_t num_blocks, int64_t block_size,
                       int64_t table_width, int num_threads) {
  const DecoderShape& s = shape_;
  const int64_t q_size = s.heads * s.head_dim;
  const int64_t qkv_size = q_size + 2 * s.kv_heads * s.head_dim;
  float* residual = sized(residual_, tokens * s.hidden);
  float* normed = sized(normed_, tokens * s.hidden);
  float* qkv = sized(qkv_, tokens * qkv_size);
  float* attn = sized(attn_, tokens * q_size);
  float* layer_out = sized(hidden_, tokens * s.hidden);
  float* gate_up = sized(gate_up_, tokens * 2 * s.intermediate);
  float* act = sized(act_, tokens * s.intermediate);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayerWeights& layer = layers_[i];
    if (i == 0) {  // the residual stream starts as the embeddings
      std::memcpy(residual, hidden, static_cast<size_t>(tokens * s.hidden) * sizeof(float));
      rms_norm(normed, hidden, layer.input_norm, tokens, s.hidden, s.hidden, s.eps, num_threads);
    } else {
      fused_add_rms_norm(normed, residual, residual, layer_out, layer.input_norm, tokens, s.hidden, s.eps, num_threads);
    }
    project(layer.qkv, normed, tokens, s.hidden, qkv, num_threads);
    decode_attention_block(attn, qkv, layer.q_norm, layer.k_norm, cos, sin, kv_caches[i], cache_dtype, slot_mapping,
                           block_tables, seq_lens, tokens, s.heads, s.kv_heads, s.head_dim, s.rot_dim, num_blocks,
                           block_size, table_width, qkv_size, s.eps, s.scale, layer.sliding_window, num_threads);
    project(layer.o, attn, tokens, q_size, layer_out, num_threads);
    fused_add_rms_norm(normed, residual, residual, layer_out, layer.post_norm, tokens, s.hidden, s.eps, num_threads);
    // The MLP's products leave memory bandwidth idle and the next layer's attention waits on memory: its
    // cached rows are prefetched during them (into L2, from where they fall to L3), two thirds of the spans
    // during gate|up and the rest during down, in proportion to their multiply-adds. bench_throughput's
    // float32 Llama: a decode step 14.7-15.8 -> 14.3-15.5 ms (much of it evicted before use: L3 is shared
    // with the host's other cores).
    SidePrefetch up_side{nullptr, nullptr, 0}, down_side{nullptr, nullptr, 0};
    if (i + 1 < layers_.size()) {
      plan_kv_prefetch(kv_caches[i + 1], cache_dtype, block_tables, seq_lens, tokens, num_blocks, block_size,
                       table_width, layers_[i + 1].sliding_window);
      const auto count = static_cast<int64_t>(span_starts_.size()), split = (2 * count + 2) / 3;
      up_side = {span_starts_.data(), span_bytes_.data(), split};
      down_side = {span_starts_.data() + split, span_bytes_.data() + split, count - split};
    }
    project(layer.gate_up, normed, tokens, s.hidden, gate_up, num_threads, &up_side);
    silu_and_mul(act, gate_up, tokens, s.intermediate, num_threads);
    project(layer.down, act, tokens, s.intermediate, layer_out, num_threads, &down_side);
  }
  fused_add_rms_norm(out, residual, residual, layer_out, final_norm_, tokens, s.hidden, s.eps, num_threads);
}

}  // namespace kvserve::cpu
