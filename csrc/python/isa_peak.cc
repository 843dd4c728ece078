// pybind11 face of the peak probe (aigc/isa_peak.h), for benchmarks/linear.py's roofline:
//   isa_peak(instruction, seconds=0.2) -> float | None   ops/s over all pool threads; None
//       when no kernel of the active ISA uses the instruction on this CPU (AVX-512 VNNI's
//       vpdpbusd on an AVX2 CPU, anything under AIGC_FORCE_ISA=generic)
//   isa_peak_instructions() -> list[str]                  the ones isa_peak measures here
//   linear_instruction(dtype, m=1, k=768) -> str | None   what the projection of dtype uses
//       for m rows of k (int8 on AMX: tdpbusd from m = 16, when k fills whole tiles)
// An unknown instruction name raises ValueError naming the valid ones. Checks only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "aigc/isa_peak.h"

namespace py = pybind11;

namespace aigc::python {

WeightDtype parse_weight_dtype(const std::string& name);  // python/linear.cc

void bind_isa_peak(py::module_& m) {
  m.def("isa_peak", [](const std::string& name, double seconds) -> std::optional<double> {
        PeakInstruction instruction;
        try {
          instruction = parse_peak_instruction(name);
        } catch (const std::invalid_argument& error) {
          throw py::value_error(error.what());
        }
        if (!(seconds > 0.0 && seconds <= 60.0)) {
          throw py::value_error("seconds: expected a duration in (0, 60], got " + std::to_string(seconds));
        }
        if (!peak_instruction_available(instruction)) return std::nullopt;
        py::gil_scoped_release release;
        return isa_peak(instruction, seconds);
      }, py::arg("instruction"), py::arg("seconds") = 0.2);
  m.def("isa_peak_instructions", [] {
    std::vector<std::string> names;
    for (PeakInstruction instruction : kPeakInstructions) {
      if (peak_instruction_available(instruction)) names.emplace_back(peak_instruction_name(instruction));
    }
    return names;
  });
  m.def("linear_instruction", [](const std::string& dtype, int64_t m, int64_t k) -> std::optional<std::string> {
        if (m < 1 || k < 1) {
          throw py::value_error("m, k: expected positive sizes, got " + std::to_string(m) + ", " + std::to_string(k));
        }
        const std::optional<PeakInstruction> instruction = linear_instruction(parse_weight_dtype(dtype), m, k);
        if (!instruction) return std::nullopt;
        return std::string(peak_instruction_name(*instruction));
      }, py::arg("dtype"), py::arg("m") = 1, py::arg("k") = 768);
}

}  // namespace aigc::python
