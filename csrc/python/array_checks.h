// Argument checks for numpy arrays crossing into the kernels: dtype, C-contiguity,
// writability and shape, with errors that name the argument, what was expected and
// what came, e.g. "out: expected C-contiguous float32 (n, dim), got float64 (4, 100)".
// The offsets and size checks every binding uses are aigc/checks.h's.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "aigc/checks.h"

namespace aigc::python {

namespace py = pybind11;

inline std::string describe(const py::array& a) {
  std::string shape = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape(d));
  if (a.ndim() == 1) shape += ",";
  shape += ")";
  std::string layout = (a.flags() & py::array::c_style) ? "" : "non-contiguous ";
  return layout + py::str(a.dtype()).cast<std::string>() + " " + shape;
}

// `dims` names each dimension for the message; `expected` gives a required size or -1.
template <typename T>
T* checked_data(const py::array& a, const char* name, const char* dtype_name, const char* const* dims,
                const py::ssize_t* expected, size_t ndim, bool writable) {
  bool ok = a.dtype().is(py::dtype::of<T>()) && (a.flags() & py::array::c_style) &&
            a.ndim() == static_cast<py::ssize_t>(ndim);
  for (size_t d = 0; ok && d < ndim; ++d) ok = expected[d] < 0 || a.shape(d) == expected[d];
  if (!ok) {
    std::string want = std::string(name) + ": expected C-contiguous " + dtype_name + " (";
    for (size_t d = 0; d < ndim; ++d) {
      want += (d ? ", " : "") + (expected[d] < 0 ? std::string(dims[d]) : std::to_string(expected[d]));
    }
    want += ndim == 1 ? ",)" : ")";
    throw py::value_error(want + ", got " + describe(a));
  }
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": array is read-only");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

// The form the per-call checks use: brace lists, no allocation (the sampler checks its
// arrays every decode step).
template <typename T>
T* checked_data(const py::array& a, const char* name, const char* dtype_name,
                std::initializer_list<const char*> dims, std::initializer_list<py::ssize_t> expected,
                bool writable) {
  return checked_data<T>(a, name, dtype_name, dims.begin(), expected.begin(), dims.size(), writable);
}

template <typename T>
T* checked_data(const py::array& a, const char* name, const char* dtype_name, const std::vector<const char*>& dims,
                const std::vector<py::ssize_t>& expected, bool writable) {
  return checked_data<T>(a, name, dtype_name, dims.data(), expected.data(), dims.size(), writable);
}

// An argument that may be None in the signature but not here (e.g. logit_bias offsets
// once ids are given): the array, or "name: expected <expected>, got None".
inline py::array required_array(const py::object& a, const char* name, const char* expected) {
  if (a.is_none()) throw py::value_error(std::string(name) + ": expected " + expected + ", got None");
  return a.cast<py::array>();
}

// The offsets check lives with the runtime's checks (the decoder validates a step itself).
using aigc::check_offsets;

}  // namespace aigc::python
