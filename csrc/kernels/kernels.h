// CUDA kernels' host launchers: torch-free and CUDA-header-free, so the bindings build with the host
// compiler. Pointers are device addresses, strides are in elements, `stream` is a cudaStream_t as an integer.
// Each launcher validates its arguments and throws InvalidArgument (ValueError in Python) on bad input and
// InternalError (RuntimeError) when a launch fails.
// Shapes: T tokens, R requests, H query heads, KVH key/value heads, D head dim, NB blocks of BS slots.
// A layer's KV cache is [2, NB, BS, KVH, D]: keys, then values.
#pragma once

#include <cstdint>

namespace kvserve::kernels {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// kv_cache[0][slot] = key[t], kv_cache[1][slot] = value[t] for slot = slot_mapping[t]; slots < 0 are skipped.
void reshape_and_cache(DType dtype,
                       void* kv_cache,               // [2, NB * BS, KVH * D]
                       const void* key,              // [T, KVH * D], token stride key_stride
                       const void* value,            // [T, KVH * D], token stride value_stride
                       const int64_t* slot_mapping,  // [T]
                       int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride,
                       uintptr_t stream);

// out[r] = weight * (x[r] / sqrt(mean(x[r]^2) + eps)), with the roundings of ops.reference.rms_norm.
void rms_norm(DType dtype,
              void* out,             // [rows, hidden]
              const void* x,         // [rows, hidden], row stride x_stride
              const void* weight,    // [hidden]
              int64_t rows, int64_t hidden, int64_t x_stride, float eps, uintptr_t stream);

// residual_out = x + residual; out = rms_norm(residual_out). residual_out may alias residual.
void fused_add_rms_norm(DType dtype,
                        void* out,              // [rows, hidden]
                        void* residual_out,     // [rows, hidden]
                        const void* x,          // [rows, hidden]
                        const void* residual,   // [rows, hidden]
                        const void* weight,     // [hidden]
                        int64_t rows, int64_t hidden, float eps, uintptr_t stream);

// out[r] = silu(x[r, :d]) * x[r, d:]
void silu_and_mul(DType dtype,
                  void* out,        // [rows, d]
                  const void* x,    // [rows, 2 * d]
                  int64_t rows, int64_t d, uintptr_t stream);

// Rotates the first rot_dim channels of each head by cos/sin, GPT-NeoX style (pairs (i, i + rot/2)) when
// is_neox, else GPT-J style (pairs (2i, 2i + 1)); the other channels are copied. out may equal x (in place).
void rotary_embedding(DType dtype,
                      void* out,          // [T, heads, head_dim], strides out_token_stride, out_head_stride
                      const void* x,      // [T, heads, head_dim], strides x_token_stride, x_head_stride
                      const void* cos,    // [T, rot_dim / 2]
                      const void* sin,    // [T, rot_dim / 2]
                      int64_t tokens, int64_t heads, int64_t head_dim, int64_t rot_dim, int64_t x_token_stride,
                      int64_t x_head_stride, int64_t out_token_stride, int64_t out_head_stride, bool is_neox,
                      uintptr_t stream);

// Bytes of float32 workspace paged_attention needs for these sizes (split partial results).
int64_t paged_attention_workspace_bytes(int64_t tokens, int64_t reqs, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, int64_t max_query_len, int64_t max_seq_len);

// Causal attention of each request's query rows over its cached context (see ops.reference.paged_attention):
// request r owns query rows query_start_loc[r]:query_start_loc[r+1], the last tokens of its seq_lens[r]-token
// context, whose keys and values (this step's included) are in the blocks block_tables[r].
void paged_attention(DType dtype,
                     void* out,                       // [T, H, D] contiguous
                     const void* query,               // [T, H, D], strides q_token_stride, q_head_stride
                     const void* kv_cache,            // [2, NB, BS, KVH, D] contiguous
                     const int32_t* block_tables,     // [R, table_width]
                     const int32_t* seq_lens,         // [R]
                     const int32_t* query_start_loc,  // [R + 1]
                     void* workspace,                 // paged_attention_workspace_bytes(...) bytes
                     int64_t tokens, int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim,
                     int64_t num_blocks, int64_t block_size, int64_t table_width, int64_t q_token_stride,
                     int64_t q_head_stride, int64_t max_query_len, int64_t max_seq_len, float scale,
                     int64_t sliding_window, uintptr_t stream);

}  // namespace kvserve::kernels
