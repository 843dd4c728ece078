// pybind11 binding of the sampler: every per-row parameter of ops.Sampler is checked here,
// with messages that name the argument and the row, and handed to the runtime's
// FixedBatchSampler (runtime/sampler.h), which keeps the rows' state (params, histories,
// steps, seeds, bias) and samples step after step; each call checks only the logits. The
// binding keeps the output arrays, which every call overwrites (at batch 1 a step's call
// costs mostly its fixed part: it converts one argument). The GIL is released around the
// sampling. A row the kernel cannot sample returns in {row: message}; with every row
// sampled a call returns the binding's one empty dict, so a step allocates nothing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "aigc/sampling.h"
#include "python/array_checks.h"
#include "python/device.h"
#include "runtime/sampler.h"

namespace py = pybind11;
using aigc::python::check_offsets;
using aigc::python::checked_data;
using aigc::python::describe;
using aigc::python::required_array;

namespace {

std::string num(double x) {
  std::string s = py::str(py::float_(x));
  return s;
}

template <typename T, typename Ok>
void check_rows(const T* values, int64_t n, const char* name, const char* expected, Ok ok) {
  for (int64_t r = 0; r < n; ++r) {
    if (!ok(values[r])) {
      throw py::value_error(std::string(name) + ": row " + std::to_string(r) + " is " +
                            num(static_cast<double>(values[r])) + ", expected " + expected);
    }
  }
}

void check_ids(const int64_t* ids, int64_t n, int64_t vocab, const char* name) {
  for (int64_t j = 0; j < n; ++j) {
    if (ids[j] < 0 || ids[j] >= vocab) {
      throw py::value_error(std::string(name) + ": id " + std::to_string(ids[j]) + " at index " + std::to_string(j) +
                            " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
}

// A required int64 (n,) array that the signature lets be None.
const int64_t* required_ids(const py::object& a, const char* name, const char* dim, py::ssize_t n) {
  const std::string expected = std::string("C-contiguous int64 (") + dim + ",)";
  return checked_data<int64_t>(required_array(a, name, expected.c_str()), name, "int64", {dim}, {n}, false);
}

// A checked (n,) array, copied.
template <typename T>
std::vector<T> copied(const py::array& a, const char* name, const char* dtype, py::ssize_t n) {
  const T* data = checked_data<T>(a, name, dtype, {"batch"}, {n}, false);
  return std::vector<T>(data, data + n);
}

class Sampler {
 public:
  Sampler(int64_t batch, int64_t vocab, py::array seeds, py::array steps, py::array temperature, py::array top_k,
          py::array top_p, py::array min_p, py::array repetition_penalty, py::array presence_penalty,
          py::array frequency_penalty, py::object history, py::object history_offsets, py::object prompt_lens,
          py::object bias_ids, py::object bias_values, py::object bias_offsets, int num_logprobs, bool logprobs,
          bool overwrite_logits, const std::string& device)
      : batch_(batch), vocab_(vocab), overwrite_logits_(overwrite_logits) {
    const bool cuda = aigc::python::on_cuda(device);
    if (batch < 0) throw py::value_error("batch: expected >= 0, got " + std::to_string(batch));
    if (vocab < 1 || vocab > INT32_MAX) {
      throw py::value_error("logits: expected a vocab of 1 .. 2**31 - 1 tokens, got " + std::to_string(vocab));
    }
    const py::ssize_t b = batch;
    const auto seed = copied<uint64_t>(seeds, "seeds", "uint64", b);
    const auto step = copied<uint64_t>(steps, "steps", "uint64", b);
    const auto temperature_ = copied<float>(temperature, "temperature", "float32", b);
    const auto top_k_ = copied<int32_t>(top_k, "top_k", "int32", b);
    const auto top_p_ = copied<float>(top_p, "top_p", "float32", b);
    const auto min_p_ = copied<float>(min_p, "min_p", "float32", b);
    const auto repetition = copied<float>(repetition_penalty, "repetition_penalty", "float32", b);
    const auto presence = copied<float>(presence_penalty, "presence_penalty", "float32", b);
    const auto frequency = copied<float>(frequency_penalty, "frequency_penalty", "float32", b);
    check_rows(temperature_.data(), b, "temperature", "a finite number >= 0 (0 = greedy)",
               [](float t) { return t >= 0.0f && std::isfinite(t); });
    check_rows(top_k_.data(), b, "top_k", ">= 0 (0 = off)", [](int32_t k) { return k >= 0; });
    check_rows(top_p_.data(), b, "top_p", "in (0, 1] (1 = off)", [](float x) { return x > 0.0f && x <= 1.0f; });
    check_rows(min_p_.data(), b, "min_p", "in [0, 1] (0 = off)", [](float x) { return x >= 0.0f && x <= 1.0f; });
    check_rows(repetition.data(), b, "repetition_penalty", "a finite number > 0 (1 = off)",
               [](float x) { return x > 0.0f && std::isfinite(x); });
    check_rows(presence.data(), b, "presence_penalty", "a finite number (0 = off)",
               [](float x) { return std::isfinite(x); });
    check_rows(frequency.data(), b, "frequency_penalty", "a finite number (0 = off)",
               [](float x) { return std::isfinite(x); });
    std::vector<aigc::SamplingRow> rows(b);
    for (py::ssize_t r = 0; r < b; ++r) {
      aigc::SamplingRow& row = rows[r];
      row.seed = seed[r];
      row.step = step[r];
      row.temperature = temperature_[r];
      row.top_k = top_k_[r];
      row.top_p = top_p_[r];
      row.min_p = min_p_[r];
      row.repetition_penalty = repetition[r];
      row.presence_penalty = presence[r];
      row.frequency_penalty = frequency[r];
    }
    const int64_t *history_ids = nullptr, *offsets = nullptr, *prompt = nullptr;
    checked_histories(history, history_offsets, prompt_lens, &history_ids, &offsets, &prompt);
    add_bias(bias_ids, bias_values, bias_offsets, rows);
    if (num_logprobs < 0 || num_logprobs > aigc::kMaxLogprobs || num_logprobs > vocab) {
      throw py::value_error("num_logprobs: expected 0 .. " +
                            std::to_string(std::min<int64_t>(aigc::kMaxLogprobs, vocab)) + ", got " +
                            std::to_string(num_logprobs));
    }
    {
      py::gil_scoped_release release;  // the histories are counted over the thread pool
      sampler_ = std::make_unique<aigc::FixedBatchSampler>(vocab, std::move(rows), num_logprobs, logprobs,
                                                           history_ids, offsets, prompt, cuda);
    }
    tokens_ = py::array_t<int64_t>(b);
    logprobs_ = py::array_t<float>(b);
    std::fill_n(logprobs_.mutable_data(), b, NAN);  // stays so when not wanted
    top_ids_ = py::array_t<int64_t>({b, py::ssize_t{num_logprobs}});
    top_logprobs_ = py::array_t<float>({b, py::ssize_t{num_logprobs}});
  }

  // (tokens int64 (batch,), logprobs float32 (batch,), top_ids int64 (batch, n),
  // top_logprobs float32 (batch, n), errors {}): the last call's results; the dict is the
  // one every call that samples every row returns.
  py::tuple outputs() const { return py::make_tuple(tokens_, logprobs_, top_ids_, top_logprobs_, no_errors_); }

  // {row: message} for the rows that failed, or the empty no_errors_.
  py::dict sample(py::array logits) {
    float* data = checked_data<float>(logits, "logits", "float32", {"batch", "vocab"}, {-1, -1}, overwrite_logits_);
    if (logits.shape(0) != batch_ || logits.shape(1) != vocab_) {
      throw py::value_error("logits: expected (" + std::to_string(batch_) + ", " + std::to_string(vocab_) +
                            "), the (batch, vocab) the sampler was prepared for, got " + describe(logits));
    }
    // A caller may have filled the dict it was handed: it goes back empty.
    if (PyDict_GET_SIZE(no_errors_.ptr()) != 0) PyDict_Clear(no_errors_.ptr());
    if (batch_ == 0) return no_errors_;
    aigc::SampleOutputs out{tokens_.mutable_data(), logprobs_.mutable_data(), top_ids_.mutable_data(),
                            top_logprobs_.mutable_data(), nullptr};
    bool all_sampled;
    {
      py::gil_scoped_release release;
      all_sampled = sampler_->sample(data, overwrite_logits_, out);
    }
    if (all_sampled) return no_errors_;
    py::dict errors;
    const aigc::RowStatus* status = sampler_->status();
    for (int64_t r = 0; r < batch_; ++r) {
      if (status[r].code != aigc::SampleStatus::kOk) errors[py::int_(r)] = aigc::row_message(r, status[r]);
    }
    return errors;
  }

 private:
  // Each row's history (prompt then generated tokens, rows concatenated, CSR offsets; the
  // first prompt_lens[r] of row r prompt, all of them generated when prompt_lens is None),
  // checked; null pointers when none is given.
  void checked_histories(const py::object& history, const py::object& history_offsets, const py::object& prompt_lens,
                         const int64_t** ids_out, const int64_t** offsets_out, const int64_t** prompt_out) const {
    if (history.is_none() != history_offsets.is_none()) {
      throw py::value_error("history and history_offsets: give both or neither");
    }
    if (history.is_none()) {
      if (!prompt_lens.is_none()) throw py::value_error("prompt_lens: given without history");
      return;
    }
    const py::ssize_t b = batch_;
    const py::array h = history.cast<py::array>();
    const int64_t* ids = checked_data<int64_t>(h, "history", "int64", {"total"}, {-1}, false);
    const int64_t* offsets = required_ids(history_offsets, "history_offsets", "batch + 1", b + 1);
    check_offsets(offsets, b, h.shape(0), "history_offsets", "row");
    check_ids(ids, h.shape(0), vocab_, "history");
    const int64_t* prompt = prompt_lens.is_none() ? nullptr : required_ids(prompt_lens, "prompt_lens", "batch", b);
    for (int64_t r = 0; r < b; ++r) {
      const int64_t length = offsets[r + 1] - offsets[r], in_prompt = prompt != nullptr ? prompt[r] : 0;
      if (in_prompt < 0 || in_prompt > length) {
        throw py::value_error("prompt_lens: row " + std::to_string(r) + " is " + std::to_string(in_prompt) +
                              ", expected 0 .. " + std::to_string(length) + " (its history length)");
      }
    }
    *ids_out = ids;
    *offsets_out = offsets;
    *prompt_out = prompt;
  }

  // The logit bias (ids, values, CSR offsets over the rows), checked, into each row.
  void add_bias(const py::object& bias_ids, const py::object& bias_values, const py::object& bias_offsets,
                std::vector<aigc::SamplingRow>& rows) const {
    if (bias_ids.is_none() && !(bias_values.is_none() && bias_offsets.is_none())) {
      throw py::value_error("logit_bias ids: expected C-contiguous int64 (m,) with the values and offsets, got None");
    }
    if (bias_ids.is_none()) return;
    const py::ssize_t b = batch_;
    const py::array ids = bias_ids.cast<py::array>();
    const int64_t* id = checked_data<int64_t>(ids, "logit_bias ids", "int64", {"m"}, {-1}, false);
    const py::ssize_t m = ids.shape(0);
    const float* value = checked_data<float>(required_array(bias_values, "logit_bias values",
                                                            "C-contiguous float32 (m,)"),
                                             "logit_bias values", "float32", {"m"}, {m}, false);
    const int64_t* offset = required_ids(bias_offsets, "logit_bias offsets", "batch + 1", b + 1);
    check_offsets(offset, b, m, "logit_bias offsets", "row");
    check_ids(id, m, vocab_, "logit_bias ids");
    for (py::ssize_t j = 0; j < m; ++j) {
      if (std::isnan(value[j]) || value[j] == INFINITY) {
        throw py::value_error("logit_bias values: index " + std::to_string(j) + " is " + num(value[j]) +
                              ", expected a finite number or -inf (a ban)");
      }
    }
    for (py::ssize_t r = 0; r < b; ++r) {
      rows[r].bias_ids.assign(id + offset[r], id + offset[r + 1]);
      rows[r].bias_values.assign(value + offset[r], value + offset[r + 1]);
    }
  }

  int64_t batch_, vocab_;
  bool overwrite_logits_;  // the logits of every call are scratch
  std::unique_ptr<aigc::FixedBatchSampler> sampler_;
  py::array_t<int64_t> tokens_, top_ids_;
  py::array_t<float> logprobs_, top_logprobs_;
  py::dict no_errors_;  // returned, empty, by every call that samples every row
};

}  // namespace

void bind_sampling(py::module_& m) {
  m.attr("max_logprobs") = aigc::kMaxLogprobs;
  py::class_<Sampler>(m, "Sampler")
      .def(py::init<int64_t, int64_t, py::array, py::array, py::array, py::array, py::array, py::array, py::array,
                    py::array, py::array, py::object, py::object, py::object, py::object, py::object, py::object, int,
                    bool, bool, const std::string&>(),
           py::arg("batch"), py::arg("vocab"), py::arg("seeds"), py::arg("steps"), py::arg("temperature"),
           py::arg("top_k"),
           py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"), py::arg("presence_penalty"),
           py::arg("frequency_penalty"), py::arg("history"), py::arg("history_offsets"), py::arg("prompt_lens"),
           py::arg("bias_ids"), py::arg("bias_values"), py::arg("bias_offsets"), py::arg("num_logprobs"),
           py::arg("logprobs"), py::arg("overwrite_logits"), py::arg("device") = "cpu")
      .def_property_readonly("outputs", &Sampler::outputs)
      .def("sample", &Sampler::sample, py::arg("logits"));
}
