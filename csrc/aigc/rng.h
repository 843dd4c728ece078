// Counter-based random numbers: Philox4x64-10 (Salmon et al., SC'11, "Parallel random
// numbers: as easy as 1, 2, 3"), the same generator as numpy.random.Philox, so numpy is an
// independent reference for the raw stream. A draw is a pure function of (key, counter):
// key = (request seed, stream tag), counter = (what is being drawn, where), so a value
// never depends on which thread, batch or chunk computes it. Header-only: host and device.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define AIGC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AIGC_HOST_DEVICE inline
#endif

namespace aigc {

// Stream tags keep the draws of different consumers of one seed apart.
constexpr uint64_t kLatentStream = 0x4c4154454e54ull;  // "LATENT"

struct Philox4x64Out {
  uint64_t v[4];
};

AIGC_HOST_DEVICE uint64_t mul_hi_lo(uint64_t a, uint64_t b, uint64_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umul64hi(a, b);
  return a * b;
#else
  const unsigned __int128 product = static_cast<unsigned __int128>(a) * b;
  *hi = static_cast<uint64_t>(product >> 64);
  return static_cast<uint64_t>(product);
#endif
}

AIGC_HOST_DEVICE Philox4x64Out philox4x64(uint64_t c0, uint64_t c1, uint64_t c2, uint64_t c3,
                                          uint64_t k0, uint64_t k1) {
  constexpr uint64_t kM0 = 0xD2E7470EE14C6C93ull, kM1 = 0xCA5A826395121157ull;
  constexpr uint64_t kW0 = 0x9E3779B97F4A7C15ull, kW1 = 0xBB67AE8584CAA73Bull;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint64_t hi0, hi1;
    const uint64_t lo0 = mul_hi_lo(kM0, c0, &hi0);
    const uint64_t lo1 = mul_hi_lo(kM1, c2, &hi1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform double in [0, 1) from the top 53 bits.
AIGC_HOST_DEVICE double uniform_from_bits(uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// Box-Muller on a pair of 64-bit words: out[0] is the cosine branch, out[1] the sine
// branch. 1 - u lies in (0, 1], so the logarithm is finite (u = 0 gives radius 0).
AIGC_HOST_DEVICE void normal_pair(uint64_t radius_bits, uint64_t angle_bits, double out[2]) {
  const double radius = sqrt(-2.0 * log(1.0 - uniform_from_bits(radius_bits)));
  const double angle = 6.283185307179586 * uniform_from_bits(angle_bits);
  out[0] = radius * cos(angle);
  out[1] = radius * sin(angle);
}

// One philox call gives four normals: lanes 0,1 from words (0,1), lanes 2,3 from (2,3).
AIGC_HOST_DEVICE void normal_quad(const Philox4x64Out& r, float out[4]) {
  for (int pair = 0; pair < 2; ++pair) {
    double z[2];
    normal_pair(r.v[2 * pair], r.v[2 * pair + 1], z);
    out[2 * pair] = static_cast<float>(z[0]);
    out[2 * pair + 1] = static_cast<float>(z[1]);
  }
}

// The one lane of normal_quad a single element needs (the GPU computes one per thread).
AIGC_HOST_DEVICE float normal_lane(const Philox4x64Out& r, int lane) {
  double z[2];
  normal_pair(r.v[lane < 2 ? 0 : 2], r.v[lane < 2 ? 1 : 3], z);
  return static_cast<float>(z[lane % 2]);
}

}  // namespace aigc
