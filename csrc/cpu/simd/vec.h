// Thin float32 vector wrappers for the kernels compiled once per ISA (aigc/isa.h): the
// flags of the build pick the implementation — 16 lanes of AVX-512, 8 of AVX2, or 8
// plain floats in loops that the portable build's auto-vectoriser turns into SSE2.
// Every version has the same API (namespace simd inside the ISA namespace, so no
// inline function built with AVX-512 flags can leak into the generic build):
//   F; kWidth; load, load_partial, store, set1, add, sub, mul, div, max, fmadd,
//   reduce_max, reduce_add, reduce_add_lanes (kWidth sums at once), mask_gt, mask_ge,
//   mask_eq, mask_nan (lane bitmasks), exp, exp2_nonpositive, exp2_in_range,
//   load_bf16 / load_bf16_partial (bf16 bits, uint16, widened to float32),
//   transpose (a kWidth x kWidth block, scaled).
// exp follows Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial,
// ≤ 2 ulp on [-87, 88]; larger inputs are clamped to 88); inputs below -87 (results under 2^-126) give exactly 0, so a
// banned token (-inf) never gets a probability.
// exp2_nonpositive, for softmax weights with log2(e) folded into the scores: 2^x for
// x <= 0 by rounding to n = round(x), a degree-6 polynomial for 2^f on f in [-1/2, 1/2]
// (fitted for relative error: <= 1.6 half-ulps at float32) and a scale by 2^n; 10
// instructions against Cephes exp's 17 on AVX-512. x < -126 (and -inf) give exactly 0.
// exp2_in_range, for sums (the sampler's log-sum-exp): 2^x for x the caller has clamped
// to [-126, 1/2], degree 5 (<= 1.6 ulp), no mask.
#pragma once

#if defined(__AVX512F__)
#include "cpu/simd/vec_avx512.h"
#elif defined(__AVX2__)
#include "cpu/simd/vec_avx2.h"
#else
#include "cpu/simd/vec_generic.h"
#endif
