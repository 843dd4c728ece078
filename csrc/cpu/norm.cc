// Residual add + layer norm, one row at a time (aigc/norm.h). Compiled with
// -fassociative-math so that the mean and variance sums vectorise (several partial sums
// instead of one chain); the variance is taken around the mean, not as E[x²] - E[x]².
#include <cmath>

#include "aigc/norm.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

void add_layer_norm_rows(const LayerNormParams& p, int64_t first, int64_t last) {
  for (int64_t r = first; r < last; ++r) {
    float* h = p.h + r * p.dim;
    if (p.delta) {
      const float* d = p.delta + r * p.dim;
      for (int64_t i = 0; i < p.dim; ++i) h[i] += d[i];
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < p.dim; ++i) sum += h[i];
    const float mean = sum / static_cast<float>(p.dim);
    float squares = 0.0f;
    for (int64_t i = 0; i < p.dim; ++i) squares += (h[i] - mean) * (h[i] - mean);
    const float inv = 1.0f / std::sqrt(squares / static_cast<float>(p.dim) + p.eps);
    float* y = p.y + r * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) y[i] = (h[i] - mean) * inv * p.weight[i] + p.bias[i];
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
