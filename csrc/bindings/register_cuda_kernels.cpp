// kvserve._kernels: the CUDA kernels, called by kvserve.ops.cuda_kernels with tensors' data pointers and
// the current stream as integers. Launchers validate sizes and throw; the GIL is released while they enqueue.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "../kernels/kernels.h"
#include "kernel_args.h"
#include "kernels_registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

namespace k = kvserve::kernels;

}  // namespace

void register_cuda_kernels(py::module_& m) {
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.attr("FLOAT32") = static_cast<int>(k::DType::kFloat32);
  m.attr("FLOAT16") = static_cast<int>(k::DType::kFloat16);
  m.attr("BFLOAT16") = static_cast<int>(k::DType::kBFloat16);
  m.def(
      "reshape_and_cache",
      [](int dtype, uintptr_t kv_cache, uintptr_t key, uintptr_t value, uintptr_t slot_mapping, int64_t tokens,
         int64_t num_slots, int64_t row, int64_t key_stride, int64_t value_stride, uintptr_t stream) {
        k::reshape_and_cache(dtype_of(dtype), ptr<void>(kv_cache), ptr<const void>(key), ptr<const void>(value),
                             ptr<const int64_t>(slot_mapping), tokens, num_slots, row, key_stride, value_stride,
                             stream);
      },
      py::arg("dtype"), py::arg("kv_cache"), py::arg("key"), py::arg("value"), py::arg("slot_mapping"),
      py::arg("tokens"), py::arg("num_slots"), py::arg("row"), py::arg("key_stride"), py::arg("value_stride"),
      py::arg("stream"), release);
  m.def(
      "rms_norm",
      [](int dtype, uintptr_t out, uintptr_t x, uintptr_t weight, int64_t rows, int64_t hidden, int64_t x_stride,
         float eps, uintptr_t stream) {
        k::rms_norm(dtype_of(dtype), ptr<void>(out), ptr<const void>(x), ptr<const void>(weight), rows, hidden,
                    x_stride, eps, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("rows"), py::arg("hidden"),
      py::arg("x_stride"), py::arg("eps"), py::arg("stream"), release);
  m.def(
      "fused_add_rms_norm",
      [](int dtype, uintptr_t out, uintptr_t residual_out, uintptr_t x, uintptr_t residual, uintptr_t weight,
         int64_t rows, int64_t hidden, float eps, uintptr_t stream) {
        k::fused_add_rms_norm(dtype_of(dtype), ptr<void>(out), ptr<void>(residual_out), ptr<const void>(x),
                              ptr<const void>(residual), ptr<const void>(weight), rows, hidden, eps, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("residual_out"), py::arg("x"), py::arg("residual"),
      py::arg("weight"), py::arg("rows"), py::arg("hidden"), py::arg("eps"), py::arg("stream"), release);
  m.def(
      "silu_and_mul",
      [](int dtype, uintptr_t out, uintptr_t x, int64_t rows, int64_t d, uintptr_t stream) {
        k::silu_and_mul(dtype_of(dtype), ptr<void>(out), ptr<const void>(x), rows, d, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("stream"), release);
  m.def(
      "rotary_embedding",
      [](int dtype, uintptr_t out, uintptr_t x, uintptr_t cos, uintptr_t sin, int64_t tokens, int64_t heads,
         int64_t head_dim, int64_t rot_dim, int64_t x_token_stride, int64_t x_head_stride, int64_t out_token_stride,
         int64_t out_head_stride, bool is_neox, uintptr_t stream) {
        k::rotary_embedding(dtype_of(dtype), ptr<void>(out), ptr<const void>(x), ptr<const void>(cos),
                            ptr<const void>(sin), tokens, heads, head_dim, rot_dim, x_token_stride, x_head_stride,
                            out_token_stride, out_head_stride, is_neox, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("tokens"),
      py::arg("heads"), py::arg("head_dim"), py::arg("rot_dim"), py::arg("x_token_stride"), py::arg("x_head_stride"),
      py::arg("out_token_stride"), py::arg("out_head_stride"), py::arg("is_neox"), py::arg("stream"), release);
  m.def("paged_attention_workspace_bytes", &k::paged_attention_workspace_bytes, py::arg("tokens"), py::arg("reqs"),
        py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("max_query_len"), py::arg("max_seq_len"));
  m.def(
      "paged_attention",
      [](int dtype, uintptr_t out, uintptr_t query, uintptr_t kv_cache, uintptr_t block_tables, uintptr_t seq_lens,
         uintptr_t query_start_loc, uintptr_t workspace, int64_t tokens, int64_t reqs, int64_t heads,
         int64_t kv_heads, int64_t head_dim, int64_t num_blocks, int64_t block_size, int64_t table_width,
         int64_t q_token_stride, int64_t q_head_stride, int64_t max_query_len, int64_t max_seq_len, float scale,
         int64_t sliding_window, uintptr_t stream) {
        k::paged_attention(dtype_of(dtype), ptr<void>(out), ptr<const void>(query), ptr<const void>(kv_cache),
                           ptr<const int32_t>(block_tables), ptr<const int32_t>(seq_lens),
                           ptr<const int32_t>(query_start_loc), ptr<void>(workspace), tokens, reqs, heads, kv_heads,
                           head_dim, num_blocks, block_size, table_width, q_token_stride, q_head_stride,
                           max_query_len, max_seq_len, scale, sliding_window, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("query"), py::arg("kv_cache"), py::arg("block_tables"),
      py::arg("seq_lens"), py::arg("query_start_loc"), py::arg("workspace"), py::arg("tokens"), py::arg("reqs"),
      py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("num_blocks"), py::arg("block_size"),
      py::arg("table_width"), py::arg("q_token_stride"), py::arg("q_head_stride"), py::arg("max_query_len"),
      py::arg("max_seq_len"), py::arg("scale"), py::arg("sliding_window"), py::arg("stream"), release);
}

}  // namespace kvserve::bindings
