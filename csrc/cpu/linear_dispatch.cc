// The CPU entry point of the projections (aigc/linear.h): y (m, n) = x (m, k) · W + bias,
// split over the thread pool by column panels, each thread calling the version of the
// panel kernel built for the active ISA (cpu/linear.cc, cpu/linear_int8.cc). int8 layers
// first quantise x per row (and, on avx2, widen it to int16 once per call). No math here.
#include <algorithm>
#include <vector>

#include "aigc/isa.h"
#include "aigc/linear.h"
#include "runtime/thread_pool.h"

namespace aigc {
namespace {

constexpr int64_t kQuantizeGrain = 64;  // rows per task of quantize_rows
// A projection's tasks: per thread, as many as give each at least kTaskPanels panels, and
// at least one (the pool itself takes up to 4 per thread). A task's first panel comes from
// memory with nothing ahead to prefetch it (each panel's blocks prefetch the task's next
// one); cut into 8 tasks, GPT-2-small's 12-panel projections (768 columns) ran mostly such
// panels. With 2 tasks of 6, batch 32, alternating builds on the AMX Xeon: float32 528-538
// → 566-581 tokens/s, bf16 645 → 682, int8 1,429-1,444 → 1,464-1,488; with another process
// taking 2 ms of every 10 on one core, float32 430-435 → 467 (fewer tasks to take over, but
// each runs warm).
constexpr int64_t kTaskPanels = 6;

int64_t panel_grain(int64_t panels) {
  const int64_t threads = num_threads();
  const int64_t per_thread = std::max<int64_t>(panels / (threads * kTaskPanels), 1);
  return (panels + threads * per_thread - 1) / (threads * per_thread);
}

}  // namespace

void linear_forward(const Linear& layer, const float* x, int64_t m, float* y) {
  if (m <= 0) return;
  LinearPanelParams p{};
  p.x = x;
  p.m = m;
  p.k = layer.k;
  p.n = layer.n;
  p.bias = layer.bias.empty() ? nullptr : layer.bias.data();
  p.y = y;
  const Isa isa = active_isa();
  const int64_t panels = linear_panel_count(layer.n), grain = panel_grain(panels);
  switch (layer.dtype) {
    case WeightDtype::kFloat32:
      p.panels = layer.w_f32.data();
      return parallel_for(
          panels, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, linear_f32_panels, p, first, last); }, grain);
    case WeightDtype::kBFloat16:
      p.panels = layer.w_bf16.data();
      return parallel_for(
          panels, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, linear_bf16_panels, p, first, last); }, grain);
    case WeightDtype::kInt8: {
      // Reused buffers per thread: the decoder calls this every layer of every step. xq starts
      // on a cache line, as the panels do: AMX loads its rows as the A tiles' rows.
      thread_local CacheLineVector<uint8_t> xq;
      thread_local std::vector<float> x_scale;
      LinearInt8Params q{};
      q.k4 = (layer.k + 3) / 4;
      if (static_cast<int64_t>(xq.size()) < m * q.k4 * 4) xq.resize(m * q.k4 * 4);
      if (static_cast<int64_t>(x_scale.size()) < m) x_scale.resize(m);
      // Rows in parallel where there are many (a prompt), else on this thread. Serial, the
      // pass held the other thread idle: on the AMX Xeon, 768 × 3072 at m = 512 went
      // 1,119-1,162 → 935-1,094 µs and GPT-2-small's 512-token int8 prompt 4,473-4,842 →
      // 4,915-5,304 tokens/s (alternating builds).
      uint8_t* rows_q = xq.data();
      float* scales = x_scale.data();
      parallel_for(m, [&](int64_t first, int64_t last) {
        AIGC_ISA_CALL(isa, quantize_rows, x + first * layer.k, last - first, layer.k, q.k4, rows_q + first * q.k4 * 4,
                      scales + first);
      }, kQuantizeGrain);
      q.xq = xq.data();
      q.x_scale = x_scale.data();
      if (isa == Isa::kAvx2) {
        thread_local std::vector<int16_t> xw;
        if (static_cast<int64_t>(xw.size()) < m * q.k4 * 4) xw.resize(m * q.k4 * 4);
        avx2::widen_rows(xq.data(), m, q.k4, xw.data());
        q.xw = xw.data();
      }
      q.m = m;
      q.n = layer.n;
      q.panels = layer.w_i8.data();
      q.w_scale = layer.scale.data();
      q.w_sum = layer.w_sum.data();
      q.bias = p.bias;
      q.y = y;
      q.vnni = cpu_has_avx512_vnni();
      q.amx = q.vnni && cpu_has_amx_int8();
      return parallel_for(
          panels, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, linear_int8_panels, q, first, last); }, grain);
    }
  }
}

}  // namespace aigc
