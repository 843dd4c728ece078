// Peak rate of the multiply-add instructions the projections are made of, for the roofline
// of benchmarks/linear.py (cpu/isa_peak.cc: the loops, per ISA; cpu/isa_peak_dispatch.cc:
// timing over the pool). Operations count as the projections' GOP/s do, 2 per multiply-add
// of one weight by one activation: a ymm vfmadd231ps is 16, a zmm one 32, a ymm vpmaddwd
// 32 (16 int16 products summed in pairs), a zmm vpdpbusd 128 (64 u8 · s8 products), an AMX
// tdpbusd 32,768 (16 × 16 × 64 of them). Each instruction is probed at the width the active
// ISA's kernels use it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "aigc/isa.h"
#include "aigc/linear.h"

namespace aigc {

enum class PeakInstruction {
  kFma,     // vfmadd231ps: float32 and bfloat16 weights (bf16 is widened to float32 in registers)
  kMaddwd,  // vpmaddwd (+ the vpaddd that accumulates it): int8 on the avx2 build
  kDpbusd,  // vpdpbusd zmm: int8 on the avx512 build of a CPU with AVX512-VNNI
  kTdpbusd, // AMX tdpbusd: int8 rows in tiles of 16 where the CPU has AMX-INT8 (cpu_has_amx_int8)
};
constexpr PeakInstruction kPeakInstructions[] = {PeakInstruction::kFma, PeakInstruction::kMaddwd,
                                                 PeakInstruction::kDpbusd, PeakInstruction::kTdpbusd};

const char* peak_instruction_name(PeakInstruction instruction);
// "vfmadd231ps", "vpmaddwd", "vpdpbusd" or "tdpbusd"; anything else throws std::invalid_argument
// naming the valid ones.
PeakInstruction parse_peak_instruction(const std::string& name);
// Whether a kernel of the active ISA uses it on this CPU (and so whether it is probed).
bool peak_instruction_available(PeakInstruction instruction);
// The instruction the inner loop of the projection of `dtype` issues on the active ISA, for
// m rows of x with k columns (int8 with AMX: tdpbusd when at least one tile of 16 rows is
// full and k fills whole tiles, the rows past the last full tile in vpdpbusd); none for the
// generic build and for int8 on AVX-512 without VNNI (portable C++ loops, whatever the
// compiler makes of them).
std::optional<PeakInstruction> linear_instruction(WeightDtype dtype, int64_t m, int64_t k);
// Operations per second of `instruction` on every thread of the pool at once, the best of
// rounds of ~2 ms lasting `seconds` in all. The instruction must be available.
double isa_peak(PeakInstruction instruction, double seconds);

}  // namespace aigc

// Per ISA (cpu/isa_peak.cc): the operations one iteration of the loop does (0: this build
// has no loop of that instruction), and the loop itself, run `iterations` times on the
// calling thread; it returns a checksum of its accumulators, so the loop cannot be dropped.
AIGC_ISA_DECLARE(int64_t, isa_peak_ops_per_iteration, (::aigc::PeakInstruction instruction))
AIGC_ISA_DECLARE(double, isa_peak_loop, (::aigc::PeakInstruction instruction, int64_t iterations))
