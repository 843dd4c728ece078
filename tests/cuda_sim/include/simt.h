// One CUDA block simulated on the CPU, for tests/test_cuda_sampling_sim.py: each of the
// block's threads is a std::thread, __syncthreads and __syncwarp are barriers, a shuffle
// goes through a per-warp slot array, shared memory is a function-static object (blocks
// run one at a time), atomicAdd takes a lock, and the float intrinsics are their IEEE
// host equivalents (the harness is built with -ffp-contract=off, so nothing fuses).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

struct SimIndex {
  unsigned x;
};
inline thread_local SimIndex threadIdx, blockIdx;
inline SimIndex blockDim{256};
inline std::barrier<>* sim_block_barrier;
inline std::barrier<>* sim_warp_barrier[32];
inline double sim_slots[32][32];
inline std::mutex sim_atomic;

inline void __syncthreads() { sim_block_barrier->arrive_and_wait(); }
inline void __syncwarp() { sim_warp_barrier[threadIdx.x / 32]->arrive_and_wait(); }
template <typename T>
T __shfl_down_sync(unsigned, T x, int offset) {
  static_assert(sizeof(T) <= sizeof(double));
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  std::memcpy(&sim_slots[warp][lane], &x, sizeof(T));
  __syncwarp();
  T result = x;
  if (lane + offset < 32) std::memcpy(&result, &sim_slots[warp][lane + offset], sizeof(T));
  __syncwarp();
  return result;
}
inline double atomicAdd(double* at, double v) {
  std::lock_guard<std::mutex> lock(sim_atomic);
  const double old = *at;
  *at = old + v;
  return old;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
using std::isnan;
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
