// pybind11 face of the native decoder (runtime/gpt.h, runtime/kv_cache.h): the model is
// built from a dict of float32 numpy weights keyed by GPT-2 name; forward takes the packed
// step as numpy arrays, checked here for dtype and shape (GptModel::check then checks
// their values against the model and the cache), and runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "python/array_checks.h"
#include "python/decoder_bindings.h"
#include "runtime/gpt.h"
#include "runtime/kv_cache.h"

namespace py = pybind11;

namespace aigc::python {

// Shared with python/lstm.cc: the config's integers, the weights by name, the step's arrays.

// config[key] as an int64 (a float, a string or an int past 64 bits is a TypeError
// naming the key, not pybind's bare cast error).
int64_t config_int(const py::dict& config, const char* key) {
  if (!config.contains(key)) throw py::value_error(std::string("config: missing '") + key + "'");
  const py::object value = config[key];
  try {
    if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value)) throw py::cast_error();
    return value.cast<int64_t>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string("config['") + key + "']: expected an integer in int64, got " +
                         py::repr(value).cast<std::string>());
  }
}

// Each weight from `weights`: a C-contiguous float32 array of the shape the model asks.
WeightLookup weight_lookup(const py::dict& weights) {
  return [&weights](const std::string& name, const std::vector<int64_t>& shape) -> const float* {
    if (!weights.contains(name)) throw py::value_error("weights: missing '" + name + "'");
    py::array array = weights[name.c_str()].cast<py::array>();
    std::vector<const char*> dims(shape.size(), "?");
    std::vector<py::ssize_t> expected(shape.begin(), shape.end());
    return checked_data<float>(array, name.c_str(), "float32", dims, expected, false);
  };
}

// The arrays' dtypes and shapes; check_step then checks their values.
StepBatch step_batch(const py::array& tokens, const py::array& positions, const py::array& cu_seqlens,
                     const py::array& context_lens, const py::array& is_prompt, const py::array& block_table) {
  StepBatch b{};
  b.tokens = checked_data<int64_t>(tokens, "tokens", "int64", {"num_tokens"}, {-1}, false);
  b.num_tokens = tokens.shape(0);
  b.positions = checked_data<int64_t>(positions, "positions", "int64", {"num_tokens"}, {b.num_tokens}, false);
  b.cu_seqlens = checked_data<int32_t>(cu_seqlens, "cu_seqlens", "int32", {"num_seqs + 1"}, {-1}, false);
  // Before num_seqs sizes the other arrays: -1 would be checked_data's "any size".
  if (cu_seqlens.shape(0) < 2) {
    throw py::value_error("cu_seqlens: expected num_seqs + 1 >= 2 entries, got " + std::to_string(cu_seqlens.shape(0)));
  }
  b.num_seqs = cu_seqlens.shape(0) - 1;
  b.context_lens = checked_data<int32_t>(context_lens, "context_lens", "int32", {"num_seqs"}, {b.num_seqs}, false);
  b.is_prompt = checked_data<uint8_t>(is_prompt, "is_prompt", "uint8", {"num_seqs"}, {b.num_seqs}, false);
  b.block_table = checked_data<int32_t>(block_table, "block_table", "int32", {"num_seqs", "max_blocks"},
                                        {b.num_seqs, -1}, false);
  b.max_blocks = block_table.shape(1);
  return b;
}

// The GPT's sizes from its config dict (shared with python/cuda_decoder.cc).
GptConfig gpt_config(const py::dict& config) {
  GptConfig c{};
  c.vocab_size = config_int(config, "vocab_size");
  c.n_positions = config_int(config, "n_positions");
  c.n_embd = config_int(config, "n_embd");
  c.n_layer = config_int(config, "n_layer");
  c.n_head = config_int(config, "n_head");
  c.eps = 1e-5f;
  if (config.contains("layer_norm_epsilon")) {
    const py::object eps = config["layer_norm_epsilon"];
    if (!py::isinstance<py::float_>(eps) && !py::isinstance<py::int_>(eps)) {
      throw py::type_error("config['layer_norm_epsilon']: expected a number, got " + py::repr(eps).cast<std::string>());
    }
    c.eps = eps.cast<float>();
  }
  return c;
}

KvDtype parse_kv_dtype(const std::string& name) {
  if (name == "float32") return KvDtype::kFloat32;
  if (name == "bfloat16") return KvDtype::kBFloat16;
  throw py::value_error("kv_dtype: expected 'float32' or 'bfloat16', got '" + name + "'");
}

namespace {

std::unique_ptr<GptModel> make_model(const py::dict& config, const py::dict& weights, const std::string& dtype) {
  return std::make_unique<GptModel>(gpt_config(config), weight_lookup(weights), parse_weight_dtype(dtype));
}

std::unique_ptr<KvCache> make_cache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size,
                                    int64_t num_blocks, const std::string& dtype) {
  return std::make_unique<KvCache>(n_layer, n_head, head_dim, block_size, num_blocks, parse_kv_dtype(dtype));
}

}  // namespace

void bind_decoder(py::module_& m) {
  bind_kv_cache<KvCache>(m, "KvCache", &make_cache);
  bind_gpt_model<GptModel, KvCache>(m, "GptModel", "KvCache", &make_model);
}

}  // namespace aigc::python
