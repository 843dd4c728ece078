// See aigc/isa.h. The avx512 build needs F, BW, VL and DQ (every AVX-512 CPU since
// Skylake-SP has them); the avx2 build needs AVX2 and FMA (Haswell and later).
#include "aigc/isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace aigc {

Isa cpu_isa() {
  static const Isa detected = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      return Isa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kGeneric;
  }();
  return detected;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

Isa active_isa() {
  const char* forced = std::getenv("AIGC_FORCE_ISA");
  if (forced == nullptr || *forced == '\0') return cpu_isa();
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(forced, isa_name(isa)) != 0) continue;
    if (static_cast<int>(isa) > static_cast<int>(cpu_isa())) {
      throw std::invalid_argument(std::string("AIGC_FORCE_ISA=") + forced + ": this CPU supports up to " +
                                  isa_name(cpu_isa()));
    }
    return isa;
  }
  throw std::invalid_argument(std::string("AIGC_FORCE_ISA: expected generic, avx2 or avx512, got '") + forced + "'");
}

bool cpu_has_avx512_bf16() {
  __builtin_cpu_init();
  return cpu_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
}

bool cpu_has_avx512_vnni() {
  __builtin_cpu_init();
  return cpu_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni");
}

bool cpu_has_amx_int8() {
  static const bool usable = [] {
    unsigned eax, ebx, ecx, edx;
    if (cpu_isa() != Isa::kAvx512 || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool tile = edx & (1u << 24), int8 = edx & (1u << 25);
    constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;  // <asm/prctl.h>, the XTILEDATA state
    return tile && int8 && syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) == 0;
  }();
  return usable;
}

}  // namespace aigc
