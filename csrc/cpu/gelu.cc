// GPT-2's tanh GELU in place (aigc/norm.h). Compiled with -ffast-math so that tanhf comes
// from glibc's vector math library (libmvec) instead of one scalar call per element.
#include <cmath>

#include "aigc/norm.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

void gelu_tanh_range(float* x, int64_t first, int64_t last) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = first; i < last; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
