// pybind11 face of the residual add + layer norm (aigc/norm.h): add_layer_norm(h (rows, dim),
// delta (rows, dim) or None, weight (dim,), bias (dim,), y (rows, dim), eps) adds delta into h
// in place, then writes LayerNorm(h) into y (which may be h). Argument checks only; the
// math is cpu/norm.cc's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "aigc/norm.h"
#include "python/array_checks.h"

namespace py = pybind11;

namespace aigc::python {

void bind_norm(py::module_& m) {
  m.def("add_layer_norm", [](py::array h, py::object delta, py::array weight, py::array bias, py::array y, float eps) {
    LayerNormParams p{};
    p.h = checked_data<float>(h, "h", "float32", {"rows", "dim"}, {-1, -1}, !delta.is_none());
    p.rows = h.shape(0);
    p.dim = h.shape(1);
    // A row of no features has no mean to subtract (the kernel would divide by 0).
    if (p.dim < 1) throw py::value_error("h: expected dim >= 1, got " + describe(h));
    if (!delta.is_none()) {
      p.delta = checked_data<float>(delta.cast<py::array>(), "delta", "float32", {"rows", "dim"}, {p.rows, p.dim}, false);
    }
    p.weight = checked_data<float>(weight, "weight", "float32", {"dim"}, {p.dim}, false);
    p.bias = checked_data<float>(bias, "bias", "float32", {"dim"}, {p.dim}, false);
    p.y = checked_data<float>(y, "y", "float32", {"rows", "dim"}, {p.rows, p.dim}, true);
    if (!(eps > 0.0f)) throw py::value_error("eps: expected > 0");
    p.eps = eps;
    py::gil_scoped_release release;
    add_layer_norm(p);
  }, py::arg("h"), py::arg("delta"), py::arg("weight"), py::arg("bias"), py::arg("y"), py::arg("eps"));
}

}  // namespace aigc::python
