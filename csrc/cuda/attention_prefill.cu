// Causal attention prefill on CUDA (aigc/attention.h): q (tokens, n_heads, d) float32, K/V
// (tokens, n_kv_heads, d) float32 or bf16 bits, packed sequences [cu_seqlens[s], cu_seqlens[s + 1]).
// One block of 4 warps per (head, tile of 16 queries of one sequence), 4 query rows per warp.
// Per tile of 32 keys: scores with one key per lane (K staged in shared memory 32 dims at a
// time), the online softmax across the warp, then o += p V with the head's dims over the lanes
// (V staged the same way); fp32 throughout, the (seq x seq) score matrix never exists.
// CUDA cores, not tensor cores: fp32 inputs, and every step as plain as the CPU kernel's.
#include <math_constants.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "aigc/attention.h"
#include "cuda/attention.h"
#include "cuda/attention_common.cuh"

namespace aigc::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kTileQueries = kWarps * kRowsPerWarp;
constexpr int kTileKeys = kWarp;  // one key per lane in the scores
constexpr int kChunk = kWarp;     // dims of K or V staged at once
constexpr int kBlockThreads = kWarps * kWarp;

// Query-tile slot `slot` is tile slot - slot_base(s) of sequence s, with slot_base(s) =
// ceil(cu_seqlens[s] / 16) + s. From one sequence to the next slot_base grows by at least
// ceil(len / 16) (ceil(a + b) >= ceil(a) + ceil(b) - 1) and at least 1, so the slots
// [0, ceil(tokens / 16) + n_seqs) hold every tile of every sequence once; a slot past its
// sequence's last tile (an empty sequence's one) does nothing. Found on the device: the host
// never reads cu_seqlens (the decoder's lives in device memory).
__device__ int64_t slot_base(const int32_t* cu_seqlens, int64_t s) {
  return (static_cast<int64_t>(cu_seqlens[s]) + kTileQueries - 1) / kTileQueries + s;
}

// The sequence of `slot`: the largest s in [0, n_seqs) with slot_base(s) <= slot
// (slot_base(0) = 0, and slot_base strictly increases).
__device__ int64_t sequence_of_slot(const int32_t* cu_seqlens, int64_t n_seqs, int64_t slot) {
  int64_t lo = 0, hi = n_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (slot_base(cu_seqlens, mid) <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// tile[j][c] = element first + j * row_stride + c as float32 for j < rows, c < cols, else 0.
// Every thread of the block calls it: the barrier before lets the previous readers of the
// tile finish, the one after publishes it. Stride 33 (odd): lane j reading tile[j][c] and
// lanes reading tile[j][lane] both hit 32 different banks.
template <typename T>
__device__ void stage(const T* src, int64_t first, int64_t row_stride, int64_t rows, int64_t cols,
                      float (*tile)[kChunk + 1]) {
  __syncthreads();
  for (int e = threadIdx.x; e < kTileKeys * kChunk; e += kBlockThreads) {
    const int j = e / kChunk, c = e % kChunk;
    tile[j][c] = j < rows && c < cols ? kv_float(src, first + j * row_stride + c) : 0.0f;
  }
  __syncthreads();
}

// Grid: slots x n_heads blocks, heavy (late) tiles first so the light ones fill the tail.
template <int kDims, typename T>
__global__ void __launch_bounds__(kBlockThreads) prefill_kernel(AttentionPrefillParams p, int64_t slots) {
  constexpr int kPadded = kDims * kWarp;
  __shared__ __align__(16) float qs[kTileQueries][kPadded];  // scaled queries; 0 past d and the sequence
  __shared__ float tile[kTileKeys][kChunk + 1];               // 32 keys x 32 dims of K, then of V
  __shared__ __align__(16) float ps[kWarps][kRowsPerWarp][kTileKeys];  // each warp's softmax weights

  const int64_t slot = slots - 1 - blockIdx.x / p.n_heads;
  const int64_t head = blockIdx.x % p.n_heads;
  const int64_t s = sequence_of_slot(p.cu_seqlens, p.n_seqs, slot);
  const int64_t start = p.cu_seqlens[s], length = p.cu_seqlens[s + 1] - start;
  const int64_t q0 = (slot - slot_base(p.cu_seqlens, s)) * kTileQueries;
  if (q0 >= length) return;  // the same for the whole block, before any barrier
  const int64_t n_queries = min(static_cast<int64_t>(kTileQueries), length - q0);
  const int64_t d = p.head_dim, q_stride = p.q_row_stride, kv_stride = p.kv_row_stride, out_stride = p.n_heads * d;
  const int64_t kv_column = head / (p.n_heads / p.n_kv_heads) * d;
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;

  const float q_scale = p.scale * kLog2e;
  for (int e = threadIdx.x; e < kTileQueries * kPadded; e += kBlockThreads) {
    const int r = e / kPadded, c = e % kPadded;
    qs[r][c] = r < n_queries && c < d ? p.q[(start + q0 + r) * q_stride + head * d + c] * q_scale : 0.0f;
  }
  __syncthreads();

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDims];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -CUDART_INF_F;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[r][i] = 0.0f;
  }
  const int64_t key_end = q0 + n_queries;  // the tile's last query sees keys 0 .. key_end - 1
  for (int64_t k0 = 0; k0 < key_end; k0 += kTileKeys) {
    const int64_t keys = min(static_cast<int64_t>(kTileKeys), key_end - k0);
    // Lane j: the score of key k0 + j for each of the warp's rows.
    float score[kRowsPerWarp] = {};
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      if (i * kChunk >= d) continue;  // the same for the whole block
      stage(k, (start + k0) * kv_stride + kv_column + i * kChunk, kv_stride, keys, d - i * kChunk, tile);
#pragma unroll
      for (int c = 0; c < kChunk; c += 4) {
        const float k_c[4] = {tile[lane][c], tile[lane][c + 1], tile[lane][c + 2], tile[lane][c + 3]};
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          const float4 q = *reinterpret_cast<const float4*>(&qs[warp * kRowsPerWarp + r][i * kChunk + c]);
          score[r] = fmaf(q.x, k_c[0], fmaf(q.y, k_c[1], fmaf(q.z, k_c[2], fmaf(q.w, k_c[3], score[r]))));
        }
      }
    }
    // Online softmax. Key 0 is visible to every row (padding rows past the sequence too), so
    // m is finite after the first tile, and a later tile with no visible key for a row gives
    // that row weights 0 and alpha 1.
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t query = q0 + warp * kRowsPerWarp + r;
      const float s_r = k0 + lane <= query ? score[r] : -CUDART_INF_F;
      const float m_new = fmaxf(m[r], warp_max(s_r));
      const float weight = exp2f(s_r - m_new);
      const float alpha = exp2f(m[r] - m_new);  // 0 on the first tile, where m is -inf
      l[r] = l[r] * alpha + warp_sum(weight);
      m[r] = m_new;
#pragma unroll
      for (int i = 0; i < kDims; ++i) acc[r][i] *= alpha;
      ps[warp][r][lane] = weight;  // read after the barriers of the V stage below
    }
    // Lane c: o[r][i * 32 + c] += sum_j weight[r][j] * V[k0 + j][i * 32 + c].
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      if (i * kChunk >= d) continue;
      stage(v, (start + k0) * kv_stride + kv_column + i * kChunk, kv_stride, keys, d - i * kChunk, tile);
#pragma unroll
      for (int j = 0; j < kTileKeys; j += 4) {
        const float v_j[4] = {tile[j][lane], tile[j + 1][lane], tile[j + 2][lane], tile[j + 3][lane]};
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          const float4 w = *reinterpret_cast<const float4*>(&ps[warp][r][j]);
          acc[r][i] = fmaf(w.w, v_j[3], fmaf(w.z, v_j[2], fmaf(w.y, v_j[1], fmaf(w.x, v_j[0], acc[r][i]))));
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t query = q0 + warp * kRowsPerWarp + r;
    if (query >= length) continue;
    const float inv = 1.0f / l[r];  // l >= 1: the largest score's weight is 1
    float* out = p.out + (start + query) * out_stride + head * d;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const int64_t c = i * kWarp + lane;
      if (c < d) out[c] = acc[r][i] * inv;
    }
  }
}

}  // namespace

void attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  if (p.n_heads < 1 || p.n_kv_heads < 1 || p.n_heads % p.n_kv_heads != 0 || p.n_seqs < 1) {
    throw std::runtime_error("attention_prefill: expected n_kv_heads dividing n_heads and n_seqs >= 1, got " +
                             std::to_string(p.n_kv_heads) + ", " + std::to_string(p.n_heads) + " and " +
                             std::to_string(p.n_seqs));
  }
  const int64_t slots = (p.tokens + kTileQueries - 1) / kTileQueries + p.n_seqs;
  if (slots > INT_MAX / p.n_heads) {
    throw std::runtime_error("attention_prefill: " + std::to_string(slots) + " query tiles x " +
                             std::to_string(p.n_heads) + " heads is more blocks than one launch takes");
  }
  const unsigned blocks = static_cast<unsigned>(slots * p.n_heads);
  with_dims_per_lane(p.head_dim, "attention_prefill", [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    if (p.kv_bf16) {
      prefill_kernel<kDims, uint16_t><<<blocks, kBlockThreads, 0, stream>>>(p, slots);
    } else {
      prefill_kernel<kDims, float><<<blocks, kBlockThreads, 0, stream>>>(p, slots);
    }
  });
  check(cudaGetLastError(), "attention_prefill launch");
}

}  // namespace aigc::cuda

namespace aigc {

double attention_prefill_cuda(const AttentionPrefillParams& host, int timed_runs) {
  if (host.tokens == 0) return 0.0;
  const int64_t q_count = host.tokens * host.n_heads * host.head_dim;
  const int64_t kv_bytes = host.tokens * host.n_kv_heads * host.head_dim * (host.kv_bf16 ? 2 : 4);
  auto q = cuda::copy_to_device(host.q, q_count, "attention_prefill: q copy");
  auto k = cuda::copy_to_device(static_cast<const uint8_t*>(host.k), kv_bytes, "attention_prefill: k copy");
  auto v = cuda::copy_to_device(static_cast<const uint8_t*>(host.v), kv_bytes, "attention_prefill: v copy");
  auto cu_seqlens = cuda::copy_to_device(host.cu_seqlens, host.n_seqs + 1, "attention_prefill: cu_seqlens copy");
  cuda::DeviceBuffer<float> out(q_count);
  AttentionPrefillParams p = host;
  p.q = q.get();
  p.k = k.get();
  p.v = v.get();
  p.cu_seqlens = cu_seqlens.get();
  p.out = out.get();
  auto run = [&] { cuda::attention_prefill(p, nullptr); };
  const double seconds = timed_runs > 0 ? cuda::seconds_per_run(timed_runs, run) : (run(), 0.0);
  cuda::check(cudaMemcpy(host.out, out.get(), q_count * sizeof(float), cudaMemcpyDeviceToHost),
              "attention_prefill: out copy");
  return seconds;
}

}  // namespace aigc
