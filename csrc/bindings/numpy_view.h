// Zero-copy numpy views of C++ vectors: the array's base keeps the owning Python object alive.
#pragma once

#include <pybind11/numpy.h>

#include <vector>

namespace kvserve::bindings {

template <typename T>
pybind11::array_t<T> numpy_view(const std::vector<T>& data, pybind11::handle owner) {
  return pybind11::array_t<T>({static_cast<pybind11::ssize_t>(data.size())}, {sizeof(T)}, data.data(), owner);
}

template <typename T>
pybind11::array_t<T> numpy_view_2d(const std::vector<T>& data, pybind11::ssize_t rows, pybind11::ssize_t cols,
                                   pybind11::handle owner) {
  return pybind11::array_t<T>({rows, cols}, {static_cast<pybind11::ssize_t>(sizeof(T)) * cols,
                                             static_cast<pybind11::ssize_t>(sizeof(T))},
                              data.data(), owner);
}

}  // namespace kvserve::bindings
