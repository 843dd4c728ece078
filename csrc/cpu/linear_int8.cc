// int8 × int8 projections (aigc/linear.h): activations quantised per row to unsigned
// 8 bits with zero point 128, weights per output column to signed 8 bits, products summed
// exactly in int32 — with AVX512-VNNI one vpdpbusd does 64 multiply-adds, 4× the float32
// FMAs, so a decode step is bound by the weight bytes only. Dequantised at the end:
//   y = (Σ xq·wq − 128·Σ wq) · x_scale[row] · w_scale[col] + bias.
// The sums are exact, so every ISA gives the same y and a row never depends on the others.
#include "aigc/linear.h"
#include "cpu/row_blocks.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr int kRows = 6;  // 6 × 4 accumulators + 4 weight vectors fit the 32 registers

void store_block(const LinearInt8Params& p, const int32_t* acc, int rows, int64_t row0, int64_t col0) {
  const int64_t width = p.n - col0 < kPanel ? p.n - col0 : kPanel;
  for (int r = 0; r < rows; ++r) {
    float* y = p.y + (row0 + r) * p.n + col0;
    const float x_scale = p.x_scale[row0 + r];
    for (int64_t c = 0; c < width; ++c) {
      const int32_t exact = acc[r * kPanel + c] - 128 * p.w_sum[col0 + c];
      float v = static_cast<float>(exact) * (x_scale * p.w_scale[col0 + c]);
      if (p.bias) v += p.bias[col0 + c];
      y[c] = v;
    }
  }
}

// Portable: the same integer sums, for CPUs without VNNI (and the generic/avx2 builds).
template <int R>
void block_portable(const LinearInt8Params& p, const int8_t* panel, int64_t row0, int64_t col0) {
  int32_t acc[R * kPanel] = {};
  for (int64_t g = 0; g < p.k4; ++g) {
    const int8_t* w = panel + g * kPanel * 4;
    for (int r = 0; r < R; ++r) {
      const uint8_t* x = p.xq + (row0 + r) * p.k4 * 4 + g * 4;
      for (int c = 0; c < kPanel; ++c) {
        acc[r * kPanel + c] += x[0] * w[c * 4] + x[1] * w[c * 4 + 1] + x[2] * w[c * 4 + 2] + x[3] * w[c * 4 + 3];
      }
    }
  }
  store_block(p, acc, R, row0, col0);
}

#if defined(__AVX512F__)
template <int R>
__attribute__((target("avx512vnni"))) void block_vnni(const LinearInt8Params& p, const int8_t* panel, int64_t row0,
                                                      int64_t col0) {
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  const int32_t* x = reinterpret_cast<const int32_t*>(p.xq + row0 * p.k4 * 4);
  for (int64_t g = 0; g < p.k4; ++g) {
    // 16 columns × 4 consecutive k per vector: the layout vpdpbusd multiplies.
    __m512i w[4];
    for (int j = 0; j < 4; ++j) w[j] = _mm512_loadu_si512(panel + (g * kPanel + 16 * j) * 4);
    for (int r = 0; r < R; ++r) {
      const __m512i xb = _mm512_set1_epi32(x[r * p.k4 + g]);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], xb, w[j]);
    }
  }
  alignas(64) int32_t out[R * kPanel];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) _mm512_store_si512(out + r * kPanel + 16 * j, acc[r][j]);
  store_block(p, out, R, row0, col0);
}
#endif

template <int R>
void block(const LinearInt8Params& p, const int8_t* panel, int64_t row0, int64_t col0) {
#if defined(__AVX512F__)
  if (p.vnni) return block_vnni<R>(p, panel, row0, col0);
#endif
  block_portable<R>(p, panel, row0, col0);
}

}  // namespace

void linear_int8_panels(const LinearInt8Params& p, int64_t first, int64_t last) {
  for (int64_t panel = first; panel < last; ++panel) {
    const int8_t* w = p.panels + panel * p.k4 * kPanel * 4;
    for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) { block<decltype(rows)::value>(p, w, row, panel * kPanel); });
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
