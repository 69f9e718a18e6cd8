#include "decode_layers.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "kernels.h"

namespace kvserve::cpu {
namespace {

// out = x · Wᵀ (+ bias), x [tokens, in] contiguous, out [tokens, out_features] contiguous: what
// StoredLinearMethod.apply computes segment by segment, or packed_weights.linear for a blocked weight.
void project(const StoredProjection& p, const float* x, int64_t tokens, int64_t in_features, float* out,
             int num_threads) {
  if (p.segment_format[0] == StoredProjection::kBlockedFloat32) {
    blocked_matmul(out, x, reinterpret_cast<const float*>(p.segment_data[0]), p.bias, tokens, p.out_features,
                   in_features, p.k_padded, in_features, p.out_features, num_threads);
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

float* sized(std::vector<float>& buffer, int64_t values) {
  if (buffer.size() < static_cast<size_t>(values)) buffer.resize(static_cast<size_t>(values));
  return buffer.data();
}

}  // namespace

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
    project(layer.gate_up, normed, tokens, s.hidden, gate_up, num_threads);
    silu_and_mul(act, gate_up, tokens, s.intermediate, num_threads);
    project(layer.down, act, tokens, s.intermediate, layer_out, num_threads);
  }
  fused_add_rms_norm(out, residual, residual, layer_out, final_norm_, tokens, s.hidden, s.eps, num_threads);
}

}  // namespace kvserve::cpu
