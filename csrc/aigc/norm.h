// The element-wise and per-row kernels of the GPT block (cpu/norm.cc, cpu/gelu.cc):
// add_layer_norm: h (rows, dim) += delta (the residual add, skipped when delta is null),
//   then y = (h - mean) / sqrt(var + eps) · weight + bias, row by row, in float32 with
//   the sums in float32 vector lanes.
// gelu_tanh: x ← 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), GPT-2's "gelu_new", in place.
#pragma once

#include <cstdint>

#include "aigc/isa.h"

namespace aigc {

struct LayerNormParams {
  float* h;             // (rows, dim), updated in place when delta is given
  const float* delta;   // (rows, dim) or null
  const float* weight;  // (dim,)
  const float* bias;    // (dim,)
  float* y;             // (rows, dim); may be h itself
  int64_t rows, dim;
  float eps;
};

// Threaded over rows.
void add_layer_norm(const LayerNormParams& p);
// Threaded over elements.
void gelu_tanh(float* x, int64_t n);

}  // namespace aigc

AIGC_ISA_DECLARE(void, add_layer_norm_rows, (const LayerNormParams& p, int64_t first, int64_t last))
AIGC_ISA_DECLARE(void, gelu_tanh_range, (float* x, int64_t first, int64_t last))
