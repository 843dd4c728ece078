// float32 and bfloat16 weight projections over column panels (aigc/linear.h): each panel
// of kPanel = 64 columns is streamed once per block of up to 6 rows of x (AVX2: once per
// call, in chunks of rows that stay in L1 while the blocks take turns), converted to float32
// in registers and multiply-added in float32, k in order for every row: one accumulator
// and one FMA per output element and k, whatever the block's row count, so a row's result
// never depends on the rows beside it (and the AVX2 and AVX-512 kernels, which do the
// same operations per element, agree bit for bit).
// At m = 1 the kernel is bound by the weight bytes it reads (the point of bf16).
#include <cstring>
#include <vector>

#include "aigc/linear.h"
#include "cpu/next_panel.h"
#include "cpu/row_blocks.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

// Rows per block (cpu/row_blocks.h): AVX-512 6 × 4 accumulators, AVX2 6 × 2 (blocks of 4
// or 5 rows were within noise or slower at m = 32), the portable loops the same blocks.
constexpr int kRows = 6;

// The float32 block (rows × 64) → y, with the bias, clipped to n.
void store_block(const LinearPanelParams& p, const float* acc, int64_t rows, int64_t row0, int64_t col0) {
  const int64_t width = p.n - col0 < kPanel ? p.n - col0 : kPanel;
  for (int64_t r = 0; r < rows; ++r) {
    float* y = p.y + (row0 + r) * p.n + col0;
    for (int64_t c = 0; c < width; ++c) {
      float v = acc[r * kPanel + c];
      if (p.bias) v += p.bias[col0 + c];
      y[c] = v;
    }
  }
}

#if defined(__AVX512F__)

// With AVX-512 a block keeps 6 rows × 4 vectors = 24 accumulators (4 rows was ~10% slower
// at m = 32: fewer FMAs per weight load).
constexpr int64_t kAhead = 16;  // rows of a panel prefetched ahead

inline void load_panel_row(const float* src, __m512 w[4]) {
  for (int j = 0; j < 4; ++j) w[j] = _mm512_loadu_ps(src + 16 * j);
}

// bf16: 32 columns per 64-byte load, widened in place, one operation per vector: the even
// columns shifted into the high halves (w[0], w[2]), the odd ones masked there (w[1], w[3]).
// Widening each 16 columns with vpmovzxwd + vpslld instead put 4 more operations per k on
// the FMAs' ports (p0, p5). The sums come out column-permuted; unpermute() restores them.
inline void load_panel_row(const uint16_t* src, __m512 w[4]) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int j = 0; j < 4; j += 2) {
    const __m512i both = _mm512_loadu_si512(src + 16 * j);
    w[j] = _mm512_castsi512_ps(_mm512_slli_epi32(both, 16));
    w[j + 1] = _mm512_castsi512_ps(_mm512_and_si512(both, high));
  }
}

inline void unpermute(const float*, float*) {}

// A row of sums as load_panel_row(bf16) leaves them: per 32 columns, 16 even then 16 odd.
inline void unpermute(const uint16_t*, float* sums) {
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int c = 0; c < kPanel; c += 32) {
    const __m512 even = _mm512_load_ps(sums + c), odd = _mm512_load_ps(sums + c + 16);
    _mm512_store_ps(sums + c, _mm512_permutex2var_ps(even, first, odd));
    _mm512_store_ps(sums + c + 16, _mm512_permutex2var_ps(even, second, odd));
  }
}

template <typename W, int R, bool kPrefetchNext>
void block(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t col0, NextPanel next_panel) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  const float* x = p.x + row0 * p.k;
  for (int64_t kk = 0; kk < p.k; ++kk) {
    if constexpr (kPrefetchNext) next_panel.issue();
    __m512 w[4];
    // bf16: software prefetch kAhead rows ahead, or at m = 1 one core read ~11 GB/s
    // (14 with it; float32, which moves twice the bytes per row, streams as well without at
    // m = 1, but with more rows its first block still waited on the panel's loads: GPT-2-
    // small float32 batch 32 / 8, alternating builds, 524-536 → 533-562 / 259-261 → 266-283).
    if constexpr (sizeof(W) < 4 || kPrefetchNext) {
      const char* rows_ahead = reinterpret_cast<const char*>(panel + (kk + kAhead) * kPanel);
      for (int line = 0; line < static_cast<int>(sizeof(W)) * kPanel; line += 64) _mm_prefetch(rows_ahead + line, _MM_HINT_T0);
    }
    load_panel_row(panel + kk * kPanel, w);
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * p.k + kk]);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(xb, w[j], acc[r][j]);
    }
  }
  alignas(64) float out[R * kPanel];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) _mm512_store_ps(out + r * kPanel + 16 * j, acc[r][j]);
    unpermute(panel, out + r * kPanel);
  }
  store_block(p, out, R, row0, col0);
}

#elif defined(__AVX2__)

// 16 ymm registers. A block walks a chunk of the panel in strips of V vectors (8V columns)
// with R × V accumulators: 6 rows × 2 vectors = 12, the strip's 2 weight vectors and a
// broadcast of x. One row takes the whole panel width (8 accumulators: the 8 independent
// FMA chains that hide the 4-cycle latency at 2 FMAs per cycle), 2 rows 32 columns, and
// 3 rows 32 columns of float32 (its weights stay in memory operands) but 16 of bf16 (its
// converted weights need registers: 4 vectors spilled, 46 against 74 GFLOP/s).
template <typename W, int R>
constexpr int kStripVectors = R == 1 ? 8 : R == 2 ? 4 : R == 3 && sizeof(W) == 4 ? 4 : 2;

// float32: V vectors of 8 consecutive columns.
template <int V>
inline void load_strip(const float* src, __m256 w[V]) {
  for (int j = 0; j < V; ++j) w[j] = _mm256_loadu_ps(src + 8 * j);
}

// bf16: one 256-bit load holds 16 columns, column 2i in the low half of 32-bit lane i and
// column 2i + 1 in the high half: a shift and a mask make two float32 vectors (even
// columns, odd columns) with 2 instructions per 16 weights — vpmovzxwd + shift needs 4.
// unpermute puts the sums back in column order once per panel.
template <int V>
inline void load_strip(const uint16_t* src, __m256 w[V]) {
  static_assert(V % 2 == 0, "bf16 strips hold pairs of vectors");
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int j = 0; j < V; j += 2) {
    const __m256i both = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 8 * j));
    w[j] = _mm256_castsi256_ps(_mm256_slli_epi32(both, 16));
    w[j + 1] = _mm256_castsi256_ps(_mm256_and_si256(both, high));
  }
}

inline void unpermute(const float*, float*) {}

// bf16 sums come in (even columns, odd columns) vector pairs: back to column order.
inline void unpermute(const uint16_t*, float* sums) {
  for (int c = 0; c < kPanel; c += 16) {
    const __m256 even = _mm256_load_ps(sums + c), odd = _mm256_load_ps(sums + c + 8);
    // Per 128-bit lane: columns 0-3 | 8-11 and 4-7 | 12-15, then the halves swapped.
    const __m256 low = _mm256_unpacklo_ps(even, odd), high = _mm256_unpackhi_ps(even, odd);
    _mm256_store_ps(sums + c, _mm256_permute2f128_ps(low, high, 0x20));
    _mm256_store_ps(sums + c + 8, _mm256_permute2f128_ps(low, high, 0x31));
  }
}

// Rows of a panel per pass: 16 KB, which stays in L1 while every row block of the call
// takes its turn, instead of each block reading the whole panel again from L2 or L3 (m = 8
// at 768 × 50257, weights from memory: float32 31 against 27 GFLOP/s on one core).
template <typename W>
constexpr int64_t kChunk = 16384 / (kPanel * sizeof(W));

// The next chunk, in address order, prefetched while this one is multiplied: each row block
// of the call takes its share (rows / m of the bytes) spread evenly over its iterations, so
// that memory is kept busy through the whole chunk. Prefetching each strip's own columns 32
// rows ahead, in bursts by the first block only, left memory idle half the time (one core,
// weights from memory, 768 × 3072: m = 8 6.7 → 13.6 GB/s, m = 32 56 → 81 GFLOP/s).
struct Prefetch {
  const char* next;  // this block's share of the next chunk
  int64_t step;      // bytes of it per iteration (kk, strip)
};

template <typename W, int R>
Prefetch share_of_next(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t k0, int64_t k1) {
  const int64_t bytes = (k1 - k0) * kPanel * static_cast<int64_t>(sizeof(W));
  const int64_t iterations = (k1 - k0) * (kPanel / (8 * kStripVectors<W, R>));
  return {reinterpret_cast<const char*>(panel + k1 * kPanel) + bytes * row0 / p.m, bytes * R / p.m / iterations};
}

// Rows kk in [k0, k1) of the panel for rows [row0, row0 + R) of x, added to their running
// sums (R, kPanel), kept in register order between chunks (exact: a float stored and
// loaded again is the same float); k0 = 0 starts them at zero.
template <typename W, int R>
void block(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t k0, int64_t k1, float* sums) {
  constexpr int V = kStripVectors<W, R>;
  // One pointer per row, indexed by kk: each broadcast is a plain load, where x + r * k + kk
  // cost an address computation per row (6 rows, from L3: 65 → 77 GFLOP/s on one core).
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = p.x + (row0 + r) * p.k;
  Prefetch ahead = share_of_next<W, R>(p, panel, row0, k0, k1);
  for (int c0 = 0; c0 < kPanel; c0 += 8 * V) {
    __m256 acc[R][V];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) acc[r][j] = k0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(sums + r * kPanel + c0 + 8 * j);
    const W* src = panel + k0 * kPanel + c0;
    for (int64_t kk = k0; kk < k1; ++kk, src += kPanel, ahead.next += ahead.step) {
      for (int64_t line = 0; line < ahead.step; line += 64) _mm_prefetch(ahead.next + line, _MM_HINT_T0);
      __m256 w[V];
      load_strip<V>(src, w);
      for (int r = 0; r < R; ++r) {
        const __m256 xb = _mm256_broadcast_ss(x[r] + kk);
        for (int j = 0; j < V; ++j) acc[r][j] = _mm256_fmadd_ps(xb, w[j], acc[r][j]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) _mm256_store_ps(sums + r * kPanel + c0 + 8 * j, acc[r][j]);
  }
}

template <typename W>
void panels(const LinearPanelParams& p, int64_t first, int64_t last) {
  // (m, kPanel) running sums of one panel, 32-byte aligned.
  struct alignas(32) Lanes {
    float lane[8];
  };
  thread_local std::vector<Lanes> storage;
  if (static_cast<int64_t>(storage.size()) < p.m * kPanel / 8) storage.resize(p.m * kPanel / 8);
  float* sums = storage.data()->lane;
  const W* weights = static_cast<const W*>(p.panels);
  for (int64_t panel = first; panel < last; ++panel) {
    const W* w = weights + panel * p.k * kPanel;
    for (int64_t k0 = 0; k0 < p.k; k0 += kChunk<W>) {
      const int64_t k1 = k0 + kChunk<W> < p.k ? k0 + kChunk<W> : p.k;
      for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) {
        block<W, decltype(rows)::value>(p, w, row, k0, k1, sums + row * kPanel);
      });
    }
    for (int64_t r = 0; r < p.m; ++r) unpermute(w, sums + r * kPanel);
    store_block(p, sums, p.m, 0, panel * kPanel);
  }
}

#else

inline float to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}
inline float to_float(float value) { return value; }

template <typename W, int R>
void block(const LinearPanelParams& p, const W* panel, int64_t row0, int64_t col0) {
  float acc[R * kPanel] = {};
  float w[kPanel];
  const float* x = p.x + row0 * p.k;
  for (int64_t kk = 0; kk < p.k; ++kk) {
    for (int c = 0; c < kPanel; ++c) w[c] = to_float(panel[kk * kPanel + c]);
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * p.k + kk];
      for (int c = 0; c < kPanel; ++c) acc[r * kPanel + c] += xr * w[c];
    }
  }
  store_block(p, acc, R, row0, col0);
}

#endif

#if defined(__AVX512F__)
template <typename W>
void panels(const LinearPanelParams& p, int64_t first, int64_t last) {
  const W* weights = static_cast<const W*>(p.panels);
  const int64_t panel_bytes = p.k * kPanel * static_cast<int64_t>(sizeof(W));
  for (int64_t panel = first; panel < last; ++panel) {
    const W* w = weights + panel * p.k * kPanel;
    // Not for float32 at m = 1: GPT-2-small at batch 1 decoded at 50-51 tokens/s with it
    // against 55-56 without (one alternating run). bf16 at m = 1 read its weights from
    // memory at 23.5-24.0 GB/s with it against 19.8-20.3 (768 × 3072, 2 Xeon cores), though
    // batch 1 end to end stayed within the noise (~100 tokens/s either way).
    const bool prefetch = panel + 1 < last && (sizeof(W) < 4 || p.m > 1);
    const char* next = reinterpret_cast<const char*>(w + p.k * kPanel);
    for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) {
      constexpr int R = decltype(rows)::value;
      if (prefetch) {
        block<W, R, true>(p, w, row, panel * kPanel, NextPanel(next, panel_bytes, row, R, p.m, p.k));
      } else {
        block<W, R, false>(p, w, row, panel * kPanel, NextPanel());
      }
    });
  }
}
#elif !defined(__AVX2__)
template <typename W>
void panels(const LinearPanelParams& p, int64_t first, int64_t last) {
  const W* weights = static_cast<const W*>(p.panels);
  for (int64_t panel = first; panel < last; ++panel) {
    const W* w = weights + panel * p.k * kPanel;
    for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) { block<W, decltype(rows)::value>(p, w, row, panel * kPanel); });
  }
}
#endif

}  // namespace

void linear_f32_panels(const LinearPanelParams& p, int64_t first, int64_t last) { panels<float>(p, first, last); }
void linear_bf16_panels(const LinearPanelParams& p, int64_t first, int64_t last) { panels<uint16_t>(p, first, last); }

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
