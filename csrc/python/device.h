// The `device` argument of the bindings that have a CUDA path: "cpu" or "cuda", and on
// "cuda" a build with CUDA kernels and a visible device, else a ValueError saying which is
// missing.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "aigc/latent.h"  // cuda_device_count

namespace aigc::python {

// True for "cuda" (usable here), false for "cpu"; anything else raises.
inline bool on_cuda(const std::string& device) {
  if (device == "cpu") return false;
  if (device != "cuda") throw pybind11::value_error("device: expected 'cpu' or 'cuda', got '" + device + "'");
#ifdef AIGC_WITH_CUDA
  if (aigc::cuda_device_count() == 0) throw pybind11::value_error("device='cuda': no CUDA device is visible");
  return true;
#else
  throw pybind11::value_error("device='cuda': this build of aigc_engine has no CUDA support");
#endif
}

}  // namespace aigc::python
