// kvserve._core.cpu: the CPU kernels, called by kvserve.ops with tensors' data pointers. Shapes and dtypes
// are checked by the Python wrappers (kvserve/ops/cpu_kernels.py); the GIL is released while they run.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "../cpu/kernels.h"
#include "../cpu/kv_cache_rows.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

void register_cpu_kernels(py::module_& m) {
  auto cpu = m.def_submodule("cpu", "CPU kernels (float32 math) on raw pointers (see kvserve.ops.cpu_kernels)");
  const auto release = py::call_guard<py::gil_scoped_release>();
  cpu.def(
      "rms_norm",
      [](uintptr_t out, uintptr_t x, uintptr_t weight, int64_t rows, int64_t hidden, int64_t x_stride, float eps,
         int num_threads) {
        kvserve::cpu::rms_norm(ptr<float>(out), ptr<const float>(x), ptr<const float>(weight), rows, hidden, x_stride,
                               eps, num_threads);
      },
      release);
  cpu.def(
      "fused_add_rms_norm",
      [](uintptr_t out, uintptr_t residual_out, uintptr_t residual, uintptr_t x, uintptr_t weight, int64_t rows,
         int64_t hidden, float eps, int num_threads) {
        kvserve::cpu::fused_add_rms_norm(ptr<float>(out), ptr<float>(residual_out), ptr<const float>(residual),
                                         ptr<const float>(x), ptr<const float>(weight), rows, hidden, eps, num_threads);
      },
      release);
  cpu.def(
      "silu_and_mul",
      [](uintptr_t out, uintptr_t x, int64_t rows, int64_t d, int num_threads) {
        kvserve::cpu::silu_and_mul(ptr<float>(out), ptr<const float>(x), rows, d, num_threads);
      },
      release);
  cpu.def("blocked_matmul_fits", &kvserve::cpu::blocked_matmul_fits);
  // bias is 0 when the layer has none.
  cpu.def(
      "blocked_matmul",
      [](uintptr_t out, uintptr_t x, uintptr_t w, uintptr_t bias, int64_t rows, int64_t n, int64_t k, int64_t k_padded,
         int64_t x_stride, int64_t out_stride, int num_threads) {
        kvserve::cpu::blocked_matmul(ptr<float>(out), ptr<const float>(x), ptr<const float>(w), ptr<const float>(bias),
                                     rows, n, k, k_padded, x_stride, out_stride, num_threads);
      },
      release);
  cpu.def(
      "rms_norm_bf16",
      [](uintptr_t out, uintptr_t x, uintptr_t weight, int64_t rows, int64_t hidden, int64_t x_stride, float eps,
         int num_threads) {
        kvserve::cpu::rms_norm_bf16(ptr<uint16_t>(out), ptr<const uint16_t>(x), ptr<const uint16_t>(weight), rows,
                                    hidden, x_stride, eps, num_threads);
      },
      release);
  cpu.def(
      "fused_add_rms_norm_bf16",
      [](uintptr_t out, uintptr_t residual_out, uintptr_t residual, uintptr_t x, uintptr_t weight, int64_t rows,
         int64_t hidden, float eps, int num_threads) {
        kvserve::cpu::fused_add_rms_norm_bf16(ptr<uint16_t>(out), ptr<uint16_t>(residual_out),
                                              ptr<const uint16_t>(residual), ptr<const uint16_t>(x),
                                              ptr<const uint16_t>(weight), rows, hidden, eps, num_threads);
      },
      release);
  cpu.def(
      "silu_and_mul_bf16",
      [](uintptr_t out, uintptr_t x, int64_t rows, int64_t d, int num_threads) {
        kvserve::cpu::silu_and_mul_bf16(ptr<uint16_t>(out), ptr<const uint16_t>(x), rows, d, num_threads);
      },
      release);
  cpu.def(
      "rotary_neox",
      [](uintptr_t x, uintptr_t cos, uintptr_t sin, int64_t tokens, int64_t heads, int64_t head_dim, int64_t rot_dim,
         int64_t token_stride) {
        kvserve::cpu::rotary_neox(ptr<float>(x), ptr<const float>(cos), ptr<const float>(sin), tokens, heads,
                                  head_dim, rot_dim, token_stride);
      },
      release);
  // Type ids (cache_dtype, input_dtype): 0 float32, 1 float16, 2 bfloat16 (kvserve::cpu::CacheDtype); another
  // is a ValueError.
  cpu.def(
      "reshape_and_cache",
      [](uintptr_t kv_cache, int cache_dtype, uintptr_t key, uintptr_t value, int input_dtype, uintptr_t slot_mapping,
         int64_t tokens, int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride) {
        kvserve::cpu::reshape_and_cache(ptr<void>(kv_cache), cache_dtype, ptr<const void>(key), ptr<const void>(value),
                                        input_dtype, ptr<const int64_t>(slot_mapping), tokens, num_slots, row,
                                        key_stride, value_stride);
      },
      release);
  cpu.def(
      "paged_attention_decode",
      [](uintptr_t out, uintptr_t query, uintptr_t kv_cache, int cache_dtype, uintptr_t block_tables,
         uintptr_t seq_lens, int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t num_blocks,
         int64_t block_size, int64_t table_width, int64_t query_stride, float scale, int64_t sliding_window,
         int num_threads) {
        kvserve::cpu::paged_attention_decode(ptr<float>(out), ptr<const float>(query), ptr<const void>(kv_cache),
                                             cache_dtype, ptr<const int32_t>(block_tables),
                                             ptr<const int32_t>(seq_lens), reqs, heads, kv_heads, head_dim,
                                             num_blocks, block_size, table_width, query_stride, scale,
                                             sliding_window, num_threads);
      },
      release);
  cpu.def(
      "paged_attention_prefill",
      [](uintptr_t out, uintptr_t query, uintptr_t kv_cache, int cache_dtype, uintptr_t block_tables,
         uintptr_t seq_lens, uintptr_t query_start_loc, int64_t reqs, int64_t heads, int64_t kv_heads,
         int64_t head_dim, int64_t num_blocks, int64_t block_size, int64_t table_width, int64_t query_stride,
         float scale, int64_t sliding_window, int num_threads) {
        kvserve::cpu::paged_attention_prefill(
            ptr<float>(out), ptr<const float>(query), ptr<const void>(kv_cache), cache_dtype,
            ptr<const int32_t>(block_tables), ptr<const int32_t>(seq_lens), ptr<const int32_t>(query_start_loc), reqs,
            heads, kv_heads, head_dim, num_blocks, block_size, table_width, query_stride, scale, sliding_window,
            num_threads);
      },
      release);
  cpu.def("paged_attention_prefill_fits", &kvserve::cpu::paged_attention_prefill_fits);
  // q_norm and k_norm are 0 when the model has none.
  cpu.def(
      "prepare_qkv",
      [](uintptr_t qkv, uintptr_t q_norm, uintptr_t k_norm, uintptr_t cos, uintptr_t sin, uintptr_t kv_cache,
         int cache_dtype, uintptr_t slot_mapping, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
         int64_t rot_dim, int64_t num_slots, int64_t qkv_stride, float eps, int num_threads) {
        kvserve::cpu::prepare_qkv(ptr<float>(qkv), ptr<const float>(q_norm), ptr<const float>(k_norm),
                                  ptr<const float>(cos), ptr<const float>(sin), ptr<void>(kv_cache), cache_dtype,
                                  ptr<const int64_t>(slot_mapping), tokens, heads, kv_heads, head_dim, rot_dim,
                                  num_slots, qkv_stride, eps, num_threads);
      },
      release);
  cpu.def(
      "decode_attention_block",
      [](uintptr_t out, uintptr_t qkv, uintptr_t q_norm, uintptr_t k_norm, uintptr_t cos, uintptr_t sin,
         uintptr_t kv_cache, int cache_dtype, uintptr_t slot_mapping, uintptr_t block_tables, uintptr_t seq_lens,
         int64_t reqs, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t rot_dim, int64_t num_blocks,
         int64_t block_size, int64_t table_width, int64_t qkv_stride, float eps, float scale, int64_t sliding_window,
         int num_threads) {
        kvserve::cpu::decode_attention_block(
            ptr<float>(out), ptr<float>(qkv), ptr<const float>(q_norm), ptr<const float>(k_norm),
            ptr<const float>(cos), ptr<const float>(sin), ptr<void>(kv_cache), cache_dtype,
            ptr<const int64_t>(slot_mapping), ptr<const int32_t>(block_tables), ptr<const int32_t>(seq_lens), reqs,
            heads, kv_heads, head_dim, rot_dim, num_blocks, block_size, table_width, qkv_stride, eps, scale,
            sliding_window, num_threads);
      },
      release);
  cpu.def("kv_cache_rows_isa", &kvserve::cpu::kv_cache_rows_isa);
  // std::invalid_argument (a format without a kernel, a bad row stride) arrives as ValueError.
  cpu.def("quant_matmul_isa", &kvserve::cpu::quant_matmul_isa);
  cpu.def("weight_row_bytes", &kvserve::cpu::weight_row_bytes, py::arg("format"), py::arg("k"));
  cpu.def(
      "quant_matmul",
      [](uintptr_t out, uintptr_t x, uintptr_t w, int format, int64_t m, int64_t n, int64_t k, int64_t row_stride,
         int64_t x_stride, int64_t out_stride, int num_threads) {
        kvserve::cpu::quant_matmul(ptr<float>(out), ptr<const float>(x), ptr<const uint8_t>(w), format, m, n, k,
                                   row_stride, x_stride, out_stride, num_threads);
      },
      release);
  cpu.def(
      "dequantize_weight_rows",
      [](uintptr_t out, uintptr_t w, int format, int64_t rows, int64_t k, int64_t row_stride, int num_threads) {
        kvserve::cpu::dequantize_weight_rows(ptr<float>(out), ptr<const uint8_t>(w), format, rows, k, row_stride,
                                             num_threads);
      },
      release);
  cpu.def(
      "dequantize_gathered_rows",
      [](uintptr_t out, uintptr_t w, int format, uintptr_t ids, int64_t num_ids, int64_t k, int64_t row_stride) {
        kvserve::cpu::dequantize_gathered_rows(ptr<float>(out), ptr<const uint8_t>(w), format, ptr<const int64_t>(ids),
                                               num_ids, k, row_stride);
      },
      release);
}

}  // namespace kvserve::bindings
