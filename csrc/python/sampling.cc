// pybind11 binding of the sampler (aigc/sampling.h): array checks and the validation of
// every per-row parameter, with messages that name the argument and the row. No math.
// Outputs are allocated by the caller (aigc_engine/ops.py); the GIL is released around
// the kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "aigc/sampling.h"
#include "python/array_checks.h"

namespace py = pybind11;
using aigc::python::checked_data;

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

// CSR offsets (batch + 1,) into an array of `total`: start at 0, never decrease, end at total.
void check_offsets(const int64_t* offsets, int64_t batch, int64_t total, const char* name) {
  if (offsets[0] != 0 || offsets[batch] != total) {
    throw py::value_error(std::string(name) + ": expected to start at 0 and end at " + std::to_string(total) +
                          ", got " + std::to_string(offsets[0]) + " .. " + std::to_string(offsets[batch]));
  }
  for (int64_t r = 0; r < batch; ++r) {
    if (offsets[r + 1] < offsets[r]) {
      throw py::value_error(std::string(name) + ": not monotone at row " + std::to_string(r) + " (" +
                            std::to_string(offsets[r]) + " then " + std::to_string(offsets[r + 1]) + ")");
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

const int64_t* optional_ids(const py::object& a, const char* name, py::ssize_t n) {
  if (a.is_none()) return nullptr;
  return checked_data<int64_t>(a.cast<py::array>(), name, "int64", {"n"}, {n}, false);
}

void sample(py::array logits, py::array seeds, py::array steps, py::array temperature, py::array top_k,
            py::array top_p, py::array min_p, py::array repetition_penalty, py::array presence_penalty,
            py::array frequency_penalty, py::object history, py::object history_offsets, py::object prompt_lens,
            py::object bias_ids, py::object bias_values, py::object bias_offsets, int num_logprobs,
            py::array tokens, py::array logprobs, py::array top_ids, py::array top_logprobs) {
  aigc::SampleParams p{};
  p.logits = checked_data<float>(logits, "logits", "float32", {"batch", "vocab"}, {-1, -1}, false);
  p.batch = logits.shape(0);
  p.vocab = logits.shape(1);
  const py::ssize_t b = p.batch;
  if (p.vocab < 1 || p.vocab > INT32_MAX) {
    throw py::value_error("logits: expected a vocab of 1 .. 2**31 - 1 tokens, got " + std::to_string(p.vocab));
  }
  p.seeds = checked_data<uint64_t>(seeds, "seeds", "uint64", {"batch"}, {b}, false);
  p.steps = checked_data<uint64_t>(steps, "steps", "uint64", {"batch"}, {b}, false);
  p.temperature = checked_data<float>(temperature, "temperature", "float32", {"batch"}, {b}, false);
  p.top_k = checked_data<int32_t>(top_k, "top_k", "int32", {"batch"}, {b}, false);
  p.top_p = checked_data<float>(top_p, "top_p", "float32", {"batch"}, {b}, false);
  p.min_p = checked_data<float>(min_p, "min_p", "float32", {"batch"}, {b}, false);
  p.repetition_penalty =
      checked_data<float>(repetition_penalty, "repetition_penalty", "float32", {"batch"}, {b}, false);
  p.presence_penalty = checked_data<float>(presence_penalty, "presence_penalty", "float32", {"batch"}, {b}, false);
  p.frequency_penalty =
      checked_data<float>(frequency_penalty, "frequency_penalty", "float32", {"batch"}, {b}, false);
  check_rows(p.temperature, b, "temperature", "a finite number >= 0 (0 = greedy)",
             [](float t) { return t >= 0.0f && std::isfinite(t); });
  check_rows(p.top_k, b, "top_k", ">= 0 (0 = off)", [](int32_t k) { return k >= 0; });
  check_rows(p.top_p, b, "top_p", "in (0, 1] (1 = off)", [](float x) { return x > 0.0f && x <= 1.0f; });
  check_rows(p.min_p, b, "min_p", "in [0, 1] (0 = off)", [](float x) { return x >= 0.0f && x <= 1.0f; });
  check_rows(p.repetition_penalty, b, "repetition_penalty", "a finite number > 0 (1 = off)",
             [](float x) { return x > 0.0f && std::isfinite(x); });
  check_rows(p.presence_penalty, b, "presence_penalty", "a finite number (0 = off)",
             [](float x) { return std::isfinite(x); });
  check_rows(p.frequency_penalty, b, "frequency_penalty", "a finite number (0 = off)",
             [](float x) { return std::isfinite(x); });

  if (history.is_none() != history_offsets.is_none()) {
    throw py::value_error("history and history_offsets: give both or neither");
  }
  if (!history.is_none()) {
    const py::array h = history.cast<py::array>();
    p.history = checked_data<int64_t>(h, "history", "int64", {"total"}, {-1}, false);
    p.history_offsets = optional_ids(history_offsets, "history_offsets", b + 1);
    check_offsets(p.history_offsets, b, h.shape(0), "history_offsets");
    check_ids(p.history, h.shape(0), p.vocab, "history");
    p.prompt_lens = optional_ids(prompt_lens, "prompt_lens", b);
    for (int64_t r = 0; p.prompt_lens && r < b; ++r) {
      const int64_t length = p.history_offsets[r + 1] - p.history_offsets[r];
      if (p.prompt_lens[r] < 0 || p.prompt_lens[r] > length) {
        throw py::value_error("prompt_lens: row " + std::to_string(r) + " is " + std::to_string(p.prompt_lens[r]) +
                              ", expected 0 .. " + std::to_string(length) + " (its history length)");
      }
    }
  } else if (!prompt_lens.is_none()) {
    throw py::value_error("prompt_lens: given without history");
  }

  if (!bias_ids.is_none()) {
    const py::array ids = bias_ids.cast<py::array>();
    p.bias_ids = checked_data<int64_t>(ids, "logit_bias ids", "int64", {"m"}, {-1}, false);
    const py::ssize_t m = ids.shape(0);
    p.bias_values = checked_data<float>(bias_values.cast<py::array>(), "logit_bias values", "float32", {"m"}, {m},
                                        false);
    p.bias_offsets = optional_ids(bias_offsets, "logit_bias offsets", b + 1);
    check_offsets(p.bias_offsets, b, m, "logit_bias offsets");
    check_ids(p.bias_ids, m, p.vocab, "logit_bias ids");
    for (py::ssize_t j = 0; j < m; ++j) {
      if (std::isnan(p.bias_values[j]) || p.bias_values[j] == INFINITY) {
        throw py::value_error("logit_bias values: index " + std::to_string(j) + " is " + num(p.bias_values[j]) +
                              ", expected a finite number or -inf (a ban)");
      }
    }
  }

  if (num_logprobs < 0 || num_logprobs > aigc::kMaxLogprobs || num_logprobs > p.vocab) {
    throw py::value_error("num_logprobs: expected 0 .. " +
                          std::to_string(std::min<int64_t>(aigc::kMaxLogprobs, p.vocab)) + ", got " +
                          std::to_string(num_logprobs));
  }
  p.num_logprobs = num_logprobs;
  p.tokens = checked_data<int64_t>(tokens, "tokens", "int64", {"batch"}, {b}, true);
  p.logprobs = checked_data<float>(logprobs, "logprobs", "float32", {"batch"}, {b}, true);
  p.top_ids = checked_data<int64_t>(top_ids, "top_ids", "int64", {"batch", "n"}, {b, num_logprobs}, true);
  p.top_logprobs =
      checked_data<float>(top_logprobs, "top_logprobs", "float32", {"batch", "n"}, {b, num_logprobs}, true);
  if (b == 0) return;
  py::gil_scoped_release release;
  aigc::sample_cpu(p);
}

}  // namespace

void bind_sampling(py::module_& m) {
  m.attr("max_logprobs") = aigc::kMaxLogprobs;
  m.def("sample", &sample, py::arg("logits"), py::arg("seeds"), py::arg("steps"), py::arg("temperature"),
        py::arg("top_k"), py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"),
        py::arg("presence_penalty"), py::arg("frequency_penalty"), py::arg("history"), py::arg("history_offsets"),
        py::arg("prompt_lens"), py::arg("bias_ids"), py::arg("bias_values"), py::arg("bias_offsets"),
        py::arg("num_logprobs"), py::arg("tokens"), py::arg("logprobs"), py::arg("top_ids"),
        py::arg("top_logprobs"));
}
