// Box-Muller over arrays: pair i gives cos_out[i] = r·cos(2πv) and sin_out[i] = r·sin(2πv)
// with r = sqrt(-2·log(1 - u)), u and v the top 53 bits of radius_bits[i] and
// angle_bits[i] — rng.h's normal_pair, vectorised. This file is compiled with
// -ffast-math so that GCC calls glibc's vector log/sin/cos (libmvec, ≤ 4 ulp in double,
// so the float results stay within 1 ulp of the scalar path): the latent sampler then
// costs what numpy's ziggurat does (it was 1.7× slower with scalar libm calls).
// Each loop does one thing: a loop mixing calls and conversions stays scalar.
#include <cmath>
#include <cstdint>

#include "aigc/latent.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

void box_muller(const uint64_t* radius_bits, const uint64_t* angle_bits, int64_t n, float* cos_out,
                float* sin_out) {
  constexpr int64_t kBlock = 256;
  double radius[kBlock], angle[kBlock], trig[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = n - start < kBlock ? n - start : kBlock;
    for (int64_t i = 0; i < count; ++i) {
      radius[i] = 1.0 - static_cast<double>(radius_bits[start + i] >> 11) * (1.0 / 9007199254740992.0);
      angle[i] = 6.283185307179586 * (static_cast<double>(angle_bits[start + i] >> 11) * (1.0 / 9007199254740992.0));
    }
    for (int64_t i = 0; i < count; ++i) radius[i] = std::log(radius[i]);
    for (int64_t i = 0; i < count; ++i) radius[i] = std::sqrt(-2.0 * radius[i]);
    for (int64_t i = 0; i < count; ++i) trig[i] = std::cos(angle[i]);
    for (int64_t i = 0; i < count; ++i) cos_out[start + i] = static_cast<float>(radius[i] * trig[i]);
    for (int64_t i = 0; i < count; ++i) trig[i] = std::sin(angle[i]);
    for (int64_t i = 0; i < count; ++i) sin_out[start + i] = static_cast<float>(radius[i] * trig[i]);
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
