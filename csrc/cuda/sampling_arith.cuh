// The CPU sampler's token-deciding arithmetic on the device, one CUDA block per row
// (cuda/sampling.cu): bias and penalties, simd::exp of cpu/simd/vec_*.h per lane (FMA or
// not, as the build), exp_scaled's float lane sums and draw_sorted (cpu/sampling.cc) and
// mass_search (cpu/sampling_select.h).
// Order-free work (counts, maxima, filters, histograms) is spread over the block; every sum
// whose rounding depends on its order runs on thread 0 in the CPU's order. The mass
// histograms add in any order: a bucket's members share their float exponent, so every
// partial sum is a multiple of their ulp below 2^53 of them, exact in double.
#pragma once

#include <cub/block/block_scan.cuh>

#include <cmath>
#include <cstdint>

#include "cuda/sampling.h"

namespace aigc::cuda::sampling {

constexpr int kBlock = 256;        // threads per row
constexpr int kWarps = kBlock / 32;
constexpr int64_t kSortBelow = 64;  // cpu/sampling_select.h: mass_search sorts below this
constexpr int kMaxWidth = 16;
constexpr float kInf = __builtin_huge_valf();

struct Cand {
  float value;
  int32_t id;
};
// The sampling order: descending value, ties to the lower id.
__device__ __forceinline__ bool ahead(Cand a, Cand b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

using BlockScan = cub::BlockScan<int, kBlock>;

// A row's block state in shared memory.
struct RowShared {
  BlockScan::TempStorage scan;
  double mass[1024];
  float lanes[kWarps][kMaxWidth];
  double reduce_d[kWarps];
  float reduce_f[kWarps];
  int64_t reduce_i[kWarps];
  int32_t reduce_id[kWarps];
  double before;  // mass_search: the mass ahead of the current bucket
  double total;
  int bucket;
  Cand found;
};

// a * b + c as the CPU build computes it: fused (AVX2, AVX-512) or rounded twice (generic).
__device__ __forceinline__ float madd(float a, float b, float c, bool fused) {
  return fused ? __fmaf_rn(a, b, c) : __fadd_rn(__fmul_rn(a, b), c);
}

// simd::exp (Cephes' expf) for one lane; x < -87 gives 0. The __f*_rn intrinsics keep nvcc
// from contracting what the CPU rounds twice.
__device__ __forceinline__ float cpu_exp(float x, bool fused) {
  if (!(x >= -87.0f)) return 0.0f;
  x = fminf(x, 88.0f);
  const float n = rintf(__fmul_rn(x, 1.44269504088896341f));
  x = madd(-n, 0.693359375f, x, fused);
  x = madd(-n, -2.12194440e-4f, x, fused);
  float y = 1.9875691500e-4f;
  y = madd(y, x, 1.3981999507e-3f, fused);
  y = madd(y, x, 8.3334519073e-3f, fused);
  y = madd(y, x, 4.1665795894e-2f, fused);
  y = madd(y, x, 1.6666665459e-1f, fused);
  y = madd(y, x, 5.0000001201e-1f, fused);
  y = madd(y, __fmul_rn(x, x), __fadd_rn(x, 1.0f), fused);
  return __fmul_rn(y, __int_as_float((static_cast<int>(n) + 127) << 23));
}

// exp((x - shift) / temperature), as exp_scaled computes each probability.
__device__ __forceinline__ float probability(float x, float shift, float temperature, bool fused) {
  return cpu_exp(__fdiv_rn(__fsub_rn(x, shift), temperature), fused);
}

// simd::reduce_add of one vector's lanes (overwritten).
__device__ inline float reduce_add(float* lanes, const CpuArithmetic& a) {
  if (!a.halving_sum) {
    float s = 0.0f;
    for (int i = 0; i < a.width; ++i) s = __fadd_rn(s, lanes[i]);
    return s;
  }
  for (int h = a.width / 2; h >= 1; h /= 2) {
    for (int i = 0; i < h; ++i) lanes[i] = __fadd_rn(lanes[i], lanes[i + h]);
  }
  return lanes[0];
}

// red[c] = exp_scaled's float sum of the vectors [c cv, min((c + 1) cv, nv)) of p (each
// `width` floats): lane j adds its floats in order, then reduce_add. A warp per chunk.
__device__ inline void chunk_sums(const float* p, int64_t nv, int64_t cv, const CpuArithmetic& a, float* red,
                                  RowShared& s) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t chunks = (nv + cv - 1) / cv;
  for (int64_t c = warp; c < chunks; c += kWarps) {
    const int64_t v1 = min(c * cv + cv, nv);
    if (lane < a.width) {
      float acc = 0.0f;
      for (int64_t v = c * cv; v < v1; ++v) acc = __fadd_rn(acc, p[v * a.width + lane]);
      s.lanes[warp][lane] = acc;
    }
    __syncwarp();
    if (lane == 0) red[c] = reduce_add(s.lanes[warp], a);
    __syncwarp();
  }
  __syncthreads();
}

// Deterministic block reductions (a fixed shuffle tree); every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T x, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_down_sync(0xffffffffu, x, o));
  __syncthreads();  // the previous call's readers are done with scratch
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  T result = scratch[0];
  for (int w = 1; w < kWarps; ++w) result = op(result, scratch[w]);
  return result;
}
struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a + b; }
};
struct MinOp {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};

// The first candidate in the sampling order among every thread's (id -1: none).
__device__ inline Cand block_best(Cand c, RowShared& s) {
  auto better = [](Cand a, Cand b) { return b.id < 0 ? a : a.id < 0 ? b : ahead(a, b) ? a : b; };
  for (int o = 16; o > 0; o >>= 1) {
    const Cand other{__shfl_down_sync(0xffffffffu, c.value, o), __shfl_down_sync(0xffffffffu, c.id, o)};
    c = better(c, other);
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    s.reduce_f[threadIdx.x / 32] = c.value;
    s.reduce_id[threadIdx.x / 32] = c.id;
  }
  __syncthreads();
  Cand best{s.reduce_f[0], s.reduce_id[0]};
  for (int w = 1; w < kWarps; ++w) best = better(best, Cand{s.reduce_f[w], s.reduce_id[w]});
  return best;
}

// Writes emit(i, place) for the i in [0, n) that keep(i), places 0, 1, ... in order of
// i; returns how many (every thread).
template <typename Keep, typename Emit>
__device__ int64_t compact(int64_t n, const Keep& keep, const Emit& emit, RowShared& s) {
  int64_t base = 0;
  for (int64_t t0 = 0; t0 < n; t0 += kBlock) {
    const int64_t i = t0 + threadIdx.x;
    const int flag = i < n && keep(i) ? 1 : 0;
    int offset, total;
    BlockScan(s.scan).ExclusiveSum(flag, offset, total);
    if (flag) emit(i, base + offset);
    base += total;
    __syncthreads();  // s.scan is reused by the next tile; emitted entries become visible
  }
  return base;
}

// A row's scratch for candidates: value and id arrays of vocab entries.
struct Pool {
  float* value;
  int32_t* id;
};

// mass_search's histogram of `value(i)` over n by the 10 bits at `shift`, then (thread 0)
// its pick: the bucket, from the top, where the running mass reaches target.
template <typename Value>
__device__ int pick(const Value& value, int64_t n, int shift, double target, bool strict, RowShared& s) {
  for (int b = threadIdx.x; b < 1024; b += kBlock) s.mass[b] = 0.0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kBlock) {
    const float v = value(i);
    atomicAdd(&s.mass[(__float_as_uint(v) >> shift) & 1023], static_cast<double>(v));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int last = -1, chosen = -1;
    for (int b = 1023; b >= 0 && chosen < 0; --b) {
      if (s.mass[b] == 0.0) continue;
      const double mass = s.before + s.mass[b];
      if (strict ? mass > target : mass >= target) {
        chosen = b;
      } else {
        s.before += s.mass[b];
        last = b;
      }
    }
    if (chosen < 0 && last >= 0) {
      s.before -= s.mass[last];  // rounding kept the total just under the target
      chosen = last;
    }
    s.bucket = chosen;
  }
  __syncthreads();
  return s.bucket;
}

// cpu/sampling_select.h's mass_search over candidates (value(i), id(i)), i < m: where the
// cumulative mass in the sampling order first reaches target (> target when strict).
// Uses the pools a and b; returns the candidate on every thread ({0, -1}: none).
template <typename Value, typename Id>
__device__ Cand mass_search(const Value& value, const Id& id, int64_t m, double target, bool strict, Pool a,
                            Pool b, RowShared& s) {
  if (threadIdx.x == 0) s.before = 0.0;
  __syncthreads();
  int64_t count = m;
  if (m <= kSortBelow) {
    for (int64_t i = threadIdx.x; i < m; i += kBlock) {
      a.value[i] = value(i);
      a.id[i] = id(i);
    }
    __syncthreads();
  } else {
    const int top = pick(value, m, 20, target, strict, s);
    count = compact(
        m, [&](int64_t i) { return static_cast<int>(__float_as_uint(value(i)) >> 20) == top; },
        [&](int64_t i, int64_t at) {
          a.value[at] = value(i);
          a.id[at] = id(i);
        },
        s);
    for (int shift = 10; shift >= 0 && count > kSortBelow; shift -= 10) {
      const int c = pick([&](int64_t i) { return a.value[i]; }, count, shift, target, strict, s);
      count = compact(
          count, [&](int64_t i) { return static_cast<int>((__float_as_uint(a.value[i]) >> shift) & 1023) == c; },
          [&](int64_t i, int64_t at) {
            b.value[at] = a.value[i];
            b.id[at] = a.id[i];
          },
          s);
      const Pool t = a;
      a = b;
      b = t;
    }
  }
  if (threadIdx.x == 0) {
    // Sorted as the CPU sorts them; a longer bucket shares every bit of its value, and
    // its order (the input's) already has the ids ascending.
    if (count <= kSortBelow) {
      for (int64_t i = 1; i < count; ++i) {
        const Cand c{a.value[i], a.id[i]};
        int64_t j = i;
        for (; j > 0 && ahead(c, Cand{a.value[j - 1], a.id[j - 1]}); --j) {
          a.value[j] = a.value[j - 1];
          a.id[j] = a.id[j - 1];
        }
        a.value[j] = c.value;
        a.id[j] = c.id;
      }
    }
    Cand last{0.0f, -1}, found{0.0f, -1};
    double before = s.before;
    for (int64_t i = 0; i < count; ++i) {
      const Cand c{a.value[i], a.id[i]};
      if (c.value == 0.0f) break;
      before += c.value;
      last = c;
      if (strict ? before > target : before >= target) {
        found = c;
        break;
      }
    }
    s.found = found.id >= 0 ? found : last;
  }
  __syncthreads();
  return s.found;
}

__device__ inline bool has_bias(const DeviceSampleParams& p, int64_t r) {
  return p.bias_ids != nullptr && p.bias_offsets[r + 1] > p.bias_offsets[r];
}
__device__ inline bool has_penalties(const DeviceSampleParams& p, int64_t r) {
  return p.history_offsets != nullptr && p.history_offsets[r + 1] > p.history_offsets[r] &&
         (p.repetition_penalty[r] != 1.0f || p.presence_penalty[r] != 0.0f || p.frequency_penalty[r] != 0.0f);
}

// cpu/sampling.cc's edit_logits on row x (thread 0): bias, then repetition, frequency and
// presence penalties; the first edit that makes NaN or +inf, when `check`.
__device__ inline RowStatus edit_row(const DeviceSampleParams& p, int64_t r, float* x, bool check) {
  RowStatus status{SampleStatus::kOk, -1};
  auto note = [&](int64_t token, float v) {
    if (check && (isnan(v) || v == kInf) && status.code == SampleStatus::kOk) {
      status = {isnan(v) ? SampleStatus::kEditNaN : SampleStatus::kEditPosInf, static_cast<int32_t>(token)};
    }
  };
  if (has_bias(p, r)) {
    for (int64_t j = p.bias_offsets[r]; j < p.bias_offsets[r + 1]; ++j) {
      float& v = x[p.bias_ids[j]];
      v = __fadd_rn(v, p.bias_values[j]);
      note(p.bias_ids[j], v);
    }
  }
  if (has_penalties(p, r)) {
    const float repetition = p.repetition_penalty[r], presence = p.presence_penalty[r],
                frequency = p.frequency_penalty[r];
    for (int64_t i = p.history_offsets[r]; i < p.history_offsets[r + 1]; ++i) {
      const int32_t token = p.history_tokens[i], generated = p.history_generated[i];
      float v = x[token];
      if (repetition != 1.0f) v = v < 0.0f ? __fmul_rn(v, repetition) : __fdiv_rn(v, repetition);
      const float shifted = __fsub_rn(__fsub_rn(v, __fmul_rn(frequency, __int2float_rn(generated))), presence);
      v = generated > 0 ? shifted : v;
      x[token] = v;
      note(token, v);
    }
  }
  return status;
}

// cpu/sampling.cc's draw_sorted (thread 0): at most kSortBelow candidates, `total` the
// sum of their probabilities.
__device__ inline int32_t draw_sorted(const float* probs, const int32_t* ids, int64_t m, double total,
                                      float top_p, float min_p, double u) {
  Cand cand[kSortBelow];
  for (int64_t i = 0; i < m; ++i) {
    const Cand c{probs[i], ids[i]};
    int64_t j = i;
    for (; j > 0 && ahead(c, cand[j - 1]); --j) cand[j] = cand[j - 1];
    cand[j] = c;
  }
  const double target = static_cast<double>(top_p) * total;
  int64_t kept = 0;
  double mass = 0.0;
  while (kept < m && cand[kept].value > 0.0f && cand[kept].value >= min_p) {
    mass += cand[kept++].value;
    if (top_p < 1.0f && mass >= target) break;
  }
  if (kept == 0) return -1;
  double before = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    before += cand[i].value;
    if (before > u * mass) return cand[i].id;
  }
  return cand[kept - 1].id;
}

}  // namespace aigc::cuda::sampling
