// pybind11 binding of the sampler (aigc/sampling.h): a Sampler is prepared once for a
// batch of rows — every per-row parameter checked, with messages that name the argument
// and the row, and copied, each row's history counted — and then samples step after step,
// each call checking only the logits, then adding each row's token to its history and
// moving its step on. No math. The Sampler owns its output arrays, which every call
// overwrites (at batch 1 a step's call costs mostly its fixed part: it converts one
// argument). The GIL is released around the kernel. A row the kernel cannot sample
// (aigc/sampling.h's RowStatus) keeps its history and step, and the call returns
// {row: message}; with every row sampled it returns the Sampler's one empty dict, so a
// step allocates nothing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "aigc/sampling.h"
#include "python/array_checks.h"
#include "runtime/thread_pool.h"

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

// Row r's message, from the status the kernel left, e.g. "logits: row 3 has +inf".
std::string row_message(int64_t r, const aigc::RowStatus& status) {
  using aigc::SampleStatus;
  const std::string token = " at token " + std::to_string(status.token) + " after logit_bias and penalties";
  std::string what;
  switch (status.code) {
    case SampleStatus::kOk: what = "was sampled"; break;
    case SampleStatus::kNaN: what = "has NaN"; break;
    case SampleStatus::kPosInf: what = "has +inf"; break;
    case SampleStatus::kAllNegInf: what = "is all -inf"; break;
    case SampleStatus::kAllBanned: what = "has every token at -inf after logit_bias"; break;
    case SampleStatus::kEditNaN: what = "has NaN" + token; break;
    case SampleStatus::kEditPosInf: what = "has +inf" + token; break;
  }
  return "logits: row " + std::to_string(r) + " " + what;
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
          py::array top_p,
          py::array min_p, py::array repetition_penalty, py::array presence_penalty, py::array frequency_penalty,
          py::object history, py::object history_offsets, py::object prompt_lens, py::object bias_ids,
          py::object bias_values, py::object bias_offsets, int num_logprobs, bool logprobs, bool overwrite_logits)
      : batch_(batch),
        vocab_(vocab),
        num_logprobs_(num_logprobs),
        logprobs_wanted_(logprobs),
        overwrite_logits_(overwrite_logits) {
    if (batch < 0) throw py::value_error("batch: expected >= 0, got " + std::to_string(batch));
    if (vocab < 1 || vocab > INT32_MAX) {
      throw py::value_error("logits: expected a vocab of 1 .. 2**31 - 1 tokens, got " + std::to_string(vocab));
    }
    const py::ssize_t b = batch;
    seeds_ = copied<uint64_t>(seeds, "seeds", "uint64", b);
    steps_ = copied<uint64_t>(steps, "steps", "uint64", b);
    temperature_ = copied<float>(temperature, "temperature", "float32", b);
    top_k_ = copied<int32_t>(top_k, "top_k", "int32", b);
    top_p_ = copied<float>(top_p, "top_p", "float32", b);
    min_p_ = copied<float>(min_p, "min_p", "float32", b);
    repetition_ = copied<float>(repetition_penalty, "repetition_penalty", "float32", b);
    presence_ = copied<float>(presence_penalty, "presence_penalty", "float32", b);
    frequency_ = copied<float>(frequency_penalty, "frequency_penalty", "float32", b);
    check_rows(temperature_.data(), b, "temperature", "a finite number >= 0 (0 = greedy)",
               [](float t) { return t >= 0.0f && std::isfinite(t); });
    check_rows(top_k_.data(), b, "top_k", ">= 0 (0 = off)", [](int32_t k) { return k >= 0; });
    check_rows(top_p_.data(), b, "top_p", "in (0, 1] (1 = off)", [](float x) { return x > 0.0f && x <= 1.0f; });
    check_rows(min_p_.data(), b, "min_p", "in [0, 1] (0 = off)", [](float x) { return x >= 0.0f && x <= 1.0f; });
    check_rows(repetition_.data(), b, "repetition_penalty", "a finite number > 0 (1 = off)",
               [](float x) { return x > 0.0f && std::isfinite(x); });
    check_rows(presence_.data(), b, "presence_penalty", "a finite number (0 = off)",
               [](float x) { return std::isfinite(x); });
    check_rows(frequency_.data(), b, "frequency_penalty", "a finite number (0 = off)",
               [](float x) { return std::isfinite(x); });
    count_histories(history, history_offsets, prompt_lens);

    if (bias_ids.is_none() && !(bias_values.is_none() && bias_offsets.is_none())) {
      throw py::value_error("logit_bias ids: expected C-contiguous int64 (m,) with the values and offsets, got None");
    }
    if (!bias_ids.is_none()) {
      const py::array ids = bias_ids.cast<py::array>();
      const int64_t* id = checked_data<int64_t>(ids, "logit_bias ids", "int64", {"m"}, {-1}, false);
      const py::ssize_t m = ids.shape(0);
      const float* value = checked_data<float>(required_array(bias_values, "logit_bias values",
                                                              "C-contiguous float32 (m,)"),
                                               "logit_bias values", "float32", {"m"}, {m}, false);
      const int64_t* offset = required_ids(bias_offsets, "logit_bias offsets", "batch + 1", b + 1);
      check_offsets(offset, b, m, "logit_bias offsets", "row");
      check_ids(id, m, vocab, "logit_bias ids");
      for (py::ssize_t j = 0; j < m; ++j) {
        if (std::isnan(value[j]) || value[j] == INFINITY) {
          throw py::value_error("logit_bias values: index " + std::to_string(j) + " is " + num(value[j]) +
                                ", expected a finite number or -inf (a ban)");
        }
      }
      bias_ids_.assign(id, id + m);
      bias_values_.assign(value, value + m);
      bias_offsets_.assign(offset, offset + b + 1);
    }
    if (num_logprobs < 0 || num_logprobs > aigc::kMaxLogprobs || num_logprobs > vocab) {
      throw py::value_error("num_logprobs: expected 0 .. " +
                            std::to_string(std::min<int64_t>(aigc::kMaxLogprobs, vocab)) + ", got " +
                            std::to_string(num_logprobs));
    }
    tokens_ = py::array_t<int64_t>(b);
    logprobs_ = py::array_t<float>(b);
    std::fill_n(logprobs_.mutable_data(), b, NAN);  // stays so when not wanted
    top_ids_ = py::array_t<int64_t>({b, py::ssize_t{num_logprobs}});
    top_logprobs_ = py::array_t<float>({b, py::ssize_t{num_logprobs}});
    status_.assign(b, aigc::RowStatus{aigc::SampleStatus::kOk, -1});
  }

  // (tokens int64 (batch,), logprobs float32 (batch,), top_ids int64 (batch, n),
  // top_logprobs float32 (batch, n), errors {}): the last call's results; the dict is the
  // one every call that samples every row returns.
  py::tuple outputs() const { return py::make_tuple(tokens_, logprobs_, top_ids_, top_logprobs_, no_errors_); }

  // {row: message} for the rows that failed, or the empty no_errors_.
  py::dict sample(py::array logits) {
    aigc::SampleParams p{};
    float* data = checked_data<float>(logits, "logits", "float32", {"batch", "vocab"}, {-1, -1}, overwrite_logits_);
    p.logits = data;
    p.scratch_logits = overwrite_logits_ ? data : nullptr;
    if (logits.shape(0) != batch_ || logits.shape(1) != vocab_) {
      throw py::value_error("logits: expected (" + std::to_string(batch_) + ", " + std::to_string(vocab_) +
                            "), the (batch, vocab) the sampler was prepared for, got " + describe(logits));
    }
    p.batch = batch_;
    p.vocab = vocab_;
    const py::ssize_t b = batch_;
    p.steps = steps_.data();
    p.seeds = seeds_.data();
    p.temperature = temperature_.data();
    p.top_k = top_k_.data();
    p.top_p = top_p_.data();
    p.min_p = min_p_.data();
    p.repetition_penalty = repetition_.data();
    p.presence_penalty = presence_.data();
    p.frequency_penalty = frequency_.data();
    if (!histories_.empty()) p.history = histories_.data();
    if (!bias_ids_.empty()) {
      p.bias_ids = bias_ids_.data();
      p.bias_values = bias_values_.data();
      p.bias_offsets = bias_offsets_.data();
    }
    p.num_logprobs = num_logprobs_;
    p.tokens = tokens_.mutable_data();
    p.logprobs = logprobs_wanted_ ? logprobs_.mutable_data() : nullptr;
    p.top_ids = top_ids_.mutable_data();
    p.top_logprobs = top_logprobs_.mutable_data();
    p.status = status_.data();
    // A caller may have filled the dict it was handed: it goes back empty.
    if (PyDict_GET_SIZE(no_errors_.ptr()) != 0) PyDict_Clear(no_errors_.ptr());
    if (b == 0) return no_errors_;
    // Two threads in one Sampler would race on its histories (a vector insert each): refused.
    if (busy_.exchange(true)) throw std::runtime_error("Sampler: already sampling in another thread");
    bool all_sampled = true;
    {
      py::gil_scoped_release release;
      try {
        aigc::sample_cpu(p);
      } catch (...) {
        busy_ = false;
        throw;
      }
      // A failed row keeps its history and step: its next call draws what a fresh
      // sampler at that step would.
      for (int64_t r = 0; r < batch_; ++r) {
        if (status_[r].code != aigc::SampleStatus::kOk) {
          all_sampled = false;
          continue;
        }
        if (!histories_.empty()) histories_[r].add_generated(static_cast<int32_t>(p.tokens[r]));
        ++steps_[r];
      }
      busy_ = false;
    }
    if (all_sampled) return no_errors_;
    py::dict errors;
    for (int64_t r = 0; r < batch_; ++r) {
      if (status_[r].code != aigc::SampleStatus::kOk) errors[py::int_(r)] = row_message(r, status_[r]);
    }
    return errors;
  }

 private:
  // Each row's history (prompt then generated tokens, rows concatenated, CSR offsets; the
  // first prompt_lens[r] of row r prompt, all of them generated when prompt_lens is None),
  // checked and counted into histories_.
  void count_histories(const py::object& history, const py::object& history_offsets, const py::object& prompt_lens) {
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
    histories_.resize(b);
    py::gil_scoped_release release;
    aigc::parallel_for(b, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        histories_[r] = aigc::TokenCounts(ids + offsets[r], offsets[r + 1] - offsets[r],
                                          prompt != nullptr ? prompt[r] : 0, vocab_);
      }
    });
  }

  int64_t batch_, vocab_;
  int num_logprobs_;
  bool logprobs_wanted_;
  bool overwrite_logits_;  // the logits of every call are scratch
  std::vector<uint64_t> seeds_, steps_;  // steps_: each row's next step
  std::vector<float> temperature_, top_p_, min_p_, repetition_, presence_, frequency_;
  std::vector<int32_t> top_k_;
  std::vector<aigc::TokenCounts> histories_;  // (batch,) or empty: no history given
  std::vector<int64_t> bias_ids_, bias_offsets_;  // empty: no bias
  std::vector<float> bias_values_;
  py::array_t<int64_t> tokens_, top_ids_;
  py::array_t<float> logprobs_, top_logprobs_;
  std::vector<aigc::RowStatus> status_;  // (batch,) the last call's
  py::dict no_errors_;                   // returned, empty, by every call that samples every row
  std::atomic<bool> busy_{false};
};

}  // namespace

void bind_sampling(py::module_& m) {
  m.attr("max_logprobs") = aigc::kMaxLogprobs;
  py::class_<Sampler>(m, "Sampler")
      .def(py::init<int64_t, int64_t, py::array, py::array, py::array, py::array, py::array, py::array, py::array,
                    py::array, py::array, py::object, py::object, py::object, py::object, py::object, py::object, int,
                    bool, bool>(),
           py::arg("batch"), py::arg("vocab"), py::arg("seeds"), py::arg("steps"), py::arg("temperature"),
           py::arg("top_k"),
           py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"), py::arg("presence_penalty"),
           py::arg("frequency_penalty"), py::arg("history"), py::arg("history_offsets"), py::arg("prompt_lens"),
           py::arg("bias_ids"), py::arg("bias_values"), py::arg("bias_offsets"), py::arg("num_logprobs"),
           py::arg("logprobs"), py::arg("overwrite_logits"))
      .def_property_readonly("outputs", &Sampler::outputs)
      .def("sample", &Sampler::sample, py::arg("logits"));
}
