// See aigc/linear.h: weights converted once at load into column panels (make_linear), and
// the OpenBLAS path (linear_forward_blas), split over the thread pool by panels so every
// thread reads its own share of the weights. The own kernels' entry point, linear_forward,
// is cpu/linear_dispatch.cc's (the ISA dispatch lives under cpu/).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "aigc/linear.h"
#include "runtime/thread_pool.h"

namespace aigc {
namespace {

// OpenBLAS runs single-threaded inside our pool's threads (two pools would fight for cores).
void init_openblas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

}  // namespace

uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

Linear make_linear(const float* w, int64_t row_stride, int64_t col_stride, const float* bias, int64_t k,
                   int64_t n, WeightDtype dtype) {
  if (k < 1 || n < 1) throw std::invalid_argument("linear: k and n must be >= 1");
  Linear layer;
  layer.k = k;
  layer.n = n;
  layer.dtype = dtype;
  if (bias) layer.bias.assign(bias, bias + n);
  auto at = [&](int64_t r, int64_t c) { return w[r * row_stride + c * col_stride]; };
  const int64_t panels = linear_panel_count(n);
  if (dtype == WeightDtype::kFloat32) {
    layer.w_f32.assign(panels * k * kPanel, 0.0f);
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < k; ++r) layer.w_f32[((c / kPanel) * k + r) * kPanel + c % kPanel] = at(r, c);
    return layer;
  }
  if (dtype == WeightDtype::kBFloat16) {
    layer.w_bf16.assign(panels * k * kPanel, 0);
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < k; ++r) layer.w_bf16[((c / kPanel) * k + r) * kPanel + c % kPanel] = float_to_bf16(at(r, c));
    return layer;
  }
  // int8, symmetric, one scale per output column: the largest |w| of the column maps to 127.
  const int64_t k4 = (k + 3) / 4;
  layer.w_i8.assign(panels * k4 * kPanel * 4, 0);
  layer.scale.assign(panels * kPanel, 0.0f);
  layer.w_sum.assign(panels * kPanel, 0);
  for (int64_t c = 0; c < n; ++c) {
    float largest = 0.0f;
    for (int64_t r = 0; r < k; ++r) largest = std::fmax(largest, std::fabs(at(r, c)));
    const float scale = largest > 0.0f ? largest / 127.0f : 1.0f;
    layer.scale[c] = scale;
    for (int64_t r = 0; r < k; ++r) {
      const float q = std::fmax(-127.0f, std::fmin(127.0f, std::nearbyint(at(r, c) / scale)));
      layer.w_i8[(((c / kPanel) * k4 + r / 4) * kPanel + c % kPanel) * 4 + r % 4] = static_cast<int8_t>(q);
      layer.w_sum[c] += static_cast<int32_t>(q);
    }
  }
  return layer;
}

void linear_forward_blas(const Linear& layer, const float* x, int64_t m, float* y) {
  if (layer.dtype != WeightDtype::kFloat32) return linear_forward(layer, x, m, y);
  if (m <= 0) return;
  init_openblas();
  parallel_for(linear_panel_count(layer.n), [&](int64_t first, int64_t last) {
    for (int64_t panel = first; panel < last; ++panel) {
      const int64_t c0 = panel * kPanel, width = std::min(kPanel, layer.n - c0);
      // A panel is a (k, kPanel) row-major matrix; its padding columns are never written.
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(width),
                        static_cast<int>(layer.k), 1.0f, x, static_cast<int>(layer.k),
                        layer.w_f32.data() + panel * layer.k * kPanel, static_cast<int>(kPanel), 0.0f, y + c0,
                        static_cast<int>(layer.n));
      if (!layer.bias.empty()) {
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = c0; c < c0 + width; ++c) y[r * layer.n + c] += layer.bias[c];
      }
    }
  });
}

}  // namespace aigc
