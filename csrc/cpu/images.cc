// Generator output to displayable pixels: images (n, C, H, W) float32 in [-1, 1] become
// (n, H, W, C) uint8 as clamp(round_half_even((x + 1) * 127.5), 0, 255), the float32
// arithmetic numpy does. Non-finite inputs are written as 0 and counted, so the caller
// can report a broken model instead of showing silently wrong pixels.
// Compiled once per ISA (aigc/isa.h); the loops are written for the auto-vectoriser.
#include <cmath>

#include "aigc/latent.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23

// One plane of `count` values to `out[k * stride]`. Branch-free so that it vectorises:
// every pixel is computed, non-finite ones are then replaced by 0 and counted.
template <int kStride>
int64_t convert_plane(const float* src, uint8_t* out, int64_t count, int64_t stride) {
  const int64_t step = kStride > 0 ? kStride : stride;
  int32_t nonfinite = 0;
  for (int64_t k = 0; k < count; ++k) {
    const float x = src[k];
    // x - x is 0 for finite x and NaN otherwise: an isfinite the vectoriser understands.
    const bool finite = (x - x) == 0.0f;
    nonfinite += !finite;
    const float scaled = (x + 1.0f) * 127.5f;
    // Ternaries, not fmin/fmax: those carry NaN rules that keep the loop scalar.
    const float clamped = scaled < 0.0f ? 0.0f : (scaled > 255.0f ? 255.0f : scaled);
    // Adding and subtracting 1.5·2²³ rounds half to even for |v| < 2²², like nearbyint,
    // which is a libm call in the generic x86-64 build (no SSE4.1).
    const int32_t rounded = static_cast<int32_t>((clamped + kRoundMagic) - kRoundMagic);
    out[k * step] = static_cast<uint8_t>(finite ? rounded : 0);
  }
  return nonfinite;
}

}  // namespace

int64_t images_to_uint8(const ToUint8Params& p, int64_t first, int64_t last) {
  const int64_t plane = p.height * p.width;
  int64_t nonfinite = 0;
  for (int64_t i = first; i < last; ++i) {
    const float* image = p.images + i * p.channels * plane;
    uint8_t* out = p.out + i * plane * p.channels;
    for (int64_t c = 0; c < p.channels; ++c) {
      // One channel is the common case (digits): a contiguous store the compiler vectorises.
      nonfinite += p.channels == 1 ? convert_plane<1>(image, out, plane, 1)
                                   : convert_plane<0>(image + c * plane, out + c, plane, p.channels);
    }
  }
  return nonfinite;
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
