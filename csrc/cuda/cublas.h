// cuBLAS loaded at run time (dlopen), so that building needs no cuBLAS headers or library and
// importing aigc_engine needs no libcublas: only a CUDA model's construction does. The few
// entry points the decoder calls are declared here by hand, their prototypes and enum
// values those of CUDA 13's cublas_api.h. A missing library is a std::runtime_error naming
// it and the package that ships it (nvidia-cublas, the `gpu` extra).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace aigc::cuda {

// One cuBLAS handle bound to a stream; float32 math only (CUBLAS_PEDANTIC_MATH: no TF32,
// whatever NVIDIA_TF32_OVERRIDE says), so its products round as float32 throughout.
class Cublas {
 public:
  explicit Cublas(cudaStream_t stream);
  ~Cublas();
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;

  // Row-major y (m, n) = x (m, k) · w (k, n), all float32 device memory (no bias).
  void matmul(const float* x, const float* w, float* y, int64_t m, int64_t k, int64_t n);

 private:
  void* handle_ = nullptr;
};

}  // namespace aigc::cuda
