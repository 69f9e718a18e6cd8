// One register_* function per class family; module.cpp only wires them.
#pragma once

#include <pybind11/pybind11.h>

namespace kvserve::bindings {

void register_errors(pybind11::module_& m);
void register_block_pool(pybind11::module_& m);
void register_scheduler_outputs(pybind11::module_& m);
void register_scheduler(pybind11::module_& m);
void register_cpu_kernels(pybind11::module_& m);
void register_cpu_decode(pybind11::module_& m);  // after register_cpu_kernels: adds to its submodule

}  // namespace kvserve::bindings
