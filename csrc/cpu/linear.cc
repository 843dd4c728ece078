// float32 and bfloat16 weight projections over column panels (aigc/linear.h): each panel
// of kPanel = 64 columns is streamed once per block of up to 6 rows of x, converted to
// float32 in registers and multiply-added in float32, k in order for every row. With
// AVX-512 a block keeps 6 rows × 4 vectors = 24 accumulators (4 rows was ~10% slower at
// m = 32: fewer FMAs per weight load); at m = 1 the kernel is bound by the weight bytes
// it reads (the point of bf16).
#include <cstring>

#include "aigc/linear.h"
#include "cpu/row_blocks.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr int kRows = 6;
constexpr int64_t kAhead = 16;  // rows of a panel prefetched ahead

// The float32 block (rows × 64) → y, with the bias, clipped to n.
void store_block(const LinearPanelParams& p, const float* acc, int rows, int64_t row0, int64_t col0) {
  const int64_t width = p.n - col0 < kPanel ? p.n - col0 : kPanel;
  for (int r = 0; r < rows; ++r) {
    float* y = p.y + (row0 + r) * p.n + col0;
    for (int64_t c = 0; c < width; ++c) {
      float v = acc[r * kPanel + c];
      if (p.bias) v += p.bias[col0 + c];
      y[c] = v;
    }
  }
}

#if defined(__AVX512F__)

inline void load_panel_row(const float* src, __m512 w[4]) {
  for (int j = 0; j < 4; ++j) w[j] = _mm512_loadu_ps(src + 16 * j);
}

inline void load_panel_row(const uint16_t* src, __m512 w[4]) {
  for (int j = 0; j < 4; ++j) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 16 * j)));
    w[j] = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
}

template <typename W, int R>
void block(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t col0) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  const float* x = p.x + row0 * p.k;
  for (int64_t kk = 0; kk < p.k; ++kk) {
    __m512 w[4];
    // bf16: software prefetch kAhead rows ahead, or at m = 1 one core read ~11 GB/s
    // (14 with it; float32, which moves twice the bytes per row, streams as well without).
    if constexpr (sizeof(W) < 4) {
      const char* ahead = reinterpret_cast<const char*>(panel + (kk + kAhead) * kPanel);
      for (int line = 0; line < static_cast<int>(sizeof(W)) * kPanel; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
    }
    load_panel_row(panel + kk * kPanel, w);
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * p.k + kk]);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(xb, w[j], acc[r][j]);
    }
  }
  alignas(64) float out[R * kPanel];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) _mm512_store_ps(out + r * kPanel + 16 * j, acc[r][j]);
  store_block(p, out, R, row0, col0);
}

#else

inline float to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}
inline float to_float(float value) { return value; }

template <typename W, int R>
void block(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t col0) {
  float acc[R * kPanel] = {};
  float w[kPanel];
  const float* x = p.x + row0 * p.k;
  for (int64_t kk = 0; kk < p.k; ++kk) {
    for (int c = 0; c < kPanel; ++c) w[c] = to_float(panel[kk * kPanel + c]);
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * p.k + kk];
      for (int c = 0; c < kPanel; ++c) acc[r * kPanel + c] += xr * w[c];
    }
  }
  store_block(p, acc, R, row0, col0);
}

#endif

template <typename W>
void panels(const LinearPanelParams& p, int64_t first, int64_t last) {
  const W* weights = static_cast<const W*>(p.panels);
  for (int64_t panel = first; panel < last; ++panel) {
    const W* w = weights + panel * p.k * kPanel;
    for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) { block<W, decltype(rows)::value>(p, w, row, panel * kPanel); });
  }
}

}  // namespace

void linear_f32_panels(const LinearPanelParams& p, int64_t first, int64_t last) { panels<float>(p, first, last); }
void linear_bf16_panels(const LinearPanelParams& p, int64_t first, int64_t last) { panels<uint16_t>(p, first, last); }

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
