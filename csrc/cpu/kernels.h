// CPU kernels for the float32 model path: torch-free, raw pointers, row strides in elements.
// Shapes: T tokens, R requests, H query heads, KVH key/value heads, D head dim, NB blocks of BS slots.
// A layer's KV cache is [2, NB, BS, KVH, D]: keys, then values, of the element type `cache_dtype` (a
// CacheDtype, kv_cache_rows.h: float32, float16 or bfloat16; written rounded to nearest, read as float32).
#pragma once

#include <cstdint>

namespace kvserve::cpu {

// out = x · Wᵀ (+ bias) for a float32 W [n, k] in oneDNN's blocked layout for linear weights
// ([ceil(n / 64)][k_padded][64]: packed_weights.py checks it), for decode-sized row counts; output columns split
// across up to num_threads threads. Needs blocked_matmul_fits() (AVX-512).
bool blocked_matmul_fits();

// Other memory to bring into cache while a product runs (its multiply-adds leave memory bandwidth idle): spans
// of bytes, shared out among the threads in order.
struct SidePrefetch {
  const char* const* starts;
  const int64_t* bytes;
  int64_t count;
};

void blocked_matmul(float* out,          // [rows, n], row stride out_stride
                    const float* x,      // [rows, k], row stride x_stride
                    const float* w,      // the blocked weight
                    const float* bias,   // [n] or nullptr
                    int64_t rows, int64_t n, int64_t k, int64_t k_padded, int64_t x_stride, int64_t out_stride,
                    int num_threads, const SidePrefetch* side = nullptr);

// The norms and the activation split their rows across up to num_threads threads (row_split.h).

// out[r] = weight * (x[r] / sqrt(mean(x[r]^2) + eps))
void rms_norm(float* out,            // [rows, hidden]
              const float* x,        // [rows, hidden], row stride x_stride
              const float* weight,   // [hidden]
              int64_t rows, int64_t hidden, int64_t x_stride, float eps, int num_threads);

// residual_out[r] = x[r] + residual[r]; out[r] = rms_norm(residual_out[r]). residual_out may be residual.
void fused_add_rms_norm(float* out,             // [rows, hidden]
                        float* residual_out,    // [rows, hidden]
                        const float* residual,  // [rows, hidden]
                        const float* x,         // [rows, hidden]
                        const float* weight,    // [hidden]
                        int64_t rows, int64_t hidden, float eps, int num_threads);

// out[r] = silu(x[r, :d]) * x[r, d:]
void silu_and_mul(float* out,       // [rows, d]
                  const float* x,   // [rows, 2 * d]
                  int64_t rows, int64_t d, int num_threads);

// The same three ops on bfloat16 activations (weights, inputs and outputs bfloat16, math in float32), rounded
// where torch's ops on bfloat16 tensors round: after the residual sum, after normalising (before the weight),
// after silu (before the multiplication), and each result.
void rms_norm_bf16(uint16_t* out, const uint16_t* x, const uint16_t* weight, int64_t rows, int64_t hidden,
                   int64_t x_stride, float eps, int num_threads);

void fused_add_rms_norm_bf16(uint16_t* out, uint16_t* residual_out, const uint16_t* residual, const uint16_t* x,
                             const uint16_t* weight, int64_t rows, int64_t hidden, float eps, int num_threads);

void silu_and_mul_bf16(uint16_t* out, const uint16_t* x, int64_t rows, int64_t d, int num_threads);

void rotary_neox(float* x,            // [T, heads, head_dim], token stride token_stride
                 const float* cos,    // [T, rot_dim / 2]
                 const float* sin,    // [T, rot_dim / 2]
                 int64_t tokens, int64_t heads, int64_t head_dim, int64_t rot_dim, int64_t token_stride);

// kv_cache[0][slot] = key[t], kv_cache[1][slot] = value[t] for slot = slot_mapping[t]
void reshape_and_cache(void* kv_cache,             // [2, num_slots, row]
                       int cache_dtype,
                       const void* key,            // [T, row], token stride key_stride
                       const void* value,          // [T, row], token stride value_stride
                       int input_dtype,            // key's and value's type (a CacheDtype id)
                       const int64_t* slot_mapping,  // [T]
                       int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride);

// Attention of one query token per request (a decode step) over its cached context, read in place;
// (request, KV head) pairs split across up to num_threads OpenMP threads.
void paged_attention_decode(float* out,                   // [R, H, D]
                            const float* query,           // [R, H, D], request stride query_stride
                            const void* kv_cache,         // [2, NB, BS, KVH, D]
                            int cache_dtype,
                            const int32_t* block_tables,  // [R, W]
                            const int32_t* seq_lens,      // [R]
                            int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
                            int64_t block_size, int64_t table_width, int64_t query_stride, float scale,
                            int64_t sliding_window, int num_threads);

// Causal attention of the requests with more than one query row (prompt chunks: the last q_len tokens of a
// seq_len-token context, keys (pos - sliding_window, pos] visible when sliding_window > 0) over their cached
// keys and values; rows of one-row requests are left for paged_attention_decode. (request, KV head, tile of
// tokens) items split across up to num_threads OpenMP threads. Needs paged_attention_prefill_fits(head_dim).
void paged_attention_prefill(float* out,                     // [T, H, D]
                             const float* query,             // [T, H, D], token stride query_stride
                             const void* kv_cache,           // [2, NB, BS, KVH, D]
                             int cache_dtype,
                             const int32_t* block_tables,    // [R, W]
                             const int32_t* seq_lens,        // [R]
                             const int32_t* query_start_loc,  // [R + 1]
                             int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
                             int64_t block_size, int64_t table_width, int64_t query_stride, float scale,
                             int64_t sliding_window, int num_threads);

// Whether this CPU has the prefill kernel's instructions (AVX2, FMA, F16C) and head_dim is a multiple of 8.
bool paged_attention_prefill_fits(int64_t head_dim);

// A layer's work between its qkv projection and attention, for every token of a step, in place in qkv:
// per-head q/k RMSNorm (when the norms are given; Qwen3), GPT-NeoX rotary on q and k, k and v into the cache.
// Tokens are split across up to num_threads threads.
void prepare_qkv(float* qkv,                   // [T, (H + 2 KVH) * D]: q | k | v, token stride qkv_stride
                 const float* q_norm,          // [D] or nullptr
                 const float* k_norm,          // [D] or nullptr
                 const float* cos,             // [T, rot_dim / 2]
                 const float* sin,             // [T, rot_dim / 2]
                 void* kv_cache,               // [2, num_slots, KVH * D]
                 int cache_dtype,
                 const int64_t* slot_mapping,  // [T]
                 int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t rot_dim,
                 int64_t num_slots, int64_t qkv_stride, float eps, int num_threads);

// A decode step's attention block in one call: prepare_qkv, then paged_attention_decode of the rotated
// queries (read in place from qkv). One token per request: T == R.
void decode_attention_block(float* out,                   // [R, H, D]
                            float* qkv,                   // [R, (H + 2 KVH) * D], updated in place
                            const float* q_norm,          // [D] or nullptr
                            const float* k_norm,          // [D] or nullptr
                            const float* cos,             // [R, rot_dim / 2]
                            const float* sin,             // [R, rot_dim / 2]
                            void* kv_cache,               // [2, NB, BS, KVH, D]
                            int cache_dtype,
                            const int64_t* slot_mapping,  // [R]
                            const int32_t* block_tables,  // [R, W]
                            const int32_t* seq_lens,      // [R]
                            int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t rot_dim,
                            int64_t num_blocks, int64_t block_size, int64_t table_width, int64_t qkv_stride,
                            float eps, float scale, int64_t sliding_window, int num_threads);

// ---- weights in their stored format (quant_formats.h): GGUF blocks or half-precision rows ----
// `format` is a GGML type id (WeightFormat); a row of W holds k values in weight_row_bytes(format, k) bytes,
// and rows start row_stride >= that many bytes apart (fused projections pad rows of a narrower format).

// The instruction set the matmuls were dispatched to: "avx512", "avx2" or "baseline".
const char* quant_matmul_isa();

// Bytes of one row of k values; throws std::invalid_argument for a format without a kernel or a k that is
// not a whole number of its blocks.
int64_t weight_row_bytes(int format, int64_t k);

// out[r, j] = sum_i x[r, i] * W[j, i], float32 accumulation; rows of W split across num_threads threads.
void quant_matmul(float* out,         // [m, n], row stride out_stride
                  const float* x,     // [m, k], row stride x_stride
                  const uint8_t* w,   // [n, row_stride]
                  int format, int64_t m, int64_t n, int64_t k, int64_t row_stride, int64_t x_stride,
                  int64_t out_stride, int num_threads);

// out = W as float32.
void dequantize_weight_rows(float* out,        // [rows, k]
                            const uint8_t* w,  // [rows, row_stride]
                            int format, int64_t rows, int64_t k, int64_t row_stride, int num_threads);

// out[i] = W[ids[i]] as float32 (embedding lookups); ids must be in [0, rows of W).
void dequantize_gathered_rows(float* out,          // [num_ids, k]
                              const uint8_t* w,    // [rows, row_stride]
                              int format,
                              const int64_t* ids,  // [num_ids]
                              int64_t num_ids, int64_t k, int64_t row_stride);

}  // namespace kvserve::cpu
