// int8 × int8 projections (aigc/linear.h): activations quantised per row to unsigned
// 8 bits with zero point 128, weights per output column to signed 8 bits, products summed
// exactly in int32 — with AVX512-VNNI one vpdpbusd does 64 multiply-adds, 4× the float32
// FMAs, so a decode step is bound by the weight bytes only. Dequantised at the end:
//   y = (Σ xq·wq − 128·Σ wq) · x_scale[row] · w_scale[col] + bias.
// Without VNNI (the avx2 build) vpmaddwd on int16-widened bytes keeps the sums exact at
// ~1.6× the float32 FMA rate. The sums are exact, so every ISA gives the same y and a row
// never depends on the others.
#include <cmath>
#include <cstring>
#include <vector>

#include "aigc/linear.h"
#include "cpu/amx_tiles.h"
#include "cpu/next_panel.h"
#include "cpu/row_blocks.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

// Rows per block (cpu/row_blocks.h). AVX-512: 6 × 4 accumulators + 4 weight vectors fit
// the 32 registers. AVX2: 6 × 2 (below); blocks of 4 or 5 rows were 2-5% slower at m = 32.
constexpr int kRows = 6;

void store_block(const LinearInt8Params& p, const int32_t* acc, int64_t rows, int64_t row0, int64_t col0) {
  const int64_t width = p.n - col0 < kPanel ? p.n - col0 : kPanel;
  for (int64_t r = 0; r < rows; ++r) {
    float* y = p.y + (row0 + r) * p.n + col0;
    const float x_scale = p.x_scale[row0 + r];
    for (int64_t c = 0; c < width; ++c) {
      const int32_t exact = acc[r * kPanel + c] - 128 * p.w_sum[col0 + c];
      float v = static_cast<float>(exact) * (x_scale * p.w_scale[col0 + c]);
      if (p.bias) v += p.bias[col0 + c];
      y[c] = v;
    }
  }
}

#if defined(__AVX512F__)
typedef int32_t Int32x16 __attribute__((vector_size(64)));

template <int R, bool kPrefetchNext>
__attribute__((target("avx512vnni"))) void block_vnni(const LinearInt8Params& p, const int8_t* panel, int64_t row0,
                                                      int64_t col0, NextPanel next_panel) {
  // The accumulators as a plain GCC vector type, not __m512i: __m512i is declared may_alias,
  // and GCC 12 then kept this array in memory as well as in registers, a 64-byte store and two
  // moves beside each vpdpbusd of the loop (~30 % of the vpdpbusd peak at m = 32 on a Xeon).
  Int32x16 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = Int32x16{};
  const int32_t* x = reinterpret_cast<const int32_t*>(p.xq + row0 * p.k4 * 4);
  for (int64_t g = 0; g < p.k4; ++g) {
    if constexpr (kPrefetchNext) next_panel.issue();
    // 16 columns × 4 consecutive k per vector: the layout vpdpbusd multiplies.
    __m512i w[4];
    for (int j = 0; j < 4; ++j) w[j] = _mm512_loadu_si512(panel + (g * kPanel + 16 * j) * 4);
    for (int r = 0; r < R; ++r) {
      const __m512i xb = _mm512_set1_epi32(x[r * p.k4 + g]);
      for (int j = 0; j < 4; ++j) acc[r][j] = Int32x16(_mm512_dpbusd_epi32(__m512i(acc[r][j]), xb, w[j]));
    }
  }
  alignas(64) int32_t out[R * kPanel];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) _mm512_store_si512(out + r * kPanel + 16 * j, __m512i(acc[r][j]));
  store_block(p, out, R, row0, col0);
}

// AMX: 16 rows × 64 columns per tile pass, the same exact int32 sums as vpdpbusd. The panel
// layout (per group of 4 k: 64 columns × 4 bytes) is already the B tiles' (16 groups × 16
// columns × 4 k, a row every 256 bytes), and the rows of xq the A tile's (16 rows × 64 k).
// Tiles 0-3: the sums of columns 16j..16j+15; 4: x; 5: weights. Used where k4 is a
// multiple of 16 (every GPT-2 and LSTM width here), else the VNNI blocks take the rows.
// Reading the tiles, not tdpbusd, sets the pace: on one core of a 2-core AMX Xeon a tdpbusd
// took 20 / 28 / 127 cycles with its B tile from L1 / L2 / memory (16 at the peak), and a
// decode step streams its weights from memory. (Three B tiles in turn, so that a load need
// not wait for the tdpbusd reading the last one, ran no faster.)

__attribute__((target("amx-tile,amx-int8"))) void block_amx(const LinearInt8Params& p, const int8_t* panel,
                                                              int64_t row0, int64_t col0) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const uint8_t* x = p.xq + row0 * p.k4 * 4;
  for (int64_t g = 0; g < p.k4; g += kAmxTileGroups) {
    _tile_loadd(4, x + g * 4, p.k4 * 4);
    _tile_loadd(5, panel + (g * kPanel + 0) * 4, kPanel * 4);
    _tile_dpbusd(0, 4, 5);
    _tile_loadd(5, panel + (g * kPanel + 16) * 4, kPanel * 4);
    _tile_dpbusd(1, 4, 5);
    _tile_loadd(5, panel + (g * kPanel + 32) * 4, kPanel * 4);
    _tile_dpbusd(2, 4, 5);
    _tile_loadd(5, panel + (g * kPanel + 48) * 4, kPanel * 4);
    _tile_dpbusd(3, 4, 5);
  }
  alignas(64) int32_t out[kAmxTileRows * kPanel];
  _tile_stored(0, out, kPanel * 4);
  _tile_stored(1, out + 16, kPanel * 4);
  _tile_stored(2, out + 32, kPanel * 4);
  _tile_stored(3, out + 48, kPanel * 4);
  store_block(p, out, kAmxTileRows, row0, col0);
}

#elif defined(__AVX2__)

// Exact without VNNI: weights sign-extended to int16 (vpmovsxbw), activations zero-extended
// to int16 once per call, and vpmaddwd, which multiplies 16 int16 pairs and adds neighbours
// into 8 int32. On the 4-k layout, 4 columns × 4 k of weights times the row's 4 activations
// broadcast (64 bits) give 2 partial sums per column, each |·| ≤ 2 · 255 · 127, added with
// vpaddd; the two halves are added at the end of each chunk. (vpmaddubsw would take the
// bytes as they are, but its int16 pair sums saturate: 2 · 255 · 127 > 32767.)
// 16 ymm registers: R rows × S weight vectors (4 columns each) of accumulators, the S
// weight vectors, the broadcast and a product: 6 × 2 + 2 + 2 = 16; two rows take 16
// columns. One row takes all 64 (16 accumulators, two of which GCC keeps in L1; its
// weights are used once, so none are held): the panel is read as one sequential stream,
// ~24 GB/s from memory on one core where two strips of 32 columns read ~13.
template <int R>
constexpr int kStripVectors = R == 1 ? 16 : R == 2 ? 4 : 2;
// Groups of 4 k per pass: 16 KB of the panel, which stays in L1 while every row block of
// the call takes its turn (as in cpu/linear.cc).
constexpr int64_t kChunk = 64;
// Groups prefetched ahead, by each strip for its own lines (cpu/linear.cc's prefetch of the
// next chunk shared by the row blocks: one core, weights from memory, 6% faster at m = 8
// but 20% slower at m = 32, where this kernel is bound by its multiply-adds, not memory).
constexpr int64_t kAhead = 32;

// 16 weight bytes (4 columns × 4 k) as int16.
inline __m256i load_widened(const int8_t* src) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
}

// A row's 4 activations of one group (int16) in every 64-bit lane.
inline __m256i broadcast4(const int16_t* x) {
  int64_t four;
  std::memcpy(&four, x, sizeof four);
  return _mm256_set1_epi64x(four);
}

// Groups [g0, g1) of the panel for R rows of x (xw: their activations as (k4, R, 4) int16),
// added to their column sums (sums: (R, kPanel)).
template <int R>
void block(const int8_t* panel, const int16_t* xw, int64_t g0, int64_t g1, int32_t* sums) {
  constexpr int S = kStripVectors<R>;
  for (int c0 = 0; c0 < kPanel; c0 += 4 * S) {
    __m256i acc[R][S];
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s) acc[r][s] = _mm256_setzero_si256();
    const int8_t* src = panel + (g0 * kPanel + c0) * 4;
    for (int64_t g = g0; g < g1; ++g, src += kPanel * 4) {
      const char* ahead = reinterpret_cast<const char*>(src + kAhead * kPanel * 4);
      for (int line = 0; line < 16 * S; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
      // An empty asm that wants each sum in a register, there: without it GCC 12 issues
      // every product first and spills the accumulators (one core, 6 rows: 45 → 76 GMAC/s;
      // one row: 55 → 65, with each weight vector multiplied as soon as it is converted).
      if constexpr (R == 1) {
        const __m256i xb = broadcast4(xw + g * 4);
        for (int s = 0; s < S; ++s) {
          acc[0][s] = _mm256_add_epi32(acc[0][s], _mm256_madd_epi16(xb, load_widened(src + 16 * s)));
          __asm__("" : "+x"(acc[0][s]));
        }
      } else {
        __m256i w[S];
        for (int s = 0; s < S; ++s) w[s] = load_widened(src + 16 * s);
        for (int r = 0; r < R; ++r) {
          const __m256i xb = broadcast4(xw + (g * R + r) * 4);
          for (int s = 0; s < S; ++s) {
            acc[r][s] = _mm256_add_epi32(acc[r][s], _mm256_madd_epi16(xb, w[s]));
            __asm__("" : "+x"(acc[r][s]));
          }
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int s = 0; s < S; ++s) {
        // Lanes (2c, 2c + 1) hold column c's two halves: one horizontal add, 4 columns.
        const __m128i four = _mm_hadd_epi32(_mm256_castsi256_si128(acc[r][s]), _mm256_extracti128_si256(acc[r][s], 1));
        __m128i* out = reinterpret_cast<__m128i*>(sums + r * kPanel + c0 + 4 * s);
        _mm_storeu_si128(out, g0 == 0 ? four : _mm_add_epi32(_mm_loadu_si128(out), four));
      }
    }
  }
}

// Rows [row0, row0 + R) of xq → (k4, R, 4) int16: a block's 4-activation broadcasts for
// one group side by side, at fixed offsets from one pointer.
template <int R>
void regroup(const uint8_t* xq, int64_t k4, int16_t* out) {
  const int64_t width = k4 * 4;
  for (int r = 0; r < R; ++r) {
    const uint8_t* row = xq + r * width;
    int64_t g = 0;
    for (; g + 4 <= k4; g += 4) {
      const __m256i wide = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + g * 4)));
      const __m128i low = _mm256_castsi256_si128(wide), high = _mm256_extracti128_si256(wide, 1);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + ((g + 0) * R + r) * 4), low);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + ((g + 1) * R + r) * 4), _mm_unpackhi_epi64(low, low));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + ((g + 2) * R + r) * 4), high);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + ((g + 3) * R + r) * 4), _mm_unpackhi_epi64(high, high));
    }
    for (; g < k4; ++g)
      for (int i = 0; i < 4; ++i) out[(g * R + r) * 4 + i] = row[g * 4 + i];
  }
}

void panels(const LinearInt8Params& p, int64_t first, int64_t last) {
  const int64_t width = p.k4 * 4;
  thread_local std::vector<int32_t> sums;   // (m, kPanel) column sums of one panel
  if (static_cast<int64_t>(sums.size()) < p.m * kPanel) sums.resize(p.m * kPanel);
  for (int64_t panel = first; panel < last; ++panel) {
    const int8_t* w = p.panels + panel * p.k4 * kPanel * 4;
    for (int64_t g0 = 0; g0 < p.k4; g0 += kChunk) {
      const int64_t g1 = g0 + kChunk < p.k4 ? g0 + kChunk : p.k4;
      for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) {
        block<decltype(rows)::value>(w, p.xw + row * width, g0, g1, sums.data() + row * kPanel);
      });
    }
    store_block(p, sums.data(), p.m, 0, panel * kPanel);
  }
}

#endif

#if !defined(__AVX2__) || defined(__AVX512F__)
// Portable: the same integer sums, for the generic build and AVX-512 CPUs without VNNI.
template <int R>
void block_portable(const LinearInt8Params& p, const int8_t* panel, int64_t row0, int64_t col0) {
  int32_t acc[R * kPanel] = {};
  for (int64_t g = 0; g < p.k4; ++g) {
    const int8_t* w = panel + g * kPanel * 4;
    for (int r = 0; r < R; ++r) {
      const uint8_t* x = p.xq + (row0 + r) * p.k4 * 4 + g * 4;
      for (int c = 0; c < kPanel; ++c) {
        acc[r * kPanel + c] += x[0] * w[c * 4] + x[1] * w[c * 4 + 1] + x[2] * w[c * 4 + 2] + x[3] * w[c * 4 + 3];
      }
    }
  }
  store_block(p, acc, R, row0, col0);
}

#if defined(__AVX512F__)
void panels(const LinearInt8Params& p, int64_t first, int64_t last) {
  // AMX takes the rows in tiles of 16; the blocks the rest. Where no tile is full and m > 1,
  // each block prefetches its share of the next panel (cpu/next_panel.h): weights from
  // memory, 768 × 3072 on 2 Xeon cores, m = 8: 209-248 → 262-281 GOP/s. Not one row (GPT-2-
  // small at batch 1 decoded ~5 % slower with it) nor the tiles (m = 16 and 32 slower too).
  const int64_t tiled = amx_tiled_rows(p.m, p.k4, p.amx);
  if (tiled > 0) amx_begin();
  const int64_t panel_bytes = p.k4 * kPanel * 4;
  for (int64_t panel = first; panel < last; ++panel) {
    const int8_t* w = p.panels + panel * panel_bytes;
    const bool prefetch = panel + 1 < last && tiled == 0 && p.m > 1;
    const char* next = reinterpret_cast<const char*>(w + panel_bytes);
    for (int64_t row = 0; row < tiled; row += kAmxTileRows) block_amx(p, w, row, panel * kPanel);
    for_each_row_block<kRows>(p.m - tiled, [&](auto rows, int64_t row) {
      constexpr int R = decltype(rows)::value;
      if (!p.vnni) return block_portable<R>(p, w, tiled + row, panel * kPanel);
      if (prefetch) {
        const int64_t first = tiled + row;
        return block_vnni<R, true>(p, w, first, panel * kPanel, NextPanel(next, panel_bytes, first, R, p.m, p.k4));
      }
      block_vnni<R, false>(p, w, tiled + row, panel * kPanel, NextPanel());
    });
  }
  if (tiled > 0) amx_end();
}
#elif !defined(__AVX2__)
void panels(const LinearInt8Params& p, int64_t first, int64_t last) {
  for (int64_t panel = first; panel < last; ++panel) {
    const int8_t* w = p.panels + panel * p.k4 * kPanel * 4;
    for_each_row_block<kRows>(p.m, [&](auto rows, int64_t row) {
      block_portable<decltype(rows)::value>(p, w, row, panel * kPanel);
    });
  }
}
#endif
#endif

}  // namespace

#if defined(__AVX2__) && !defined(__AVX512F__)
void widen_rows(const uint8_t* xq, int64_t m, int64_t k4, int16_t* xw) {
  for_each_row_block<kRows>(m, [&](auto rows, int64_t row) { regroup<decltype(rows)::value>(xq + row * k4 * 4, k4, xw + row * k4 * 4); });
}
#endif

void linear_int8_panels(const LinearInt8Params& p, int64_t first, int64_t last) { panels(p, first, last); }

void quantize_rows(const float* x, int64_t m, int64_t k, int64_t k4, uint8_t* xq, float* x_scale) {
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * k;
    int64_t i = 0;
    float largest = 0.0f;
#if defined(__AVX2__)
    // The same bytes as the scalar loops: max is exact in any order (vmaxps returns its
    // second operand for a NaN, as fmax skips one), and vcvtps2dq rounds to nearest even
    // like nearbyint in the default rounding mode.
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 big = _mm256_setzero_ps();
    for (; i + 8 <= k; i += 8) big = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(row + i), magnitude), big);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, big);
    for (float lane : lanes) largest = std::fmax(largest, lane);
#endif
    for (; i < k; ++i) largest = std::fmax(largest, std::fabs(row[i]));
    const float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
    x_scale[r] = largest / 127.0f;
    uint8_t* out = xq + r * k4 * 4;
    i = 0;
#if defined(__AVX2__)
    const __m256 scale = _mm256_set1_ps(inverse);
    const __m256i zero_point = _mm256_set1_epi32(128);
    for (; i + 32 <= k; i += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; ++j)
        q[j] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i + 8 * j), scale)), zero_point);
      // Packing works per 128-bit lane: bytes come out as 0-3 8-11 16-19 24-27 4-7 ...
      const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                          _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
#endif
    for (; i < k; ++i) out[i] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(row[i] * inverse)) + 128);
    for (; i < k4 * 4; ++i) out[i] = 128;
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
