// Latent sampling for the image generators, and the post-processing of their output.
// sample_latent: out (n, dim) float32; row r is sample index first_index + r of `seed`,
//   element j a standard normal drawn from Philox counter (j / 4, index, round, 0), key
//   (seed, kLatentStream) — so a sample is the same whatever n, chunking or device.
// slerp: spherical interpolation between two latents; images_to_uint8: NCHW [-1, 1] -> NHWC.
#pragma once

#include <cmath>
#include <cstdint>

#include "aigc/isa.h"
#include "aigc/rng.h"

namespace aigc {

// Truncation trick by resampling: an element with |z| > truncation is drawn again from
// round + 1 of its counter. After kMaxResampleRounds rejections (only reachable for tiny
// truncations, where acceptance is < 1%) it falls back to a uniform draw on
// [-truncation, truncation]: there the normal density is flat to within 1 - exp(-t²/2).
constexpr int kMaxResampleRounds = 1024;

struct LatentParams {
  float* out;            // (n, dim)
  int64_t n;
  int64_t dim;
  uint64_t seed;
  uint64_t first_index;  // sample index of row 0
  double truncation;     // > 0; +inf = off
};

struct SlerpParams {
  const float* a;   // (dim,)
  const float* b;   // (dim,)
  const float* t;   // (n,) fractions, 0 gives a and 1 gives b
  float* out;       // (n, dim)
  int64_t n;
  int64_t dim;
};

struct ToUint8Params {
  const float* images;  // (n, channels, height, width), [-1, 1]
  uint8_t* out;         // (n, height, width, channels)
  int64_t n;
  int64_t channels;
  int64_t height;
  int64_t width;
};

// Element `j` of sample `index`: the one definition both the CPU and CUDA code use.
AIGC_HOST_DEVICE float latent_element(uint64_t seed, uint64_t index, int64_t j, double truncation) {
  const uint64_t group = static_cast<uint64_t>(j) / 4;
  const int lane = static_cast<int>(j % 4);
  for (uint64_t round = 0; round < kMaxResampleRounds; ++round) {
    const Philox4x64Out r = philox4x64(group, index, round, 0, seed, kLatentStream);
    const float z = normal_lane(r, lane);
    if (fabsf(z) <= truncation) return z;
  }
  const Philox4x64Out r = philox4x64(group, index, kMaxResampleRounds, 0, seed, kLatentStream);
  const float z = static_cast<float>(truncation * (2.0 * uniform_from_bits(r.v[lane]) - 1.0));
  return fminf(fmaxf(z, static_cast<float>(-truncation)), static_cast<float>(truncation));
}

// Threaded over rows; the dispatchers live in cpu/dispatch.cc.
void sample_latent_cpu(const LatentParams& p);
void slerp_cpu(const SlerpParams& p);
// Returns how many input values were not finite (they are written as 0).
int64_t images_to_uint8_cpu(const ToUint8Params& p);
// Rows [first, last) of sample_latent_cpu, the Box-Muller step in the build for `isa`.
void sample_latent_rows(const LatentParams& p, int64_t first, int64_t last, Isa isa);

#ifdef AIGC_WITH_CUDA
// Host arrays in and out; device memory is managed inside. Throw std::runtime_error.
int cuda_device_count();
void sample_latent_cuda(const LatentParams& p);
int64_t images_to_uint8_cuda(const ToUint8Params& p);
#endif

}  // namespace aigc

// Images [first, last) of images_to_uint8_cpu, one version per ISA (cpu/images.cc).
AIGC_ISA_DECLARE(int64_t, images_to_uint8, (const ToUint8Params& p, int64_t first, int64_t last))
// rng.h's normal_pair over n pairs of 64-bit words, vectorised (cpu/normals.cc).
AIGC_ISA_DECLARE(void, box_muller, (const uint64_t* radius_bits, const uint64_t* angle_bits, int64_t n,
                                    float* cos_out, float* sin_out))
