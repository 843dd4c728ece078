// Single-query attention over the paged KV cache on CUDA (aigc/attention.h): q (batch,
// n_heads, d) float32, caches (num_blocks, block_size, n_kv_heads, d) float32 or bf16 bits,
// token t of sequence b in slot t % block_size of block block_table[b][t / block_size].
// Flash-decoding: each (sequence, head) splits its context into up to max_splits ranges of
// >= kMinSplitKeys keys, so one long sequence still fills the GPU; a block of 4 warps runs one
// range (head dims over the lanes, 4 keys per warp per step, online softmax in fp32) and
// writes its normalised output with its max and sum; a second pass combines the ranges.
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
constexpr int kKeysPerStep = 4;  // per warp: independent loads in flight
constexpr int kBlockThreads = kWarps * kWarp;
// Ranges of at least 128 keys (32 steps of the block), so a block's fixed cost and the
// combine stay small against its reads; enough ranges for ~1024 blocks in all (8 per SM of
// a 132-SM GPU). Chosen by reasoning, not yet measured.
constexpr int64_t kMinSplitKeys = 128;
constexpr int64_t kTargetBlocks = 1024;

// The ranges of a context of `length` >= 1 keys: at most one per kMinSplitKeys keys, so
// each range [length * i / n, length * (i + 1) / n) holds at least one key.
__host__ __device__ int64_t splits_for(int64_t length, int64_t max_splits) {
  const int64_t ranges = (length + kMinSplitKeys - 1) / kMinSplitKeys;
  return ranges < max_splits ? ranges : max_splits;
}

// Partial results of every (row = b * n_heads + h, range i) at row * max_splits + i.
struct Partials {
  float* out;  // (rows * max_splits, d) each range's softmax-weighted values, normalised
  float* max;  // (rows * max_splits,) its largest score (log2 units)
  float* sum;  // (rows * max_splits,) its sum of exp2(score - max)
};

// Grid: rows x max_splits blocks; block (row, i) runs range i of row, or nothing past the
// row's own split count.
template <int kDims, typename T>
__global__ void __launch_bounds__(kBlockThreads) decode_split_kernel(AttentionDecodeParams p, int64_t max_splits,
                                                                     Partials partials) {
  __shared__ float warp_max_s[kWarps], warp_sum_s[kWarps];
  __shared__ float warp_acc[kWarps][kDims * kWarp];

  const int64_t row = blockIdx.x / max_splits, split = blockIdx.x % max_splits;
  const int64_t b = row / p.n_heads, head = row % p.n_heads;
  const int64_t length = p.context_lens[b];
  const int64_t n_splits = splits_for(length, max_splits);
  if (split >= n_splits) return;  // the same for the whole block, before the barrier
  const int64_t begin = length * split / n_splits, end = length * (split + 1) / n_splits;
  const int64_t d = p.head_dim, kv_column = head / (p.n_heads / p.n_kv_heads) * d;
  const int32_t* table = p.block_table + b * p.max_blocks;
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;

  float q[kDims], acc[kDims];
#pragma unroll
  for (int i = 0; i < kDims; ++i) {
    const int64_t c = i * kWarp + lane;
    q[i] = c < d ? p.q[row * d + c] * (p.scale * kLog2e) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -CUDART_INF_F, l = 0.0f;
  // Warp w takes keys begin + 4w .. begin + 4w + 3, then 16 further on, and so on.
  for (int64_t t0 = begin + warp * kKeysPerStep; t0 < end; t0 += kWarps * kKeysPerStep) {
    int64_t key_row[kKeysPerStep];  // where key t0 + u's head row starts in the caches; -1: past the range
    float s[kKeysPerStep];
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      const int64_t t = t0 + u;
      key_row[u] = t < end ? (static_cast<int64_t>(table[t / p.block_size]) * p.block_size + t % p.block_size) *
                                     p.n_kv_heads * d + kv_column
                           : -1;
      float partial = 0.0f;
      if (key_row[u] >= 0) {
#pragma unroll
        for (int i = 0; i < kDims; ++i) {
          const int64_t c = i * kWarp + lane;
          if (c < d) partial = fmaf(q[i], kv_float(k_cache, key_row[u] + c), partial);
        }
      }
      const float total = warp_sum(partial);  // every lane, whatever key_row (it is the warp's)
      s[u] = key_row[u] >= 0 ? total : -CUDART_INF_F;
    }
    // s[0] is finite (t0 < end), so m_new is.
    float m_new = m;
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) m_new = fmaxf(m_new, s[u]);
    const float alpha = exp2f(m - m_new);  // 0 on the first step, where m is -inf
    l *= alpha;
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[i] *= alpha;
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      if (key_row[u] < 0) continue;
      const float weight = exp2f(s[u] - m_new);
      l += weight;
#pragma unroll
      for (int i = 0; i < kDims; ++i) {
        const int64_t c = i * kWarp + lane;
        if (c < d) acc[i] = fmaf(weight, kv_float(v_cache, key_row[u] + c), acc[i]);
      }
    }
    m = m_new;
  }
  // The warps' results into one; a warp that had no key (m = -inf, l = 0, acc = 0) weighs 0.
  if (lane == 0) {
    warp_max_s[warp] = m;
    warp_sum_s[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kDims; ++i) warp_acc[warp][i * kWarp + lane] = acc[i];
  __syncthreads();
  float block_max = -CUDART_INF_F;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max_s[w]);  // finite: warp 0 had key begin
  float weight[kWarps], block_sum = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = exp2f(warp_max_s[w] - block_max);
    block_sum += weight[w] * warp_sum_s[w];
  }
  const int64_t index = row * max_splits + split;
  for (int64_t c = threadIdx.x; c < d; c += kBlockThreads) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += weight[w] * warp_acc[w][c];
    partials.out[index * d + c] = o / block_sum;  // block_sum >= 1: the largest score's weight is 1
  }
  if (threadIdx.x == 0) {
    partials.max[index] = block_max;
    partials.sum[index] = block_sum;
  }
}

// Grid: one block per row: out = sum_i w_i out_i / sum_i w_i, w_i = sum_i * exp2(max_i - max).
__global__ void __launch_bounds__(kBlockThreads) decode_combine_kernel(AttentionDecodeParams p, int64_t max_splits,
                                                                       Partials partials) {
  const int64_t row = blockIdx.x;
  const int64_t n_splits = splits_for(p.context_lens[row / p.n_heads], max_splits);
  const int64_t first = row * max_splits, d = p.head_dim;
  float top = -CUDART_INF_F;
  for (int64_t i = 0; i < n_splits; ++i) top = fmaxf(top, partials.max[first + i]);
  float total = 0.0f;
  for (int64_t i = 0; i < n_splits; ++i) total += partials.sum[first + i] * exp2f(partials.max[first + i] - top);
  for (int64_t c = threadIdx.x; c < d; c += kBlockThreads) {
    float o = 0.0f;
    for (int64_t i = 0; i < n_splits; ++i) {
      o += partials.sum[first + i] * exp2f(partials.max[first + i] - top) * partials.out[(first + i) * d + c];
    }
    p.out[row * d + c] = o / total;
  }
}

// Device memory for one call, ordered on its stream (no device-wide sync, capturable in a CUDA graph).
class StreamScratch {
 public:
  StreamScratch(int64_t count, cudaStream_t stream) : stream_(stream) {
    check(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), count * sizeof(float), stream), "cudaMallocAsync");
  }
  ~StreamScratch() { cudaFreeAsync(ptr_, stream_); }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  float* get() const { return ptr_; }

 private:
  float* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace

void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  if (p.n_heads < 1 || p.n_kv_heads < 1 || p.n_heads % p.n_kv_heads != 0 || p.block_size < 1) {
    throw std::runtime_error("attention_decode: expected n_kv_heads dividing n_heads and block_size >= 1, got " +
                             std::to_string(p.n_kv_heads) + ", " + std::to_string(p.n_heads) + " and " +
                             std::to_string(p.block_size));
  }
  const int64_t rows = p.batch * p.n_heads;
  const int64_t table_splits = std::max<int64_t>(1, splits_for(p.max_blocks * p.block_size, INT_MAX));
  const int64_t max_splits = std::clamp<int64_t>((kTargetBlocks + rows - 1) / rows, 1, table_splits);
  if (rows > INT_MAX / max_splits) {
    throw std::runtime_error("attention_decode: batch x n_heads = " + std::to_string(rows) +
                             " is more blocks than one launch takes");
  }
  StreamScratch scratch(rows * max_splits * (p.head_dim + 2), stream);
  const int64_t partial_rows = rows * max_splits;
  const Partials partials{scratch.get(), scratch.get() + partial_rows * p.head_dim,
                          scratch.get() + partial_rows * (p.head_dim + 1)};
  with_dims_per_lane(p.head_dim, "attention_decode", [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    const unsigned blocks = static_cast<unsigned>(partial_rows);
    if (p.kv_bf16) {
      decode_split_kernel<kDims, uint16_t><<<blocks, kBlockThreads, 0, stream>>>(p, max_splits, partials);
    } else {
      decode_split_kernel<kDims, float><<<blocks, kBlockThreads, 0, stream>>>(p, max_splits, partials);
    }
  });
  check(cudaGetLastError(), "attention_decode launch");
  decode_combine_kernel<<<static_cast<unsigned>(rows), kBlockThreads, 0, stream>>>(p, max_splits, partials);
  check(cudaGetLastError(), "attention_decode combine launch");
}

}  // namespace aigc::cuda

namespace aigc {

double attention_decode_cuda(const AttentionDecodeParams& host, int timed_runs) {
  if (host.batch == 0) return 0.0;
  const int64_t q_count = host.batch * host.n_heads * host.head_dim;
  const int64_t cache_bytes =
      host.num_blocks * host.block_size * host.n_kv_heads * host.head_dim * (host.kv_bf16 ? 2 : 4);
  auto q = cuda::copy_to_device(host.q, q_count, "attention_decode: q copy");
  auto k_cache = cuda::copy_to_device(static_cast<const uint8_t*>(host.k_cache), cache_bytes,
                                      "attention_decode: k_cache copy");
  auto v_cache = cuda::copy_to_device(static_cast<const uint8_t*>(host.v_cache), cache_bytes,
                                      "attention_decode: v_cache copy");
  auto table =
      cuda::copy_to_device(host.block_table, host.batch * host.max_blocks, "attention_decode: block_table copy");
  auto lens = cuda::copy_to_device(host.context_lens, host.batch, "attention_decode: context_lens copy");
  cuda::DeviceBuffer<float> out(q_count);
  AttentionDecodeParams p = host;
  p.q = q.get();
  p.k_cache = k_cache.get();
  p.v_cache = v_cache.get();
  p.block_table = table.get();
  p.context_lens = lens.get();
  p.out = out.get();
  auto run = [&] { cuda::attention_decode(p, nullptr); };
  const double seconds = timed_runs > 0 ? cuda::seconds_per_run(timed_runs, run) : (run(), 0.0);
  cuda::check(cudaMemcpy(host.out, out.get(), q_count * sizeof(float), cudaMemcpyDeviceToHost),
              "attention_decode: out copy");
  return seconds;
}

}  // namespace aigc
