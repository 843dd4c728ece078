// AVX-512 version of the wrappers in vec.h (16 lanes); include vec.h, not this file.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace simd {

constexpr int kWidth = 16;
using F = __m512;

inline F load(const float* p) { return _mm512_loadu_ps(p); }
// The first n (< kWidth) lanes from p, the others `fill`; never reads past p + n.
inline F load_partial(const float* p, int n, float fill) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), static_cast<__mmask16>((1u << n) - 1), p);
}
inline void store(float* p, F v) { _mm512_storeu_ps(p, v); }
inline F set1(float x) { return _mm512_set1_ps(x); }
inline F add(F a, F b) { return _mm512_add_ps(a, b); }
inline F sub(F a, F b) { return _mm512_sub_ps(a, b); }
inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
inline F div(F a, F b) { return _mm512_div_ps(a, b); }
inline F max(F a, F b) { return _mm512_max_ps(a, b); }
inline F min(F a, F b) { return _mm512_min_ps(a, b); }
inline F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
// Lanes where a == b take x, the others y.
inline F select_eq(F a, F b, F x, F y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), y, x);
}
inline float reduce_max(F a) { return _mm512_reduce_max_ps(a); }
inline float reduce_add(F a) { return _mm512_reduce_add_ps(a); }
// Lane i = reduce_add(a[i]) for i < 16, one reduction at a time.
inline F reduce_add_lanes(const F* a) {
  alignas(64) float sums[kWidth];
  for (int i = 0; i < kWidth; ++i) sums[i] = reduce_add(a[i]);
  return _mm512_load_ps(sums);
}
inline unsigned mask_gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
inline unsigned mask_ge(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
inline unsigned mask_eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
inline unsigned mask_nan(F a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }

// bf16 (the top 16 bits of a float32) to float32: widen and shift into place.
inline F load_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline F load_bf16_partial(const uint16_t* p, int n) {
  const __m256i bits = _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// dst[c * dst_stride + r] = src[r * src_stride + c] * scale for r, c < 16, one element at a
// time: the 16 x 16 shuffle network could not be measured (or tested) without an AVX-512 CPU.
inline void transpose(const float* src, int64_t src_stride, float scale, float* dst, int64_t dst_stride) {
  for (int r = 0; r < kWidth; ++r) {
    for (int c = 0; c < kWidth; ++c) dst[c * dst_stride + r] = src[r * src_stride + c] * scale;
  }
}

inline F exp(F x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
  const F n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
  F y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  const __m512i scale = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), y, _mm512_castsi512_ps(scale));
}

// 2^x for x <= 0 (softmax weights); x < -126 and -inf give exactly 0 (see vec.h).
inline F exp2_nonpositive(F x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
  const F n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const F f = _mm512_sub_ps(x, n);
  F y = _mm512_set1_ps(1.53457979e-4f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.33999309e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.61848907e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.0555032864f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.240226462f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.693147182f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, y, n);
}

// 2^x for x in [-126, 1/2] that the caller has clamped, for sums of exponentials: a
// degree-5 polynomial (relative error <= 1.6 ulp at float32), no mask.
inline F exp2_in_range(F x) {
  const F n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const F f = _mm512_sub_ps(x, n);
  F y = _mm512_set1_ps(1.32647273e-3f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.67151299e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.0555073358f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.240222424f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.693147004f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

}  // namespace simd
}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
