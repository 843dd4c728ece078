// pybind11 face of the native continuous batch (runtime/generation.h), over a GptModel and
// its KvCache or an LstmModel and its LstmState: requests in as
// Python numbers and lists, converted; step() runs with the GIL released and returns
// (ids, tokens, states, logprobs, errors): lists of the rows that produced a token (or
// failed), in batch order; logprobs {id: (logprob, top ids, top logprobs)} for the rows
// that asked for them, errors {id: message} for the failed rows, each None when empty.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "runtime/generation.h"

namespace py = pybind11;

namespace aigc::python {
namespace {

void add(Generation& g, int64_t id, std::vector<int64_t> prompt, uint64_t seed, float temperature, int32_t top_k,
         float top_p, float min_p, float repetition_penalty, float presence_penalty, float frequency_penalty,
         std::vector<int64_t> bias_ids, std::vector<float> bias_values, int64_t eos_id, int64_t max_new_tokens,
         int num_logprobs, std::vector<int64_t> first_bias_ids, std::vector<float> first_bias_values) {
  GenerationRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.sampling.seed = seed;
  r.sampling.temperature = temperature;
  r.sampling.top_k = top_k;
  r.sampling.top_p = top_p;
  r.sampling.min_p = min_p;
  r.sampling.repetition_penalty = repetition_penalty;
  r.sampling.presence_penalty = presence_penalty;
  r.sampling.frequency_penalty = frequency_penalty;
  r.sampling.bias_ids = std::move(bias_ids);
  r.sampling.bias_values = std::move(bias_values);
  r.sampling.first_bias_ids = std::move(first_bias_ids);
  r.sampling.first_bias_values = std::move(first_bias_values);
  r.eos_id = eos_id;
  r.max_new_tokens = max_new_tokens;
  r.num_logprobs = num_logprobs;
  g.add(std::move(r));
}

py::list int_list(const std::vector<int64_t>& values, size_t first, size_t count) {
  py::list out(count);
  for (size_t i = 0; i < count; ++i) PyList_SET_ITEM(out.ptr(), i, PyLong_FromLongLong(values[first + i]));
  return out;
}

py::tuple step(Generation& g) {
  const StepResult* r;
  {
    py::gil_scoped_release release;
    r = &g.step();
  }
  const size_t n = r->ids.size();
  py::list states(n);
  py::object logprobs = py::none(), errors = py::none();
  for (size_t i = 0; i < n; ++i) {
    PyList_SET_ITEM(states.ptr(), i, PyLong_FromLong(static_cast<long>(r->states[i])));
    if (r->num_top[i] >= 0) {
      if (logprobs.is_none()) logprobs = py::dict();
      py::list top_logprobs(r->num_top[i]);
      for (int j = 0; j < r->num_top[i]; ++j) {
        PyList_SET_ITEM(top_logprobs.ptr(), j, PyFloat_FromDouble(r->top_logprobs[i * r->width + j]));
      }
      logprobs[py::int_(r->ids[i])] =
          py::make_tuple(r->logprobs[i], int_list(r->top_ids, i * r->width, r->num_top[i]), top_logprobs);
    }
    if (r->states[i] == RowState::kError) {
      if (errors.is_none()) errors = py::dict();
      errors[py::int_(r->ids[i])] = r->errors[i];
    }
  }
  return py::make_tuple(int_list(r->ids, 0, n), int_list(r->tokens, 0, n), states, logprobs, errors);
}

}  // namespace

void bind_generation(py::module_& m) {
  py::class_<Generation>(m, "Generation")
      .def(py::init<GptModel&, KvCache&, int64_t, int64_t>(), py::arg("model"), py::arg("cache"),
           py::arg("max_batch_size"), py::arg("max_step_tokens"), py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def(py::init<LstmModel&, LstmState&, int64_t, int64_t>(), py::arg("model"), py::arg("cache"),
           py::arg("max_batch_size"), py::arg("max_step_tokens"), py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def("add", &add, py::arg("id"), py::arg("prompt"), py::arg("seed"), py::arg("temperature"), py::arg("top_k"),
           py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"), py::arg("presence_penalty"),
           py::arg("frequency_penalty"), py::arg("bias_ids"), py::arg("bias_values"), py::arg("eos_id"),
           py::arg("max_new_tokens"), py::arg("num_logprobs"), py::arg("first_bias_ids") = std::vector<int64_t>{},
           py::arg("first_bias_values") = std::vector<float>{})
      .def("remove", &Generation::remove, py::arg("id"))
      .def("rewind", &Generation::rewind, py::arg("id"), py::arg("generated"))
      .def("step", &step)
      .def_property_readonly("num_waiting", &Generation::num_waiting)
      .def_property_readonly("num_running", &Generation::num_running)
      .def_property_readonly("preemptions", &Generation::preemptions)
      .def_property_readonly("free_blocks", &Generation::free_blocks)
      .def_property_readonly("num_blocks", &Generation::num_blocks)
      .def("waiting_ids", &Generation::waiting_ids)
      .def("running_ids", &Generation::running_ids);
}

}  // namespace aigc::python
