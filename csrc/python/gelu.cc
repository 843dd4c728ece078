// pybind11 face of GPT-2's tanh GELU (aigc/norm.h): gelu_tanh(x (n,)) rewrites x in place.
// Argument checks only; the math is cpu/gelu.cc's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "aigc/norm.h"
#include "python/array_checks.h"

namespace py = pybind11;

namespace aigc::python {

void bind_gelu(py::module_& m) {
  m.def("gelu_tanh", [](py::array x) {
    float* data = checked_data<float>(x, "x", "float32", {"n"}, {-1}, true);
    const int64_t n = x.shape(0);
    py::gil_scoped_release release;
    gelu_tanh(data, n);
  }, py::arg("x"));
}

}  // namespace aigc::python
