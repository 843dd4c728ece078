// Register-only loops of one multiply-add instruction each (aigc/isa_peak.h), built per ISA
// at the width that ISA's projection kernels use: 12 independent accumulator chains, more
// than latency × throughput of any of them (Zen 3 FMA: 4 cycles × 2 a cycle = 8 in flight;
// Skylake-X vpmaddwd + vpaddd: 6 × 2 = 12), so the ports, not a chain, set the pace.
// GCC emits whichever of vfmadd132ps/213ps/231ps suits its register allocation: the same
// operation at the same rate, named vfmadd231ps here as in Intel's tables.
// No memory operand in the loop: this is the instruction's peak, not the kernels' (which
// also load weights and broadcast activations).
// The generic build has no loop (ops per iteration 0: unavailable): its kernels are plain
// C++, vectorised by the compiler into whatever SSE2 it picks, with no single instruction
// to hold them against.
#include <cstdint>

#include "aigc/isa_peak.h"
#include "cpu/amx_tiles.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr int kChains = 12;

#if defined(__AVX512F__)

double fma_loop(int64_t iterations) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(0.01f * static_cast<float>(j));
  // acc · 0.999 + 0.001 converges to 1: no overflow, no denormals, however long it runs.
  const __m512 decay = _mm512_set1_ps(0.999f), step = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], decay, step);
  }
  __m512 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_ps(sum, acc[j]);
  // Stored and summed, not _mm512_reduce_add_ps: GCC 12's version trips -Wuninitialized.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  double total = 0.0;
  for (float lane : lanes) total += lane;
  return total;
}

__attribute__((target("avx512vnni"))) double dpbusd_loop(int64_t iterations) {
  __m512i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-5);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], x, w);  // int32 sums wrap: harmless
  }
  __m512i sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_epi32(sum, acc[j]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, sum);
  double total = 0.0;
  for (int32_t lane : lanes) total += lane;
  return total;
}

// AMX: 4 accumulator tiles fed by the same A and B tiles, loaded once: tdpbusd's throughput
// (one every 16 cycles in Intel's tables for Sapphire Rapids) with its latency hidden, and
// no memory traffic. 16 × 16 × 64 multiply-adds per instruction.
constexpr int kAmxChains = 4;

__attribute__((target("amx-tile,amx-int8"))) double tdpbusd_loop(int64_t iterations) {
  alignas(64) uint8_t a[kAmxTileRows * 64];
  alignas(64) int8_t b[kAmxTileRows * 64];
  for (int64_t i = 0; i < kAmxTileRows * 64; ++i) {
    a[i] = 3;
    b[i] = -5;
  }
  amx_begin();
  _tile_loadd(4, a, 64);
  _tile_loadd(5, b, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbusd(0, 4, 5);  // int32 sums wrap: harmless
    _tile_dpbusd(1, 4, 5);
    _tile_dpbusd(2, 4, 5);
    _tile_dpbusd(3, 4, 5);
  }
  alignas(64) int32_t out[kAmxChains][kAmxTileRows * 16];
  _tile_stored(0, out[0], 64);
  _tile_stored(1, out[1], 64);
  _tile_stored(2, out[2], 64);
  _tile_stored(3, out[3], 64);
  amx_end();
  double total = 0.0;
  for (const auto& tile : out)
    for (int32_t lane : tile) total += lane;
  return total;
}

#elif defined(__AVX2__)

double fma_loop(int64_t iterations) {
  __m256 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_ps(0.01f * static_cast<float>(j));
  // acc · 0.999 + 0.001 converges to 1: no overflow, no denormals, however long it runs.
  const __m256 decay = _mm256_set1_ps(0.999f), step = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], decay, step);
  }
  __m256 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm256_add_ps(sum, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  double total = 0.0;
  for (float lane : lanes) total += lane;
  return total;
}

// The pair the avx2 int8 kernel issues per 16 multiply-adds (cpu/linear_int8.cc): vpmaddwd,
// which has no accumulating form, then vpaddd. Each chain feeds its own sum back in as the
// int16 operand: with constant operands the products would be hoisted out of the loop.
double maddwd_loop(int64_t iterations) {
  __m256i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_epi32(j);
  const __m256i w = _mm256_set1_epi16(3);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(acc[j], w));  // wraps: harmless
  }
  __m256i sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm256_add_epi32(sum, acc[j]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  double total = 0.0;
  for (int32_t lane : lanes) total += lane;
  return total;
}

#endif

}  // namespace

int64_t isa_peak_ops_per_iteration(PeakInstruction instruction) {
  // 2 operations per multiply-add lane, kChains instructions an iteration.
  switch (instruction) {
#if defined(__AVX512F__)
    case PeakInstruction::kFma: return kChains * 16 * 2;
    case PeakInstruction::kDpbusd: return kChains * 64 * 2;
    case PeakInstruction::kTdpbusd: return kAmxChains * kAmxTileRows * 16 * 64 * 2;
#elif defined(__AVX2__)
    case PeakInstruction::kFma: return kChains * 8 * 2;
    case PeakInstruction::kMaddwd: return kChains * 16 * 2;
#endif
    default: return 0;
  }
}

double isa_peak_loop(PeakInstruction instruction, int64_t iterations) {
  switch (instruction) {
#if defined(__AVX512F__)
    case PeakInstruction::kFma: return fma_loop(iterations);
    case PeakInstruction::kDpbusd: return dpbusd_loop(iterations);
    case PeakInstruction::kTdpbusd: return tdpbusd_loop(iterations);
#elif defined(__AVX2__)
    case PeakInstruction::kFma: return fma_loop(iterations);
    case PeakInstruction::kMaddwd: return maddwd_loop(iterations);
#endif
    default: (void)iterations; return 0.0;
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
