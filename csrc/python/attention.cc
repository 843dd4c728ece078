// pybind11 bindings of the attention kernels (aigc/attention.h): array checks and the
// validation of sequence lengths, block ids and context lengths — everything the kernels
// index with unchecked. No math. Outputs are allocated by the caller (aigc_engine/ops.py);
// the GIL is released around the kernels. An empty batch is a valid call that computes
// nothing (the decode split divides by the batch). device="cuda" runs the CUDA kernels on
// copies of the arrays (cuda/attention_*.cu) after the same checks.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "aigc/attention.h"
#include "aigc/checks.h"
#include "python/array_checks.h"
#include "python/device.h"

namespace py = pybind11;
using aigc::python::check_offsets;
using aigc::python::checked_data;

namespace {

// K or V: float32, or uint16 holding bf16 bits; returns whether it is bf16.
bool kv_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return false;
  if (a.dtype().is(py::dtype::of<uint16_t>())) return true;
  throw py::value_error(std::string(name) + ": expected float32 or uint16 (bf16 bits), got " +
                        aigc::python::describe(a));
}

template <typename T>
const void* kv_data(const py::array& a, const char* name, const std::vector<const char*>& dims,
                    const std::vector<py::ssize_t>& shape) {
  return checked_data<T>(a, name, std::is_same<T, float>::value ? "float32" : "uint16 (bf16)", dims, shape, false);
}

void check_heads(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  // n_heads 0 would make the group n_heads / n_kv_heads 0, which the kernels divide by.
  if (n_heads < 1) throw py::value_error("q: n_heads must be >= 1, got " + std::to_string(n_heads));
  if (n_kv_heads < 1 || n_heads % n_kv_heads != 0) {
    throw py::value_error("k: n_kv_heads (" + std::to_string(n_kv_heads) + ") must divide n_heads (" +
                          std::to_string(n_heads) + ")");
  }
  if (head_dim < 1 || head_dim > 512) {
    throw py::value_error("q: head_dim must be 1 .. 512, got " + std::to_string(head_dim));
  }
}

float checked_scale(double scale, int64_t head_dim) {
  if (std::isnan(scale)) return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (!std::isfinite(scale)) throw py::value_error("scale: expected a finite number, got " + std::to_string(scale));
  return static_cast<float>(scale);
}

aigc::AttentionPrefillParams prefill_params(py::array q, py::array k, py::array v, py::array cu_seqlens, double scale,
                                            py::array out) {
  aigc::AttentionPrefillParams p{};
  p.q = checked_data<float>(q, "q", "float32", {"tokens", "n_heads", "head_dim"}, {-1, -1, -1}, false);
  p.tokens = q.shape(0);
  p.n_heads = q.shape(1);
  p.head_dim = q.shape(2);
  p.kv_bf16 = kv_dtype(k, "k");
  if (kv_dtype(v, "v") != p.kv_bf16) throw py::value_error("v: expected the dtype of k, got " + aigc::python::describe(v));
  const std::vector<const char*> dims{"tokens", "n_kv_heads", "head_dim"};
  const std::vector<py::ssize_t> shape{p.tokens, -1, p.head_dim};
  p.k = p.kv_bf16 ? kv_data<uint16_t>(k, "k", dims, shape) : kv_data<float>(k, "k", dims, shape);
  p.n_kv_heads = k.shape(1);
  const std::vector<py::ssize_t> v_shape{p.tokens, p.n_kv_heads, p.head_dim};
  p.v = p.kv_bf16 ? kv_data<uint16_t>(v, "v", dims, v_shape) : kv_data<float>(v, "v", dims, v_shape);
  check_heads(p.n_heads, p.n_kv_heads, p.head_dim);
  p.q_row_stride = p.n_heads * p.head_dim;
  p.kv_row_stride = p.n_kv_heads * p.head_dim;
  p.cu_seqlens = checked_data<int32_t>(cu_seqlens, "cu_seqlens", "int32", {"n_seqs + 1"}, {-1}, false);
  if (cu_seqlens.shape(0) < 1) throw py::value_error("cu_seqlens: expected n_seqs + 1 >= 1 entries, got 0");
  p.n_seqs = cu_seqlens.shape(0) - 1;
  check_offsets(p.cu_seqlens, p.n_seqs, p.tokens, "cu_seqlens", "sequence", "tokens");
  p.scale = checked_scale(scale, p.head_dim);
  p.out = checked_data<float>(out, "out", "float32", {"tokens", "n_heads", "head_dim"},
                              {p.tokens, p.n_heads, p.head_dim}, true);
  return p;
}

void attention_prefill(py::array q, py::array k, py::array v, py::array cu_seqlens, double scale, py::array out,
                       const std::string& device) {
  const aigc::AttentionPrefillParams p = prefill_params(q, k, v, cu_seqlens, scale, out);
  const bool cuda = aigc::python::on_cuda(device);
  if (p.tokens == 0) return;
  py::gil_scoped_release release;
#ifdef AIGC_WITH_CUDA
  if (cuda) {
    aigc::attention_prefill_cuda(p);
    return;
  }
#endif
  (void)cuda;
  aigc::attention_prefill_cpu(p);
}

aigc::AttentionDecodeParams decode_params(py::array q, py::array k_cache, py::array v_cache, py::array block_table,
                                          py::array context_lens, double scale, py::array out) {
  aigc::AttentionDecodeParams p{};
  p.q = checked_data<float>(q, "q", "float32", {"batch", "n_heads", "head_dim"}, {-1, -1, -1}, false);
  p.batch = q.shape(0);
  p.n_heads = q.shape(1);
  p.head_dim = q.shape(2);
  p.kv_bf16 = kv_dtype(k_cache, "k_cache");
  if (kv_dtype(v_cache, "v_cache") != p.kv_bf16) {
    throw py::value_error("v_cache: expected the dtype of k_cache, got " + aigc::python::describe(v_cache));
  }
  const std::vector<const char*> dims{"num_blocks", "block_size", "n_kv_heads", "head_dim"};
  const std::vector<py::ssize_t> shape{-1, -1, -1, p.head_dim};
  p.k_cache = p.kv_bf16 ? kv_data<uint16_t>(k_cache, "k_cache", dims, shape) : kv_data<float>(k_cache, "k_cache", dims, shape);
  p.num_blocks = k_cache.shape(0);
  p.block_size = k_cache.shape(1);
  p.n_kv_heads = k_cache.shape(2);
  const std::vector<py::ssize_t> v_shape{p.num_blocks, p.block_size, p.n_kv_heads, p.head_dim};
  p.v_cache = p.kv_bf16 ? kv_data<uint16_t>(v_cache, "v_cache", dims, v_shape)
                        : kv_data<float>(v_cache, "v_cache", dims, v_shape);
  check_heads(p.n_heads, p.n_kv_heads, p.head_dim);
  if (p.block_size < 1) throw py::value_error("k_cache: block_size must be >= 1");
  p.block_table = checked_data<int32_t>(block_table, "block_table", "int32", {"batch", "max_blocks"}, {p.batch, -1}, false);
  p.max_blocks = block_table.shape(1);
  p.context_lens = checked_data<int32_t>(context_lens, "context_lens", "int32", {"batch"}, {p.batch}, false);
  const int64_t table_tokens = aigc::checked_mul(p.max_blocks, p.block_size, "block_table: max_blocks * block_size");
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t length = p.context_lens[b];
    if (length < 1 || length > table_tokens) {
      throw py::value_error("context_lens: sequence " + std::to_string(b) + " has " + std::to_string(length) +
                            ", expected 1 .. " + std::to_string(table_tokens) + " (max_blocks * block_size)");
    }
    for (int64_t blk = 0; blk * p.block_size < length; ++blk) {
      const int64_t id = p.block_table[b * p.max_blocks + blk];
      if (id < 0 || id >= p.num_blocks) {
        throw py::value_error("block_table: sequence " + std::to_string(b) + " block " + std::to_string(blk) + " is " +
                              std::to_string(id) + ", outside [0, " + std::to_string(p.num_blocks) + ")");
      }
    }
  }
  p.scale = checked_scale(scale, p.head_dim);
  p.out = checked_data<float>(out, "out", "float32", {"batch", "n_heads", "head_dim"},
                              {p.batch, p.n_heads, p.head_dim}, true);
  return p;
}

void attention_decode(py::array q, py::array k_cache, py::array v_cache, py::array block_table,
                      py::array context_lens, double scale, py::array out, const std::string& device) {
  const aigc::AttentionDecodeParams p = decode_params(q, k_cache, v_cache, block_table, context_lens, scale, out);
  const bool cuda = aigc::python::on_cuda(device);
  if (p.batch == 0) return;
  py::gil_scoped_release release;
#ifdef AIGC_WITH_CUDA
  if (cuda) {
    aigc::attention_decode_cuda(p);
    return;
  }
#endif
  (void)cuda;
  aigc::attention_decode_cpu(p);
}

#ifdef AIGC_WITH_CUDA
// For benchmarks/native_kernels.py: the CUDA kernel run `repeats` times on one copy of the inputs,
// the seconds of one run timed by CUDA events (the kernels alone, not the copies).
int checked_repeats(int repeats) {
  if (repeats < 1) throw py::value_error("repeats: expected >= 1, got " + std::to_string(repeats));
  aigc::python::on_cuda("cuda");
  return repeats;
}

double attention_prefill_cuda_seconds(py::array q, py::array k, py::array v, py::array cu_seqlens, double scale,
                                      py::array out, int repeats) {
  const aigc::AttentionPrefillParams p = prefill_params(q, k, v, cu_seqlens, scale, out);
  repeats = checked_repeats(repeats);
  py::gil_scoped_release release;
  return aigc::attention_prefill_cuda(p, repeats);
}

double attention_decode_cuda_seconds(py::array q, py::array k_cache, py::array v_cache, py::array block_table,
                                     py::array context_lens, double scale, py::array out, int repeats) {
  const aigc::AttentionDecodeParams p = decode_params(q, k_cache, v_cache, block_table, context_lens, scale, out);
  repeats = checked_repeats(repeats);
  py::gil_scoped_release release;
  return aigc::attention_decode_cuda(p, repeats);
}
#endif

}  // namespace

void bind_attention(py::module_& m) {
  // scale NaN means the default, 1 / sqrt(head_dim).
  m.def("attention_prefill", &attention_prefill, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("cu_seqlens"),
        py::arg("scale"), py::arg("out"), py::arg("device") = "cpu");
  m.def("attention_decode", &attention_decode, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"),
        py::arg("block_table"), py::arg("context_lens"), py::arg("scale"), py::arg("out"),
        py::arg("device") = "cpu");
#ifdef AIGC_WITH_CUDA
  m.def("attention_prefill_cuda_seconds", &attention_prefill_cuda_seconds, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("cu_seqlens"), py::arg("scale"), py::arg("out"), py::arg("repeats"));
  m.def("attention_decode_cuda_seconds", &attention_decode_cuda_seconds, py::arg("q"), py::arg("k_cache"),
        py::arg("v_cache"), py::arg("block_table"), py::arg("context_lens"), py::arg("scale"), py::arg("out"),
        py::arg("repeats"));
#endif
}
