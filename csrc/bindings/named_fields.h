// Structs bound field by field. Each field is a def_readwrite attribute, and the constructor takes keywords
// only and sets them by name, so no argument order has to match the C++ declaration and a field added to
// the struct needs one line here, nowhere else.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace kvserve::bindings {

template <typename T>
class NamedFields {
 public:
  NamedFields(pybind11::module_& m, const char* name, const char* doc)
      : cls_(m, name, doc), type_name_(name), names_(std::make_shared<std::vector<std::string>>()) {}

  template <typename F>
  NamedFields& field(const char* name, F T::*member) {
    cls_.def_readwrite(name, member);
    names_->push_back(name);
    return *this;
  }

  /// Adds `T(**fields)` (a default T, then each keyword set through its attribute, which type-checks it)
  /// and a repr naming every field. @return the class, for any further definitions.
  pybind11::class_<T>& finish() {
    namespace py = pybind11;
    auto names = names_;
    const std::string type_name = type_name_;
    cls_.def(py::init([names, type_name](const py::kwargs& kwargs) {
      py::object self = py::cast(T{});
      for (const auto& [key, value] : kwargs) {
        const std::string name = py::str(key);
        if (std::find(names->begin(), names->end(), name) == names->end()) {
          throw py::type_error(type_name + "() got an unexpected keyword argument '" + name + "'");
        }
        try {
          py::setattr(self, key, value);
        } catch (py::error_already_set& e) {
          if (!e.matches(PyExc_TypeError)) throw;
          throw py::type_error(type_name + "(): " + name + " cannot be " + std::string(py::repr(value)));
        }
      }
      return self.cast<T>();
    }));
    cls_.def("__repr__", [names, type_name](const py::object& self) {
      std::string text = type_name + "(";
      for (size_t i = 0; i < names->size(); ++i) {
        text += (i ? ", " : "") + (*names)[i] + "=" + std::string(py::repr(self.attr((*names)[i].c_str())));
      }
      return text + ")";
    });
    return cls_;
  }

 private:
  pybind11::class_<T> cls_;
  std::string type_name_;
  std::shared_ptr<std::vector<std::string>> names_;  // shared with the constructor, which outlives this
};

}  // namespace kvserve::bindings
