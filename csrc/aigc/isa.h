// Runtime ISA dispatch. Kernel sources listed in CMake's aigc_isa_kernels compile once
// per ISA, with that ISA's flags, into namespace aigc::generic, aigc::avx2 or
// aigc::avx512 (AIGC_ISA_NAMESPACE names it inside the file), so no inline function built
// with AVX-512 flags can be picked by the linker for an older CPU.
// active_isa() is the best the CPU has, or AIGC_FORCE_ISA=generic|avx2|avx512 (read at
// every call, so tests can switch it; asking for more than the CPU has throws).
#pragma once

namespace aigc {

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

Isa cpu_isa();
Isa active_isa();
const char* isa_name(Isa isa);
// Extensions the avx512 build may use only after checking these at run time.
bool cpu_has_avx512_bf16();
bool cpu_has_avx512_vnni();
// AMX-TILE and AMX-INT8, and the kernel's leave to use the tiles' state (Linux asks each
// process to request it: arch_prctl ARCH_REQ_XCOMP_PERM), for the int8 projections.
bool cpu_has_amx_int8();

}  // namespace aigc

// Calls NAME(args...) in the namespace of ISA (read active_isa() once, before the
// threads start: it may throw).
#define AIGC_ISA_CALL(ISA, NAME, ...)                                      \
  [&]() {                                                                  \
    switch (ISA) {                                                         \
      case ::aigc::Isa::kAvx512: return ::aigc::avx512::NAME(__VA_ARGS__); \
      case ::aigc::Isa::kAvx2: return ::aigc::avx2::NAME(__VA_ARGS__);     \
      default: return ::aigc::generic::NAME(__VA_ARGS__);                  \
    }                                                                      \
  }()

// Declares NAME (with its signature) in each ISA namespace.
#define AIGC_ISA_DECLARE(RET, NAME, PARAMS)   \
  namespace aigc {                            \
  namespace generic { RET NAME PARAMS; }      \
  namespace avx2 { RET NAME PARAMS; }         \
  namespace avx512 { RET NAME PARAMS; }       \
  }
