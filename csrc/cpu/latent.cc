// CPU latent sampling and spherical interpolation (see aigc/latent.h for the layouts).
#include <cmath>

#include "aigc/latent.h"

namespace aigc {

void sample_latent_rows(const LatentParams& p, int64_t first, int64_t last) {
  // Round 0 of a group of four elements from one Philox call, two logarithms and two
  // sine/cosine pairs (per element it would be four of each: the sampler was then slower
  // than numpy's ziggurat). Only elements the truncation rejects take the per-element path.
  for (int64_t row = first; row < last; ++row) {
    const uint64_t index = p.first_index + static_cast<uint64_t>(row);
    float* out = p.out + row * p.dim;
    for (int64_t group = 0; group * 4 < p.dim; ++group) {
      const Philox4x64Out r = philox4x64(static_cast<uint64_t>(group), index, 0, 0, p.seed, kLatentStream);
      float z[4];
      normal_quad(r, z);
      for (int lane = 0; lane < 4 && group * 4 + lane < p.dim; ++lane) {
        const int64_t j = group * 4 + lane;
        out[j] = std::fabs(z[lane]) <= p.truncation ? z[lane] : latent_element(p.seed, index, j, p.truncation);
      }
    }
  }
}

void slerp_cpu(const SlerpParams& p) {
  // The angle between the two directions, accumulated in double.
  double dot = 0.0, norm_a = 0.0, norm_b = 0.0;
  for (int64_t j = 0; j < p.dim; ++j) {
    dot += static_cast<double>(p.a[j]) * p.b[j];
    norm_a += static_cast<double>(p.a[j]) * p.a[j];
    norm_b += static_cast<double>(p.b[j]) * p.b[j];
  }
  const double denom = std::sqrt(norm_a * norm_b);
  const double cosine = denom > 0.0 ? std::fmin(1.0, std::fmax(-1.0, dot / denom)) : 1.0;
  const double omega = std::acos(cosine);
  const double sin_omega = std::sin(omega);
  for (int64_t i = 0; i < p.n; ++i) {
    const double t = p.t[i];
    // Nearly parallel (or zero) vectors: the slerp weights tend to the linear ones.
    const bool linear = sin_omega < 1e-6;
    const double wa = linear ? 1.0 - t : std::sin((1.0 - t) * omega) / sin_omega;
    const double wb = linear ? t : std::sin(t * omega) / sin_omega;
    float* out = p.out + i * p.dim;
    for (int64_t j = 0; j < p.dim; ++j) out[j] = static_cast<float>(wa * p.a[j] + wb * p.b[j]);
  }
}

}  // namespace aigc
