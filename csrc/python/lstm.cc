// pybind11 face of the native LSTM (runtime/lstm.h): the model is built from a dict of
// float32 numpy weights keyed by torch name and a config dict (vocab_size, n_embd,
// hidden_size, n_layer, context); LstmState holds the sequences' h and c, one slot each;
// forward takes the packed step as numpy arrays, as GptModel.forward does, and runs with
// the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "python/array_checks.h"
#include "runtime/lstm.h"

namespace py = pybind11;

namespace aigc::python {

// python/linear.cc, python/decoder.cc
WeightDtype parse_weight_dtype(const std::string& name);
int64_t config_int(const py::dict& config, const char* key);
WeightLookup weight_lookup(const py::dict& weights);
StepBatch step_batch(const py::array& tokens, const py::array& positions, const py::array& cu_seqlens,
                     const py::array& context_lens, const py::array& is_prompt, const py::array& block_table);

namespace {

std::unique_ptr<LstmModel> make_model(const py::dict& config, const py::dict& weights, const std::string& dtype) {
  LstmConfig c{};
  c.vocab_size = config_int(config, "vocab_size");
  c.n_embd = config_int(config, "n_embd");
  c.hidden_size = config_int(config, "hidden_size");
  c.n_layer = config_int(config, "n_layer");
  c.context = config_int(config, "context");
  return std::make_unique<LstmModel>(c, weight_lookup(weights), parse_weight_dtype(dtype));
}

void forward(LstmModel& model, const py::array& tokens, const py::array& positions, const py::array& cu_seqlens,
             const py::array& context_lens, const py::array& is_prompt, const py::array& block_table,
             LstmState* state, const py::array& logits, bool every_token) {
  // A pointer: None reaches here as null (a reference would be pybind's RuntimeError).
  if (state == nullptr) throw py::type_error("state: expected an LstmState, got None");
  const StepBatch b = step_batch(tokens, positions, cu_seqlens, context_lens, is_prompt, block_table);
  float* out = checked_data<float>(logits, "logits", "float32", {every_token ? "num_tokens" : "num_seqs", "vocab"},
                                   {every_token ? b.num_tokens : b.num_seqs, model.vocab_size()}, true);
  py::gil_scoped_release release;
  model.forward(b, *state, out, every_token);
}

}  // namespace

void bind_lstm(py::module_& m) {
  py::class_<LstmState>(m, "LstmState")
      .def(py::init<int64_t, int64_t, int64_t, int64_t>(), py::arg("n_layer"), py::arg("hidden_size"),
           py::arg("context"), py::arg("num_slots"))
      .def_property_readonly("nbytes",
                             [](const LstmState& s) { return 2 * s.n_layer() * s.num_blocks() * s.hidden_size() * 4; })
      .def_property_readonly("block_size", &LstmState::block_size)
      .def_property_readonly("num_blocks", &LstmState::num_blocks)
      .def_property_readonly("free_blocks", &LstmState::free_blocks)
      .def("allocate", &LstmState::allocate, py::arg("count"))
      .def("release", &LstmState::release, py::arg("blocks"));

  py::class_<LstmModel, std::unique_ptr<LstmModel>>(m, "LstmModel")
      .def(py::init(&make_model), py::arg("config"), py::arg("weights"), py::arg("dtype") = "float32")
      .def_property_readonly("weight_bytes", &LstmModel::weight_bytes)
      .def("forward", &forward, py::arg("tokens"), py::arg("positions"), py::arg("cu_seqlens"),
           py::arg("context_lens"), py::arg("is_prompt"), py::arg("block_table"), py::arg("state"),
           py::arg("logits"), py::arg("every_token") = false);
}

}  // namespace aigc::python
