// Small integer helpers of the kernels (attention, projections): rounding a count up to a
// multiple, and turning a run-time count into a compile-time one so that a kernel is built
// for each block size it may get. Included at file scope like cpu/row_blocks.h: the
// helpers sit in the ISA namespace, so no build's inline copy can replace another's.
#pragma once

#include <cstdint>
#include <type_traits>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Calls fn(std::integral_constant<int, n>) for the n in 1 .. kMax given at run time.
template <int kMax, typename Fn>
void with_count(int n, Fn&& fn) {
  if constexpr (kMax > 0) {
    if (n == kMax) {
      fn(std::integral_constant<int, kMax>{});
    } else {
      with_count<kMax - 1>(n, fn);
    }
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
