// The CUDA kernels' module (kvserve._kernels) is separate from _core: it is built only where nvcc is found.
#pragma once

#include <pybind11/pybind11.h>

namespace kvserve::bindings {

void register_cuda_kernels(pybind11::module_& m);
void register_gemm_kernels(pybind11::module_& m);

}  // namespace kvserve::bindings
