// Portable version of the wrappers in vec.h: 8 floats in plain loops, which the compiler
// vectorises with whatever the baseline target has (SSE2 on x86-64). No fused
// multiply-add (the build has -ffp-contract=off): fmadd rounds twice here.
#pragma once

#include <cstdint>
#include <cstring>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace simd {

constexpr int kWidth = 8;
struct F {
  float v[kWidth];
};

#define AIGC_LANES(EXPR)                        \
  F r;                                          \
  for (int i = 0; i < kWidth; ++i) r.v[i] = EXPR; \
  return r

inline F load(const float* p) { AIGC_LANES(p[i]); }
inline F load_partial(const float* p, int n, float fill) { AIGC_LANES(i < n ? p[i] : fill); }
inline void store(float* p, F a) { std::memcpy(p, a.v, sizeof a.v); }
inline F set1(float x) { AIGC_LANES(x); }
inline F add(F a, F b) { AIGC_LANES(a.v[i] + b.v[i]); }
inline F sub(F a, F b) { AIGC_LANES(a.v[i] - b.v[i]); }
inline F mul(F a, F b) { AIGC_LANES(a.v[i] * b.v[i]); }
inline F div(F a, F b) { AIGC_LANES(a.v[i] / b.v[i]); }
inline F max(F a, F b) { AIGC_LANES(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
inline F min(F a, F b) { AIGC_LANES(a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
inline F fmadd(F a, F b, F c) { AIGC_LANES(a.v[i] * b.v[i] + c.v[i]); }
// Lanes where a == b take x, the others y.
inline F select_eq(F a, F b, F x, F y) { AIGC_LANES(a.v[i] == b.v[i] ? x.v[i] : y.v[i]); }

inline float reduce_max(F a) {
  float m = a.v[0];
  for (int i = 1; i < kWidth; ++i) m = a.v[i] > m ? a.v[i] : m;
  return m;
}
inline float reduce_add(F a) {
  float s = 0.0f;
  for (int i = 0; i < kWidth; ++i) s += a.v[i];
  return s;
}

// Lane i = reduce_add(a[i]) for i < kWidth.
inline F reduce_add_lanes(const F* a) { AIGC_LANES(reduce_add(a[i])); }

#define AIGC_MASK(COND)                                     \
  unsigned m = 0;                                           \
  for (int i = 0; i < kWidth; ++i) m |= unsigned(COND) << i; \
  return m

inline unsigned mask_gt(F a, F b) { AIGC_MASK(a.v[i] > b.v[i]); }
inline unsigned mask_ge(F a, F b) { AIGC_MASK(a.v[i] >= b.v[i]); }
inline unsigned mask_eq(F a, F b) { AIGC_MASK(a.v[i] == b.v[i]); }
inline unsigned mask_nan(F a) { AIGC_MASK(a.v[i] != a.v[i]); }

inline float bf16_lane(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline F load_bf16(const uint16_t* p) { AIGC_LANES(bf16_lane(p[i])); }
inline F load_bf16_partial(const uint16_t* p, int n) { AIGC_LANES(i < n ? bf16_lane(p[i]) : 0.0f); }

// dst[c * dst_stride + r] = src[r * src_stride + c] * scale for r, c < kWidth.
inline void transpose(const float* src, int64_t src_stride, float scale, float* dst, int64_t dst_stride) {
  for (int r = 0; r < kWidth; ++r) {
    for (int c = 0; c < kWidth; ++c) dst[c * dst_stride + r] = src[r * src_stride + c] * scale;
  }
}

// 2^n for a whole number n in [-126, 127], built from its exponent bits.
inline float pow2_lane(float n) {
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return scale;
}

inline float exp_lane(float x) {
  if (!(x >= -87.0f)) return 0.0f;
  x = x < 88.0f ? x : 88.0f;
  // Round to nearest with the 1.5 * 2^23 trick (no SSE4.1 round in the baseline).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + (x + 1.0f);
  return y * pow2_lane(n);
}
inline F exp(F a) { AIGC_LANES(exp_lane(a.v[i])); }

inline float exp2_lane(float x) {
  if (!(x >= -126.0f)) return 0.0f;
  const float n = (x + 12582912.0f) - 12582912.0f;  // round to nearest, as in exp_lane
  const float f = x - n;
  float y = 1.53457979e-4f;
  y = y * f + 1.33999309e-3f;
  y = y * f + 9.61848907e-3f;
  y = y * f + 0.0555032864f;
  y = y * f + 0.240226462f;
  y = y * f + 0.693147182f;
  y = y * f + 1.0f;
  return y * pow2_lane(n);
}
// 2^x for x <= 0 (softmax weights); x < -126 and -inf give exactly 0 (see vec.h).
inline F exp2_nonpositive(F a) { AIGC_LANES(exp2_lane(a.v[i])); }

// 2^x for x in [-126, 1/2] that the caller has clamped, for sums of exponentials: a
// degree-5 polynomial (relative error <= 1.6 ulp at float32).
inline float exp2_in_range_lane(float x) {
  const float n = (x + 12582912.0f) - 12582912.0f;
  const float f = x - n;
  float y = 1.32647273e-3f;
  y = y * f + 9.67151299e-3f;
  y = y * f + 0.0555073358f;
  y = y * f + 0.240222424f;
  y = y * f + 0.693147004f;
  y = y * f + 1.0f;
  return y * pow2_lane(n);
}
inline F exp2_in_range(F a) { AIGC_LANES(exp2_in_range_lane(a.v[i])); }

#undef AIGC_LANES
#undef AIGC_MASK

}  // namespace simd
}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
