// The peak probe's entry points (aigc/isa_peak.h): which instruction each projection uses
// on the active ISA, and the loops of cpu/isa_peak.cc timed on every thread of the pool at
// once (std::chrono::steady_clock around parallel_for). No math here.
#include "aigc/isa_peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "runtime/thread_pool.h"

namespace aigc {
namespace {

// Items per pool thread: the pool hands out ranges as threads come free, so one that starts
// late (or shares its core with another process) does less and the others more, as in a
// projection; the wall time is then that of the whole machine's work.
constexpr int64_t kItemsPerThread = 8;
// Rounds of ~2 ms (waking the pool costs ~10 us), the fastest of which counts: on a shared
// machine a neighbour only slows the rounds it overlaps. (2 cores under a load of 5: rounds
// of 20-50 ms seldom had both cores and gave about one core's rate, below what a 1.5 ms
// projection call reached in its best runs.)
constexpr double kRoundSeconds = 0.002;
// Written once per probe, so the loops' checksums are used and no loop can be dropped.
std::atomic<double> checksum_sink{0.0};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

const char* peak_instruction_name(PeakInstruction instruction) {
  switch (instruction) {
    case PeakInstruction::kMaddwd: return "vpmaddwd";
    case PeakInstruction::kDpbusd: return "vpdpbusd";
    case PeakInstruction::kTdpbusd: return "tdpbusd";
    default: return "vfmadd231ps";
  }
}

PeakInstruction parse_peak_instruction(const std::string& name) {
  std::string valid;
  for (PeakInstruction instruction : kPeakInstructions) {
    if (name == peak_instruction_name(instruction)) return instruction;
    valid += std::string(valid.empty() ? "'" : ", '") + peak_instruction_name(instruction) + "'";
  }
  throw std::invalid_argument("instruction: expected one of " + valid + ", got '" + name + "'");
}

// Must follow the inner loops of cpu/linear.cc and cpu/linear_int8.cc, and linear_forward's
// choice of AMX (cpu/linear_dispatch.cc).
std::optional<PeakInstruction> linear_instruction(WeightDtype dtype, int64_t m, int64_t k) {
  const Isa isa = active_isa();
  if (isa == Isa::kGeneric) return std::nullopt;
  if (dtype != WeightDtype::kInt8) return PeakInstruction::kFma;  // bf16: widened to float32, then FMA
  if (isa == Isa::kAvx2) return PeakInstruction::kMaddwd;
  if (!cpu_has_avx512_vnni()) return std::nullopt;
  const bool tiles = amx_tiled_rows(m, (k + 3) / 4, cpu_has_amx_int8()) > 0;
  return tiles ? PeakInstruction::kTdpbusd : PeakInstruction::kDpbusd;
}

bool peak_instruction_available(PeakInstruction instruction) {
  for (WeightDtype dtype : {WeightDtype::kFloat32, WeightDtype::kBFloat16, WeightDtype::kInt8}) {
    // One row, and a full AMX tile: every instruction a projection may use.
    for (int64_t m : {1, 16}) {
      if (linear_instruction(dtype, m, 64) == instruction) return true;
    }
  }
  return false;
}

double isa_peak(PeakInstruction instruction, double seconds) {
  if (!peak_instruction_available(instruction)) {
    throw std::invalid_argument(std::string(peak_instruction_name(instruction)) + ": not used on this CPU and ISA");
  }
  const Isa isa = active_isa();
  const int64_t ops = AIGC_ISA_CALL(isa, isa_peak_ops_per_iteration, instruction);
  // One thread's rate first (doubling until a run lasts 5 ms), to size the rounds.
  double sink = 0.0;
  int64_t iterations = 1024;
  double rate = 0.0;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    sink += AIGC_ISA_CALL(isa, isa_peak_loop, instruction, iterations);
    const double elapsed = seconds_since(start);
    if (elapsed >= 5e-3) {
      rate = static_cast<double>(iterations) / elapsed;
      break;
    }
    iterations *= 2;
  }
  const int64_t items = num_threads() * kItemsPerThread;
  const int rounds = std::max(3, static_cast<int>(seconds / kRoundSeconds));
  const int64_t per_item = std::max<int64_t>(1, static_cast<int64_t>(rate * seconds / rounds / kItemsPerThread));
  double best = 0.0;
  for (int round = 0; round < rounds; ++round) {
    std::atomic<double> round_sink{0.0};
    const auto start = std::chrono::steady_clock::now();
    parallel_for(items, [&](int64_t first, int64_t last) {
      double local = 0.0;
      for (int64_t item = first; item < last; ++item) local += AIGC_ISA_CALL(isa, isa_peak_loop, instruction, per_item);
      double seen = round_sink.load();
      while (!round_sink.compare_exchange_weak(seen, seen + local)) {
      }
    });
    const double elapsed = seconds_since(start);
    best = std::max(best, static_cast<double>(items * per_item * ops) / elapsed);
    sink += round_sink.load();
  }
  checksum_sink.store(sink);
  return best;
}

}  // namespace aigc
