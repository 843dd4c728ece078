// pybind11 face of the projections (aigc/linear.h): _C.Linear, built from float32 weights
// W (k, n) and an optional bias (n,), stored as float32, bfloat16 or int8 (per-column
// scales); forward(x (m, k), out (m, n), blas) writes y = x · W + bias into out.
// Argument checks only; the math is cpu/linear*.cc's, the weight packing runtime/linear.cc's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "aigc/linear.h"
#include "python/array_checks.h"

namespace py = pybind11;

namespace aigc::python {

// Also the decoder's (python/decoder.cc).
WeightDtype parse_weight_dtype(const std::string& name) {
  if (name == "float32") return WeightDtype::kFloat32;
  if (name == "bfloat16") return WeightDtype::kBFloat16;
  if (name == "int8") return WeightDtype::kInt8;
  throw py::value_error("dtype: expected 'float32', 'bfloat16' or 'int8', got '" + name + "'");
}

namespace {

const char* weight_dtype_name(WeightDtype dtype) {
  switch (dtype) {
    case WeightDtype::kBFloat16: return "bfloat16";
    case WeightDtype::kInt8: return "int8";
    default: return "float32";
  }
}

}  // namespace

void bind_linear(py::module_& m) {
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
      .def_property_readonly("dtype", [](const Linear& layer) { return std::string(weight_dtype_name(layer.dtype)); })
      .def("forward", [](const Linear& layer, py::array x, py::array out, bool blas) {
             const float* xs = checked_data<float>(x, "x", "float32", {"m", "k"}, {-1, layer.k}, false);
             const int64_t rows = x.shape(0);
             float* ys = checked_data<float>(out, "out", "float32", {"m", "n"}, {rows, layer.n}, true);
             py::gil_scoped_release release;
             (blas ? linear_forward_blas : linear_forward)(layer, xs, rows, ys);
           }, py::arg("x"), py::arg("out"), py::arg("blas") = false);
}

}  // namespace aigc::python
