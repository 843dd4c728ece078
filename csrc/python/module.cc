// pybind11 bindings of aigc_engine._C: argument checks and device dispatch, no math.
// Every kernel call releases the GIL; outputs are allocated by the caller (aigc_engine/ops.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "aigc/isa.h"
#include "aigc/latent.h"
#include "aigc/sampling.h"
#include "python/array_checks.h"
#include "python/device.h"
#include "runtime/thread_pool.h"

namespace py = pybind11;

void bind_sampling(py::module_& m);  // python/sampling.cc
void bind_attention(py::module_& m);  // python/attention.cc
using aigc::python::checked_data;
using aigc::python::on_cuda;

namespace aigc::python {
void bind_gelu(py::module_& m);    // python/gelu.cc
void bind_linear(py::module_& m);  // python/linear.cc
void bind_isa_peak(py::module_& m);  // python/isa_peak.cc
void bind_thread_pool(py::module_& m);  // python/thread_pool.cc
void bind_norm(py::module_& m);    // python/norm.cc
void bind_decoder(py::module_& m);
void bind_lstm(py::module_& m);        // python/lstm.cc
void bind_generation(py::module_& m);  // python/generation.cc
#ifdef AIGC_WITH_CUDA
void bind_cuda_decoder(py::module_& m);  // python/cuda_decoder.cc
#endif
}  // namespace aigc::python

namespace {

void sample_latent(py::array out, uint64_t seed, uint64_t first_index, double truncation,
                   const std::string& device) {
  if (!(truncation > 0.0)) {
    throw py::value_error("truncation: expected > 0 (or None for off), got " + std::to_string(truncation));
  }
  aigc::LatentParams p{};
  p.out = checked_data<float>(out, "out", "float32", {"n", "dim"}, {-1, -1}, true);
  p.n = out.shape(0);
  p.dim = out.shape(1);
  p.seed = seed;
  p.first_index = first_index;
  p.truncation = truncation;
  const bool cuda = on_cuda(device);
  py::gil_scoped_release release;
#ifdef AIGC_WITH_CUDA
  if (cuda) return aigc::sample_latent_cuda(p);
#endif
  (void)cuda;
  aigc::sample_latent_cpu(p);
}

void slerp(py::array a, py::array b, py::array t, py::array out) {
  aigc::SlerpParams p{};
  p.a = checked_data<float>(a, "a", "float32", {"dim"}, {-1}, false);
  p.dim = a.shape(0);
  p.b = checked_data<float>(b, "b", "float32", {"dim"}, {p.dim}, false);
  p.t = checked_data<float>(t, "t", "float32", {"n"}, {-1}, false);
  p.n = t.shape(0);
  p.out = checked_data<float>(out, "out", "float32", {"n", "dim"}, {p.n, p.dim}, true);
  py::gil_scoped_release release;
  aigc::slerp_cpu(p);
}

int64_t images_to_uint8(py::array images, py::array out, const std::string& device) {
  aigc::ToUint8Params p{};
  p.images = checked_data<float>(images, "images", "float32", {"n", "channels", "height", "width"},
                                 {-1, -1, -1, -1}, false);
  p.n = images.shape(0);
  p.channels = images.shape(1);
  p.height = images.shape(2);
  p.width = images.shape(3);
  p.out = checked_data<uint8_t>(out, "out", "uint8", {"n", "height", "width", "channels"},
                                {p.n, p.height, p.width, p.channels}, true);
  const bool cuda = on_cuda(device);
  py::gil_scoped_release release;
#ifdef AIGC_WITH_CUDA
  if (cuda) return aigc::images_to_uint8_cuda(p);
#endif
  (void)cuda;
  return aigc::images_to_uint8_cpu(p);
}

int cuda_device_count() {
#ifdef AIGC_WITH_CUDA
  return aigc::cuda_device_count();
#else
  return 0;
#endif
}

// Waits for every kernel launched so far (nothing to wait for in a CPU-only build).
void cuda_synchronize() {
#ifdef AIGC_WITH_CUDA
  if (aigc::cuda_device_count() > 0) aigc::cuda_synchronize();
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "aigc_engine native kernels (see aigc_engine.ops for the documented Python face)";
#ifdef AIGC_WITH_CUDA
  m.attr("cuda_compiled") = true;
#else
  m.attr("cuda_compiled") = false;
#endif
  m.attr("max_resample_rounds") = aigc::kMaxResampleRounds;
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_synchronize", &cuda_synchronize, py::call_guard<py::gil_scoped_release>());
  m.def("cpu_isa", [] { return std::string(aigc::isa_name(aigc::cpu_isa())); });
  m.def("active_isa", [] { return std::string(aigc::isa_name(aigc::active_isa())); });
  m.def("cpu_has_avx512_bf16", &aigc::cpu_has_avx512_bf16);
  m.def("cpu_has_avx512_vnni", &aigc::cpu_has_avx512_vnni);
  m.def("cpu_has_amx_int8", &aigc::cpu_has_amx_int8);
  m.def("num_threads", &aigc::num_threads);
  aigc::python::bind_linear(m);
  aigc::python::bind_isa_peak(m);
  aigc::python::bind_thread_pool(m);
  aigc::python::bind_norm(m);
  aigc::python::bind_gelu(m);
  aigc::python::bind_decoder(m);
  aigc::python::bind_lstm(m);
  aigc::python::bind_generation(m);
#ifdef AIGC_WITH_CUDA
  aigc::python::bind_cuda_decoder(m);  // after Generation: adds its CUDA constructor
#endif
  m.def("sample_latent", &sample_latent, py::arg("out"), py::arg("seed"), py::arg("first_index"),
        py::arg("truncation"), py::arg("device") = "cpu");
  m.def("slerp", &slerp, py::arg("a"), py::arg("b"), py::arg("t"), py::arg("out"));
  m.def("images_to_uint8", &images_to_uint8, py::arg("images"), py::arg("out"), py::arg("device") = "cpu");
  bind_sampling(m);
  bind_attention(m);
}
