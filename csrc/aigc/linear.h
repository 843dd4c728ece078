// The projections of the native GPT decoder: y (m, n) = x (m, k) · W (k, n) + bias (n).
// W is stored in the dtype chosen at load — float32, bfloat16, or int8 with one scale per
// output column — repacked into panels of kPanel columns, (n / kPanel, k, kPanel) (int8:
// (n / kPanel, k / 4, kPanel, 4), the VNNI layout), so that a kernel streams each weight
// once, contiguously, whatever m is. int8 layers quantise the activations too, per row
// (cpu/linear_int8.cc): integer products, exact sums.
// Two ways to multiply: linear_forward (own kernels, cpu/linear.cc) computes every row
// of y with the same operations whatever m is, so a request's numbers never depend on
// what shares its batch; linear_forward_blas (float32 only: OpenBLAS, panel by panel,
// 1.75× faster per core at m = 256 on AVX2, slower than the AVX-512 kernels) may round a
// row differently for a different m, so the decoder uses it only where m is fixed by the
// request itself (its prompt), and only on AVX2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "aigc/isa.h"

namespace aigc {

enum class WeightDtype { kFloat32, kBFloat16, kInt8 };

constexpr int64_t kPanel = 64;
// Panels of a layer with n output columns (the last one zero-padded).
constexpr int64_t linear_panel_count(int64_t n) { return (n + kPanel - 1) / kPanel; }

// Panels, step buffers and KV caches start on a cache line: large std::vector allocations
// sit 16 bytes past a page, which splits every other 32-byte load, and every 64-byte one,
// across two lines (AVX2, one row from L1: 57 → 80 GFLOP/s float32; the decoder's step
// buffers on the AMX Xeon, a 768 × 3072 int8 projection at m = 512 writing its output:
// 1,490 → 1,254 µs on one core). Only the allocation changes, never a layout.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* ptr, std::size_t) { ::operator delete(ptr, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};
template <typename T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

struct Linear {
  int64_t k = 0, n = 0;
  WeightDtype dtype = WeightDtype::kFloat32;
  CacheLineVector<float> w_f32;      // (panels, k, kPanel)          float32
  CacheLineVector<uint16_t> w_bf16;  // (panels, k, kPanel)          bfloat16 bits
  CacheLineVector<int8_t> w_i8;      // (panels, k4, kPanel, 4)      int8, k4 = ceil(k / 4), zero-padded
  std::vector<float> scale;          // (panels * kPanel,)           int8: W ≈ w_i8 · scale[column]
  std::vector<int32_t> w_sum;        // (panels * kPanel,)           int8: Σ_k w_i8[k][column]
  std::vector<float> bias;           // (n,) or empty
};

// W's element (r, c) is w[r * row_stride + c * col_stride], so a transposed source (the
// tied embedding as the LM head) needs no copy. bias may be null.
Linear make_linear(const float* w, int64_t row_stride, int64_t col_stride, const float* bias, int64_t k,
                   int64_t n, WeightDtype dtype);
// Both threaded over column panels: linear_forward dispatches on the ISA
// (cpu/linear_dispatch.cc), linear_forward_blas calls OpenBLAS (runtime/linear.cc).
void linear_forward(const Linear& layer, const float* x, int64_t m, float* y);
void linear_forward_blas(const Linear& layer, const float* x, int64_t m, float* y);

uint16_t float_to_bf16(float value);  // round to nearest even; NaN stays NaN

struct LinearPanelParams {
  const float* x;        // (m, k)
  int64_t m, k, n;
  const void* panels;    // the layer's w_f32 or w_bf16
  const float* bias;     // may be null
  float* y;              // (m, n)
};

// AMX int8 (cpu/linear_int8.cc): rows go in tiles of kAmxTileRows, k in A tiles of
// kAmxTileGroups groups of 4. The rows of an m × k4 call that run in tiles (whole tiles only,
// and only when k4 fills whole A tiles; the rest run in the VNNI blocks), given leave to use
// AMX at all (LinearInt8Params::amx). One rule for the kernel and for linear_instruction.
constexpr int64_t kAmxTileRows = 16, kAmxTileGroups = 16;
constexpr int64_t amx_tiled_rows(int64_t m, int64_t k4, bool amx) {
  return amx && k4 % kAmxTileGroups == 0 ? m / kAmxTileRows * kAmxTileRows : 0;
}

struct LinearInt8Params {
  const uint8_t* xq;      // (m, k4 * 4) activations: round(x / x_scale) + 128, zero-padded with 128
  const float* x_scale;   // (m,) max |x| of the row / 127
  const int16_t* xw;      // avx2 only: xq widened by avx2::widen_rows, else null
  int64_t m, k4, n;
  const int8_t* panels;   // the layer's w_i8
  const float* w_scale;   // (n,)
  const int32_t* w_sum;   // (n,)
  const float* bias;      // may be null
  float* y;               // (m, n)
  bool vnni;              // the CPU has AVX512-VNNI (the avx512 build's fast path)
  bool amx;               // and AMX-INT8 (cpu_has_amx_int8): 16 rows at a time in tiles
};

}  // namespace aigc

// Panels [first, last) of y, one version per ISA (cpu/linear.cc).
AIGC_ISA_DECLARE(void, linear_f32_panels, (const LinearPanelParams& p, int64_t first, int64_t last))
AIGC_ISA_DECLARE(void, linear_bf16_panels, (const LinearPanelParams& p, int64_t first, int64_t last))
AIGC_ISA_DECLARE(void, linear_int8_panels, (const LinearInt8Params& p, int64_t first, int64_t last))
// Rows of x (m, k) → xq (m, k4 * 4) and x_scale (m,) as LinearInt8Params describes them; the
// same bytes on every ISA (cpu/linear_int8.cc).
AIGC_ISA_DECLARE(void, quantize_rows, (const float* x, int64_t m, int64_t k, int64_t k4, uint8_t* xq, float* x_scale))

namespace aigc {
namespace avx2 {
// The avx2 int8 kernel (no VNNI) multiplies int16 activations: xq (m, k4 * 4) widened to
// int16 and regrouped per row block as (k4, rows, 4), so that a block's broadcasts for one
// group sit side by side. Once per call (xw: m * k4 * 4 values), not once per thread.
void widen_rows(const uint8_t* xq, int64_t m, int64_t k4, int16_t* xw);
}  // namespace avx2
}  // namespace aigc
