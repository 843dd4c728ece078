// Checks of what callers hand the kernels, shared by the bindings (csrc/python) and the
// runtime (the decoder validates a step itself): size arithmetic that cannot wrap —
// products and sums of int64 through the compiler's overflow builtins, throwing
// std::overflow_error (Python: OverflowError) naming what was being sized; a wrapped
// product is how KvCache(2**20, ...) was accepted as a cache of 0 floats and then written
// through — and the one check of CSR offsets / cu_seqlens (std::invalid_argument, Python:
// ValueError). Integer code only: safe in the per-ISA kernel files too.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace aigc {

[[noreturn]] inline void size_overflow(const char* what, int64_t a, const char* op, int64_t b) {
  throw std::overflow_error(std::string(what) + ": " + std::to_string(a) + " " + op + " " + std::to_string(b) +
                            " overflows a 64-bit size");
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) size_overflow(what, a, "*", b);
  return product;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) size_overflow(what, a, "+", b);
  return sum;
}

// The product of every factor, e.g. checked_product({2, n_layer, num_blocks, block_floats}, "KV cache").
inline int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t product = 1;
  for (const int64_t f : factors) product = checked_mul(product, f, what);
  return product;
}

// offsets (n + 1,) — CSR row offsets, cu_seqlens — into an array of `total` entries: start
// at 0, never decrease, end at total, so that every range [offsets[i], offsets[i + 1]) lies
// inside [0, total). `unit` names an entry in the message ("row", "sequence"); `total_name`,
// when given, what total counts. Every kernel indexes with these unchecked.
template <typename T>
void check_offsets(const T* offsets, int64_t n, int64_t total, const char* name, const char* unit,
                   const char* total_name = nullptr) {
  if (offsets[0] != 0 || offsets[n] != total) {
    const std::string counted = total_name != nullptr ? std::string(" (") + total_name + ")" : "";
    throw std::invalid_argument(std::string(name) + ": expected to start at 0 and end at " + std::to_string(total) +
                                counted + ", got " + std::to_string(offsets[0]) + " .. " +
                                std::to_string(offsets[n]));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      throw std::invalid_argument(std::string(name) + ": not monotone at " + unit + " " + std::to_string(i) + " (" +
                                  std::to_string(offsets[i]) + " then " + std::to_string(offsets[i + 1]) + ")");
    }
  }
}

}  // namespace aigc
