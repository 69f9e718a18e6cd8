// Argument conversions shared by the kernels' bindings: device addresses and dtype codes from Python ints.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "../kernels/kernels.h"

namespace kvserve::bindings {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline kernels::DType dtype_of(int code) {
  if (code < 0 || code > 2) throw std::invalid_argument("dtype code must be 0 (fp32), 1 (fp16) or 2 (bf16)");
  return static_cast<kernels::DType>(code);
}

}  // namespace kvserve::bindings
