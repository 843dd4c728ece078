// What the two CUDA attention kernels share: K/V elements as float32 from float32 or bf16
// bits, warp reductions, host-to-device copies and the launch over head sizes. A head's
// dims are spread over the 32 lanes of a warp, kDims (1, 2, 4, 8 or 16) per lane, so that a
// lane's share of a query or an output row stays in registers: head_dim <= 32 * kDims, up
// to 512 (the CPU kernels' limit); the lanes past head_dim hold zeros.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/device.h"

namespace aigc::cuda {

constexpr int kWarp = 32;
constexpr int kMaxHeadDim = 512;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.44269504088896341f;  // scores carry log2(e): weights are exp2(s - m)

__device__ __forceinline__ float kv_float(const float* base, int64_t i) { return base[i]; }
// bf16 is the top 16 bits of a float32.
__device__ __forceinline__ float kv_float(const uint16_t* base, int64_t i) {
  return __uint_as_float(static_cast<uint32_t>(base[i]) << 16);
}

// Every lane gets the max / sum over the warp.
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

// A host array's `count` elements in a new device buffer (the Python ops' host-array entry points).
template <typename T>
DeviceBuffer<T> copy_to_device(const T* host, int64_t count, const char* what) {
  DeviceBuffer<T> buffer(count);
  if (count > 0) check(cudaMemcpy(buffer.get(), host, count * sizeof(T), cudaMemcpyHostToDevice), what);
  return buffer;
}

// A CUDA event owned by a scope.
struct Event {
  cudaEvent_t event = nullptr;
  Event() { check(cudaEventCreate(&event), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(event); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Seconds of one call of run() (which enqueues on the default stream): the mean of `repeats`
// calls timed by CUDA events, after one untimed call (the first launch also loads the module).
template <typename Run>
double seconds_per_run(int repeats, Run&& run) {
  run();
  Event start, stop;
  check(cudaEventRecord(start.event, nullptr), "cudaEventRecord");
  for (int i = 0; i < repeats; ++i) run();
  check(cudaEventRecord(stop.event, nullptr), "cudaEventRecord");
  check(cudaEventSynchronize(stop.event), "cudaEventSynchronize");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, start.event, stop.event), "cudaEventElapsedTime");
  return ms * 1e-3 / repeats;
}

// Calls launch(std::integral_constant<int, kDims>{}) with the smallest kDims that covers
// head_dim; a head_dim outside 1 .. 512 is an error naming `what`.
template <typename Launch>
void with_dims_per_lane(int64_t head_dim, const char* what, Launch&& launch) {
  if (head_dim < 1 || head_dim > kMaxHeadDim) {
    throw std::runtime_error(std::string(what) + ": head_dim must be 1 .. 512, got " + std::to_string(head_dim));
  }
  if (head_dim <= 32) return launch(std::integral_constant<int, 1>{});
  if (head_dim <= 64) return launch(std::integral_constant<int, 2>{});
  if (head_dim <= 128) return launch(std::integral_constant<int, 4>{});
  if (head_dim <= 256) return launch(std::integral_constant<int, 8>{});
  return launch(std::integral_constant<int, 16>{});
}

}  // namespace aigc::cuda
