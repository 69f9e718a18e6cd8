// The GEMM and quantization kernels of kvserve._kernels (see csrc/kernels/gemm/gemm.h), called by
// kvserve.ops.cuda_gemm with tensors' data pointers and the current stream as integers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../kernels/gemm/gemm.h"
#include "kernel_args.h"
#include "kernels_registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {
namespace {

namespace k = kvserve::kernels;

k::Operand operand_of(int code) {
  if (code < 1 || code > 4) throw std::invalid_argument("operand code must be 1 (fp16), 2 (bf16), 3 (fp8) or 4 (int8)");
  return static_cast<k::Operand>(code);
}

}  // namespace

void register_gemm_kernels(py::module_& m) {
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.attr("OPERAND_FLOAT16") = static_cast<int>(k::Operand::kFloat16);
  m.attr("OPERAND_BFLOAT16") = static_cast<int>(k::Operand::kBFloat16);
  m.attr("OPERAND_FLOAT8_E4M3") = static_cast<int>(k::Operand::kFloat8E4M3);
  m.attr("OPERAND_INT8") = static_cast<int>(k::Operand::kInt8);
  m.def(
      "gemm_configs",
      [](int operand, int out_dtype, int sm) { return k::gemm_configs(operand_of(operand), dtype_of(out_dtype), sm); },
      py::arg("operand"), py::arg("out_dtype"), py::arg("sm"),
      "Names of the tile configurations compiled for these types that run on compute capability `sm`.");
  m.def(
      "gemm",
      [](int dtype, uintptr_t out, uintptr_t a, uintptr_t b, uintptr_t bias, int64_t m, int64_t n, int64_t k,
         const std::string& config, uintptr_t stream) {
        k::gemm(dtype_of(dtype), ptr<void>(out), ptr<const void>(a), ptr<const void>(b), ptr<const void>(bias), m, n,
                k, config, stream);
      },
      py::arg("dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("m"), py::arg("n"),
      py::arg("k"), py::arg("config"), py::arg("stream"), release);
  m.def(
      "scaled_mm",
      [](int operand, int out_dtype, uintptr_t out, uintptr_t a, uintptr_t b, uintptr_t a_scale, uintptr_t b_scale,
         uintptr_t bias, bool a_scale_per_row, int64_t m, int64_t n, int64_t k, const std::string& config,
         uintptr_t stream) {
        k::scaled_mm(operand_of(operand), dtype_of(out_dtype), ptr<void>(out), ptr<const void>(a), ptr<const void>(b),
                     ptr<const float>(a_scale), ptr<const float>(b_scale), ptr<const void>(bias), a_scale_per_row, m, n,
                     k, config, stream);
      },
      py::arg("operand"), py::arg("out_dtype"), py::arg("out"), py::arg("a"), py::arg("b"), py::arg("a_scale"),
      py::arg("b_scale"), py::arg("bias"), py::arg("a_scale_per_row"), py::arg("m"), py::arg("n"), py::arg("k"),
      py::arg("config"), py::arg("stream"), release);
  m.def(
      "dynamic_quantize",
      [](int operand, int in_dtype, uintptr_t out, uintptr_t scales, uintptr_t x, int64_t rows, int64_t cols,
         int64_t x_stride, uintptr_t stream) {
        k::dynamic_quantize(operand_of(operand), dtype_of(in_dtype), ptr<void>(out), ptr<float>(scales),
                            ptr<const void>(x), rows, cols, x_stride, stream);
      },
      py::arg("operand"), py::arg("in_dtype"), py::arg("out"), py::arg("scales"), py::arg("x"), py::arg("rows"),
      py::arg("cols"), py::arg("x_stride"), py::arg("stream"), release);
}

}  // namespace kvserve::bindings
