// For the AVX-512 projection kernels (cpu/linear.cc, cpu/linear_int8.cc): the next panel
// of weights, a share of it per row block, handed to the prefetcher line by line over the
// block's iterations. A decode step reads its weights from memory, and without this the
// first row block of each panel waited on them while the FMAs sat idle (the loads of the
// weights held ~40 % of a batch-32 float32 step's samples; with it, float32 at m = 32 with
// weights from memory went 152 → 208 GOP/s on 2 Xeon cores).
// Included inside a file's ISA namespace, like everything those files compile per ISA.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

struct NextPanel {
  const char* base = nullptr;   // this block's share
  int64_t bytes = 0, step = 0;  // its size, and bytes per iteration
  int64_t issued = 0, due = 0;

  // Rows [row, row + rows) of m take that share of the `panel_bytes` at `next`, spread over
  // `iterations` calls of issue().
  NextPanel() = default;
  NextPanel(const char* next, int64_t panel_bytes, int64_t row, int64_t rows, int64_t m, int64_t iterations) {
    const int64_t begin = panel_bytes * row / m / 64 * 64, end = panel_bytes * (row + rows) / m / 64 * 64;
    base = next + begin;
    bytes = end - begin;
    step = (bytes + iterations - 1) / iterations;
  }

  // Into L2: a panel is 48-196 KB here, more than L1 holds beside the activations.
  void issue() {
    due += step;
    for (; issued < due && issued < bytes; issued += 64) _mm_prefetch(base + issued, _MM_HINT_T1);
  }
};

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
#endif
