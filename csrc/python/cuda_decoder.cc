// pybind11 face of the CUDA decoder (cuda/gpt.h, cuda/kv_cache.h), compiled only with CUDA:
// _C.CudaGptModel and _C.CudaKvCache with the signatures of _C.GptModel and _C.KvCache
// (the same config, weights and step arrays, checked the same way; the logits come back
// in a host array), a _C.Generation constructor over them, and cuda_mem_info for sizing
// the cache. Without a visible device each constructor raises ValueError naming it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>

#include "aigc/latent.h"
#include "cuda/device.h"
#include "cuda/gpt.h"
#include "cuda/kv_cache.h"
#include "python/decoder_bindings.h"
#include "runtime/generation.h"

namespace py = pybind11;

namespace aigc::python {

namespace {

using cuda::CudaGptModel;
using cuda::CudaKvCache;

void require_device(const char* what) {
  if (cuda_device_count() == 0) {
    throw py::value_error(std::string(what) + ": device='cuda' but no CUDA device is visible");
  }
}

std::unique_ptr<CudaGptModel> make_model(const py::dict& config, const py::dict& weights, const std::string& dtype) {
  const GptConfig c = gpt_config(config);
  const WeightDtype kind = parse_weight_dtype(dtype);
  require_device("CudaGptModel");
  return std::make_unique<CudaGptModel>(c, weight_lookup(weights), kind);
}

std::unique_ptr<CudaKvCache> make_cache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size,
                                        int64_t num_blocks, const std::string& dtype) {
  const KvDtype kind = parse_kv_dtype(dtype);
  require_device("CudaKvCache");
  return std::make_unique<CudaKvCache>(n_layer, n_head, head_dim, block_size, num_blocks, kind);
}

// (free, total) bytes of the current device.
std::pair<int64_t, int64_t> mem_info() {
  require_device("cuda_mem_info");
  size_t free = 0, total = 0;
  cuda::check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return {static_cast<int64_t>(free), static_cast<int64_t>(total)};
}

}  // namespace

// After bind_generation (python/generation.cc): adds a constructor to _C.Generation.
void bind_cuda_decoder(py::module_& m) {
  m.def("cuda_mem_info", &mem_info);

  bind_kv_cache<CudaKvCache>(m, "CudaKvCache", &make_cache);
  bind_gpt_model<CudaGptModel, CudaKvCache>(m, "CudaGptModel", "CudaKvCache", &make_model);

  auto generation = py::reinterpret_borrow<py::class_<Generation>>(m.attr("Generation"));
  generation.def(py::init([](CudaGptModel& model, CudaKvCache& cache, int64_t max_batch_size,
                             int64_t max_step_tokens) {
                   return std::make_unique<Generation>(
                       std::make_unique<ModelOn<CudaGptModel, CudaKvCache>>(model, cache), max_batch_size,
                       max_step_tokens);
                 }),
                 py::arg("model"), py::arg("cache"), py::arg("max_batch_size"), py::arg("max_step_tokens"),
                 py::keep_alive<1, 2>(), py::keep_alive<1, 3>());
}

}  // namespace aigc::python
