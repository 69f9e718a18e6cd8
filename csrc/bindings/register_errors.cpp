#include <pybind11/pybind11.h>

#include "../core/check.h"
#include "registrations.h"

namespace py = pybind11;

namespace kvserve::bindings {

void register_errors(py::module_& m) {
  py::register_exception<UnknownRequest>(m, "UnknownRequestError", PyExc_KeyError);
  py::register_exception<InternalError>(m, "CoreInvariantError", PyExc_RuntimeError);
  // InvalidArgument derives from std::invalid_argument, which pybind11 already raises as ValueError.
}

}  // namespace kvserve::bindings
