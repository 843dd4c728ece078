// AVX2 + FMA version of the wrappers in vec.h (8 lanes); include vec.h, not this file.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace simd {

constexpr int kWidth = 8;
using F = __m256;

inline F load(const float* p) { return _mm256_loadu_ps(p); }
inline F load_partial(const float* p, int n, float fill) {
  alignas(32) float lanes[kWidth];
  for (int i = 0; i < kWidth; ++i) lanes[i] = i < n ? p[i] : fill;
  return _mm256_load_ps(lanes);
}
inline void store(float* p, F v) { _mm256_storeu_ps(p, v); }
inline F set1(float x) { return _mm256_set1_ps(x); }
inline F add(F a, F b) { return _mm256_add_ps(a, b); }
inline F sub(F a, F b) { return _mm256_sub_ps(a, b); }
inline F mul(F a, F b) { return _mm256_mul_ps(a, b); }
inline F div(F a, F b) { return _mm256_div_ps(a, b); }
inline F max(F a, F b) { return _mm256_max_ps(a, b); }
inline F min(F a, F b) { return _mm256_min_ps(a, b); }
inline F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
// Lanes where a == b take x, the others y.
inline F select_eq(F a, F b, F x, F y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
inline float reduce_max(F a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline float reduce_add(F a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Lane i = reduce_add(a[i]) for i < 8: one tree of horizontal adds for all eight (9
// instructions, against 6 for each reduce_add).
inline F reduce_add_lanes(const F* a) {
  const F t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const F t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const F u0 = _mm256_hadd_ps(t0, t1);  // sums of lanes 0-3 of a[0..3] | of lanes 4-7
  const F u1 = _mm256_hadd_ps(t2, t3);  // the same for a[4..7]
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
inline unsigned mask_gt(F a, F b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
inline unsigned mask_ge(F a, F b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
inline unsigned mask_eq(F a, F b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
inline unsigned mask_nan(F a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }

// bf16 (the top 16 bits of a float32) to float32: widen and shift into place.
inline F load_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
inline F load_bf16_partial(const uint16_t* p, int n) {
  alignas(16) uint16_t lanes[kWidth] = {};
  for (int i = 0; i < n; ++i) lanes[i] = p[i];
  return load_bf16(lanes);
}

// dst[c * dst_stride + r] = src[r * src_stride + c] * scale for r, c < 8: eight rows
// loaded, transposed by unpacks and shuffles within 128-bit lanes, then across lanes.
inline void transpose(const float* src, int64_t src_stride, float scale, float* dst, int64_t dst_stride) {
  const F k = _mm256_set1_ps(scale);
  F a[8], t[8], u[8];
  for (int r = 0; r < 8; ++r) a[r] = _mm256_mul_ps(_mm256_loadu_ps(src + r * src_stride), k);
  for (int r = 0; r < 8; r += 2) {
    t[r] = _mm256_unpacklo_ps(a[r], a[r + 1]);      // r0 r1 r0 r1 (columns 0, 1 | 4, 5)
    t[r + 1] = _mm256_unpackhi_ps(a[r], a[r + 1]);  // columns 2, 3 | 6, 7
  }
  for (int h = 0; h < 8; h += 4) {
    u[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);      // column 0 | 4 of rows h .. h + 3
    u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);  // column 1 | 5
    u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(dst + c * dst_stride, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
    _mm256_storeu_ps(dst + (c + 4) * dst_stride, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
  }
}

inline F exp(F x) {
  const F keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const F n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  F y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(scale)));
}

// 2^x for x <= 0 (softmax weights); x < -126 and -inf give exactly 0 (see vec.h).
inline F exp2_nonpositive(F x) {
  const F keep = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_GE_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
  const F n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const F f = _mm256_sub_ps(x, n);
  F y = _mm256_set1_ps(1.53457979e-4f);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.33999309e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(9.61848907e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.0555032864f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.240226462f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.693147182f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(scale)));
}

// 2^x for x in [-126, 1/2] that the caller has clamped, for sums of exponentials: a
// degree-5 polynomial (relative error <= 1.6 ulp at float32) and the round by adding
// 1.5 * 2^23, which leaves n = round(x) (ties to even) in the low bits of the sum, where
// it becomes 2^n's exponent. One FMA fewer than exp2_nonpositive and no mask.
inline F exp2_in_range(F x) {
  const F magic = _mm256_set1_ps(12582912.0f);  // bits 0x4B400000
  const F shifted = _mm256_add_ps(x, magic);
  const F f = _mm256_sub_ps(x, _mm256_sub_ps(shifted, magic));
  F y = _mm256_set1_ps(1.32647273e-3f);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(9.67151299e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.0555073358f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.240222424f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.693147004f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(127 - 0x4B400000)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(scale));
}

}  // namespace simd
}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
