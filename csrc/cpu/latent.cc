// CPU latent sampling and spherical interpolation (see aigc/latent.h for the layouts).
#include <cmath>
#include <vector>

#include "aigc/latent.h"

namespace aigc {

void sample_latent_rows(const LatentParams& p, int64_t first, int64_t last, Isa isa) {
  // Round 0 of every element from one Philox call per group of four (words 0,1 give lanes
  // 0,1 and words 2,3 lanes 2,3), Box-Muller for the whole row at once; only elements the
  // truncation rejects take the per-element path.
  const int64_t groups = (p.dim + 3) / 4;
  std::vector<uint64_t> radius_bits(2 * groups), angle_bits(2 * groups);
  std::vector<float> cosines(2 * groups), sines(2 * groups);
  for (int64_t row = first; row < last; ++row) {
    const uint64_t index = p.first_index + static_cast<uint64_t>(row);
    for (int64_t group = 0; group < groups; ++group) {
      const Philox4x64Out r = philox4x64(static_cast<uint64_t>(group), index, 0, 0, p.seed, kLatentStream);
      radius_bits[2 * group] = r.v[0];
      angle_bits[2 * group] = r.v[1];
      radius_bits[2 * group + 1] = r.v[2];
      angle_bits[2 * group + 1] = r.v[3];
    }
    AIGC_ISA_CALL(isa, box_muller, radius_bits.data(), angle_bits.data(), 2 * groups, cosines.data(), sines.data());
    float* out = p.out + row * p.dim;
    for (int64_t j = 0; j < p.dim; ++j) {
      const float z = j % 2 == 0 ? cosines[j / 2] : sines[j / 2];
      out[j] = std::fabs(z) <= p.truncation ? z : latent_element(p.seed, index, j, p.truncation);
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
