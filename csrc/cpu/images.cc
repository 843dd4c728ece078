// Generator output to displayable pixels: images (n, C, H, W) float32 in [-1, 1] become
// (n, H, W, C) uint8 as clamp(round_half_even((x + 1) * 127.5), 0, 255), the float32
// arithmetic numpy does. Non-finite inputs are written as 0 and counted, so the caller
// can report a broken model instead of showing silently wrong pixels.
#include <cmath>

#include "aigc/latent.h"

namespace aigc {

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23

int64_t images_to_uint8_cpu(const ToUint8Params& p) {
  const int64_t plane = p.height * p.width;
  int64_t nonfinite = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    const float* image = p.images + i * p.channels * plane;
    uint8_t* out = p.out + i * plane * p.channels;
    for (int64_t c = 0; c < p.channels; ++c) {
      const float* src = image + c * plane;
      for (int64_t k = 0; k < plane; ++k) {
        const float x = src[k];
        // Branch-free so that the compiler vectorises the loop: every pixel is computed,
        // non-finite ones are then replaced by 0 and counted.
        const bool finite = std::isfinite(x);
        nonfinite += !finite;
        const float clamped = std::fmin(255.0f, std::fmax(0.0f, (x + 1.0f) * 127.5f));
        // Adding and subtracting 1.5·2²³ rounds half to even for |v| < 2²², like
        // nearbyint, which is a libm call in the portable x86-64 build (no SSE4.1).
        const uint8_t value = finite ? static_cast<uint8_t>((clamped + kRoundMagic) - kRoundMagic) : 0;
        out[k * p.channels + c] = value;
      }
    }
  }
  return nonfinite;
}

}  // namespace aigc
