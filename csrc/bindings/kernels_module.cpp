#include "kernels_registrations.h"

// Errors need no registration: the launchers throw std::invalid_argument (ValueError) for bad input and
// std::logic_error (RuntimeError) for failed launches, which pybind11 translates by default.
PYBIND11_MODULE(_kernels, m) {
  m.doc() = "kvserve's CUDA kernels on raw device pointers (see kvserve.ops.cuda_kernels)";
  kvserve::bindings::register_cuda_kernels(m);
#ifdef KVSERVE_WITH_GEMM
  kvserve::bindings::register_gemm_kernels(m);
#endif
}
