// The AMX tile configuration shared by the int8 projections (cpu/linear_int8.cc) and the
// tdpbusd peak probe (cpu/isa_peak.cc): palette 1, tiles 0-5 of 16 rows × 64 bytes, each
// an int32 accumulator of 16 × 16, an A tile of 16 rows × 64 u8 or a B tile of 16 groups of
// 4 k × 16 columns. Only the avx512 build, on a CPU where cpu_has_amx_int8() holds, may load it.
// Included inside a file's ISA namespace, like everything those files compile per ISA.
#pragma once

#include <cstdint>

#include "aigc/linear.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

// ldtilecfg's 64 bytes. A constant in memory: built on the stack, GCC 12 dropped the stores
// (it does not see ldtilecfg read them), and the first tile instruction raised SIGILL on
// unconfigured tiles.
struct alignas(64) AmxTileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
inline constexpr AmxTileConfig kAmxTiles = {
    1, 0, {}, {64, 64, 64, 64, 64, 64},
    {kAmxTileRows, kAmxTileRows, kAmxTileRows, kAmxTileRows, kAmxTileRows, kAmxTileRows}};

__attribute__((target("amx-tile"))) inline void amx_begin() { _tile_loadconfig(&kAmxTiles); }
__attribute__((target("amx-tile"))) inline void amx_end() { _tile_release(); }

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
#endif
