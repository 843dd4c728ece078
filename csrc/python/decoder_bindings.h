// What the CPU decoder's bindings (python/decoder.cc) and the CUDA decoder's
// (python/cuda_decoder.cc) share: the config, weights and step arrays read from Python, and
// the one Python face of a GPT model and its KV cache, whichever device holds them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "python/array_checks.h"
#include "runtime/gpt.h"
#include "runtime/kv_cache.h"

namespace aigc::python {

WeightDtype parse_weight_dtype(const std::string& name);  // python/linear.cc
// python/decoder.cc:
GptConfig gpt_config(const pybind11::dict& config);
KvDtype parse_kv_dtype(const std::string& name);
WeightLookup weight_lookup(const pybind11::dict& weights);
StepBatch step_batch(const pybind11::array& tokens, const pybind11::array& positions,
                     const pybind11::array& cu_seqlens, const pybind11::array& context_lens,
                     const pybind11::array& is_prompt, const pybind11::array& block_table);

// _C.<name>(n_layer, n_head, head_dim, block_size, num_blocks, dtype="float32"), built by `make`.
template <typename Cache, typename Make>
void bind_kv_cache(pybind11::module_& m, const char* name, Make make) {
  namespace py = pybind11;
  py::class_<Cache>(m, name)
      .def(py::init(make), py::arg("n_layer"), py::arg("n_head"), py::arg("head_dim"), py::arg("block_size"),
           py::arg("num_blocks"), py::arg("dtype") = "float32")
      .def_property_readonly("dtype", [](const Cache& cache) { return cache.bf16() ? "bfloat16" : "float32"; })
      .def_property_readonly("nbytes", [](const Cache& cache) {
        return 2 * cache.n_layer() * cache.num_blocks() * cache.block_elements() * cache.element_bytes();
      })
      .def_property_readonly("block_size", &Cache::block_size)
      .def_property_readonly("num_blocks", &Cache::num_blocks)
      .def_property_readonly("free_blocks", &Cache::free_blocks)
      .def("allocate", &Cache::allocate, py::arg("count"))
      .def("release", &Cache::release, py::arg("blocks"));
}

// _C.<name>(config, weights, dtype="float32"), built by `make`, whose forward runs one packed
// step over a `cache_name` with the GIL released, the logits into a host array.
template <typename Model, typename Cache, typename Make>
void bind_gpt_model(pybind11::module_& m, const char* name, const char* cache_name, Make make) {
  namespace py = pybind11;
  const std::string no_cache = std::string("cache: expected a ") + cache_name + ", got None";
  py::class_<Model, std::unique_ptr<Model>>(m, name)
      .def(py::init(make), py::arg("config"), py::arg("weights"), py::arg("dtype") = "float32")
      .def_property_readonly("weight_bytes", &Model::weight_bytes)
      .def("forward",
           [no_cache](Model& model, py::array tokens, py::array positions, py::array cu_seqlens,
                      py::array context_lens, py::array is_prompt, py::array block_table, Cache* cache,
                      py::array logits) {
             // A pointer: None reaches here as null (a reference would be pybind's RuntimeError).
             if (cache == nullptr) throw py::type_error(no_cache);
             const StepBatch b = step_batch(tokens, positions, cu_seqlens, context_lens, is_prompt, block_table);
             float* out = checked_data<float>(logits, "logits", "float32", {"num_seqs", "vocab"},
                                              {b.num_seqs, model.config().vocab_size}, true);
             py::gil_scoped_release release;
             model.forward(b, *cache, out);
           },
           py::arg("tokens"), py::arg("positions"), py::arg("cu_seqlens"), py::arg("context_lens"),
           py::arg("is_prompt"), py::arg("block_table"), py::arg("cache"), py::arg("logits"));
}

}  // namespace aigc::python
