// pybind11 face of the GPT block's kernels (aigc/linear.h, aigc/norm.h): a Linear layer
// built from float32 weights (k, n) in the chosen storage dtype, the residual + layer
// norm, and GELU. For tests and benchmarks; the native decoder calls the C++ directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "aigc/linear.h"
#include "aigc/norm.h"
#include "python/array_checks.h"

namespace py = pybind11;
using aigc::python::checked_data;

namespace aigc::python {

WeightDtype parse_weight_dtype(const std::string& name) {
  if (name == "float32") return WeightDtype::kFloat32;
  if (name == "bfloat16") return WeightDtype::kBFloat16;
  if (name == "int8") return WeightDtype::kInt8;
  throw py::value_error("dtype: expected 'float32', 'bfloat16' or 'int8', got '" + name + "'");
}

void bind_block_ops(py::module_& m) {
  py::class_<Linear>(m, "Linear")
      .def(py::init([](py::array weight, py::object bias, const std::string& dtype) {
             const WeightDtype kind = parse_weight_dtype(dtype);
             const float* w = checked_data<float>(weight, "weight", "float32", {"k", "n"}, {-1, -1}, false);
             const int64_t k = weight.shape(0), n = weight.shape(1);
             const float* b = nullptr;
             if (!bias.is_none()) {
               b = checked_data<float>(bias.cast<py::array>(), "bias", "float32", {"n"}, {n}, false);
             }
             py::gil_scoped_release release;
             return make_linear(w, n, 1, b, k, n, kind);
           }),
           py::arg("weight"), py::arg("bias") = py::none(), py::arg("dtype") = "float32")
      .def_readonly("k", &Linear::k)
      .def_readonly("n", &Linear::n)
      .def("forward", [](const Linear& layer, py::array x, py::array out, bool blas) {
             const float* xs = checked_data<float>(x, "x", "float32", {"m", "k"}, {-1, layer.k}, false);
             const int64_t rows = x.shape(0);
             float* ys = checked_data<float>(out, "out", "float32", {"m", "n"}, {rows, layer.n}, true);
             py::gil_scoped_release release;
             (blas ? linear_forward_blas : linear_forward)(layer, xs, rows, ys);
           }, py::arg("x"), py::arg("out"), py::arg("blas") = false);

  m.def("add_layer_norm", [](py::array h, py::object delta, py::array weight, py::array bias, py::array y, float eps) {
    LayerNormParams p{};
    p.h = checked_data<float>(h, "h", "float32", {"rows", "dim"}, {-1, -1}, !delta.is_none());
    p.rows = h.shape(0);
    p.dim = h.shape(1);
    // A row of no features has no mean to subtract (the kernel would divide by 0).
    if (p.dim < 1) throw py::value_error("h: expected dim >= 1, got " + aigc::python::describe(h));
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

  m.def("gelu_tanh", [](py::array x) {
    float* data = checked_data<float>(x, "x", "float32", {"n"}, {-1}, true);
    const int64_t n = x.shape(0);
    py::gil_scoped_release release;
    gelu_tanh(data, n);
  }, py::arg("x"));
}

}  // namespace aigc::python
