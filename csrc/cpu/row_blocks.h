// For the projection kernels (cpu/linear.cc, cpu/linear_int8.cc): the m rows of x split
// evenly into blocks of at most kMaxRows (m = 8: 4 + 4, not 6 + 2, whose 2-row block does
// few FMAs per weight load), each block handed to fn(std::integral_constant<int, rows>,
// first_row) so that the kernel is compiled for its row count. Included inside a file's
// ISA namespace, like everything those files compile per ISA.
#pragma once

#include <cstdint>

#include "cpu/counts.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

template <int kMaxRows, typename Fn>
void for_each_row_block(int64_t m, Fn&& fn) {
  const int64_t blocks = (m + kMaxRows - 1) / kMaxRows;
  for (int64_t b = 0, row = 0; b < blocks; ++b) {
    const int64_t rows = m / blocks + (b < m % blocks ? 1 : 0);
    with_count<kMaxRows>(static_cast<int>(rows), [&](auto count) { fn(count, row); });
    row += rows;
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
