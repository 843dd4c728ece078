// See gpt_kernels.h. One thread per element, except the layer norm (a block per row, a
// fixed reduction tree) and the row-independent projection (below).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/device.h"
#include "cuda/gpt_kernels.h"

namespace aigc::cuda {
namespace {

__device__ int64_t global_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

// runtime/linear.cc's float_to_bf16: round to nearest even; NaN stays NaN (quiet).
__device__ uint16_t to_bf16(float value) {
  uint32_t bits = __float_as_uint(value);
  if (isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

__device__ float from_bf16(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }

__global__ void embed_kernel(const int64_t* tokens, const int64_t* positions, const float* wte, const float* wpe,
                             float* h, int64_t num_tokens, int64_t c) {
  const int64_t e = global_index();
  if (e >= num_tokens * c) return;
  const int64_t t = e / c, i = e % c;
  h[e] = wte[tokens[t] * c + i] + wpe[positions[t] * c + i];
}

// Sum of `value` over the block (kThreads threads), the same tree every call; every thread
// gets the sum. `scratch` holds kThreads floats; every thread of the block must call.
__device__ float block_sum(float value, float* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  const float sum = scratch[0];
  __syncthreads();  // scratch is free again for the next call
  return sum;
}

// Block `row`: h += delta; mean and variance (two passes over the updated row); y. A thread
// reads and writes only its own elements i ≡ threadIdx.x (mod kThreads), so y may be h.
__global__ void add_layer_norm_kernel(float* h, const float* delta, const float* weight, const float* bias, float* y,
                                      int64_t dim, float eps) {
  __shared__ float scratch[kThreads];
  float* hr = h + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    if (delta != nullptr) hr[i] += delta[blockIdx.x * dim + i];
    sum += hr[i];
  }
  const float mean = block_sum(sum, scratch) / static_cast<float>(dim);
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    const float centered = hr[i] - mean;
    squares += centered * centered;
  }
  const float inv_std = rsqrtf(block_sum(squares, scratch) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) yr[i] = (hr[i] - mean) * inv_std * weight[i] + bias[i];
}

// The projection: a block of kColumns x kSlices threads computes kRows rows x kColumns
// columns of y. Thread (column, slice) sums its own slice of k for each row in k order;
// then the kSlices partial sums are added in slice order, then the bias. A row's sum thus
// depends on its x row and w only, never on m or on the other rows of its tile. A warp is
// 32 consecutive columns: its w loads are one 128-byte line per k.
constexpr int kColumns = 32, kSlices = 8, kRows = 4;
constexpr int kMaxRowTiles = 65535;  // gridDim.y's limit; more tiles loop

template <bool kBf16>
__global__ void linear_rows_kernel(const float* x, int64_t m, int64_t k, int64_t n, const void* w, const float* bias,
                                   float* y) {
  __shared__ float partial[kSlices][kRows][kColumns];
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kColumns + threadIdx.x;
  const int64_t slice = (k + kSlices - 1) / kSlices;
  const int64_t k0 = threadIdx.y * slice, k1 = min(k, k0 + slice);
  const int64_t tiles = (m + kRows - 1) / kRows;
  // Every thread runs the same tiles (the loop bounds are the block's): the barriers are
  // reached by all.
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t row0 = tile * kRows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kRows), m - row0));
    float acc[kRows] = {};
    if (column < n) {
      for (int64_t kk = k0; kk < k1; ++kk) {
        const float wv = kBf16 ? from_bf16(static_cast<const uint16_t*>(w)[kk * n + column])
                               : static_cast<const float*>(w)[kk * n + column];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r < rows) acc[r] = fmaf(x[(row0 + r) * k + kk], wv, acc[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) partial[threadIdx.y][r][threadIdx.x] = acc[r];
    __syncthreads();
    if (threadIdx.y == 0 && column < n) {
      for (int r = 0; r < rows; ++r) {
        float sum = partial[0][r][threadIdx.x];
        for (int s = 1; s < kSlices; ++s) sum += partial[s][r][threadIdx.x];
        if (bias != nullptr) sum += bias[column];
        y[(row0 + r) * n + column] = sum;
      }
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t m, int64_t n) {
  const int64_t e = global_index();
  if (e < m * n) y[e] += bias[e % n];
}

__global__ void gelu_tanh_kernel(float* x, int64_t count) {
  const int64_t e = global_index();
  if (e >= count) return;
  const float v = x[e];
  x[e] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}

template <bool kBf16>
__global__ void split_qkv_kernel(const float* qkv, const int64_t* slots, int64_t num_tokens, int64_t c, float* q,
                                 void* k, void* v, void* k_cache, void* v_cache) {
  const int64_t e = global_index();
  if (e >= num_tokens * c) return;
  const int64_t t = e / c, i = e % c;
  const float* row = qkv + t * 3 * c;
  const int64_t slot = slots[t] * c + i;
  q[e] = row[i];
  if (kBf16) {
    const uint16_t key = to_bf16(row[c + i]), value = to_bf16(row[2 * c + i]);
    static_cast<uint16_t*>(k)[e] = key;
    static_cast<uint16_t*>(v)[e] = value;
    static_cast<uint16_t*>(k_cache)[slot] = key;
    static_cast<uint16_t*>(v_cache)[slot] = value;
  } else {
    static_cast<float*>(k)[e] = row[c + i];
    static_cast<float*>(v)[e] = row[2 * c + i];
    static_cast<float*>(k_cache)[slot] = row[c + i];
    static_cast<float*>(v_cache)[slot] = row[2 * c + i];
  }
}

__global__ void gather_rows_kernel(const float* h, const float* delta, const int32_t* last, float* out,
                                   int64_t num_seqs, int64_t c) {
  const int64_t e = global_index();
  if (e >= num_seqs * c) return;
  const int64_t s = e / c, i = e % c;
  const int64_t from = static_cast<int64_t>(last[s]) * c + i;
  out[e] = h[from] + delta[from];
}

void launched(const char* what) { check(cudaGetLastError(), what); }

}  // namespace

void embed(const int64_t* tokens, const int64_t* positions, const float* wte, const float* wpe, float* h,
           int64_t num_tokens, int64_t c, cudaStream_t stream) {
  embed_kernel<<<blocks_for(num_tokens * c), kThreads, 0, stream>>>(tokens, positions, wte, wpe, h, num_tokens, c);
  launched("embed launch");
}

void add_layer_norm(float* h, const float* delta, const float* weight, const float* bias, float* y, int64_t rows,
                    int64_t dim, float eps, cudaStream_t stream) {
  // One block per row: rows is a step's token count, far below gridDim.x's 2**31 - 1.
  add_layer_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(h, delta, weight, bias, y, dim, eps);
  launched("add_layer_norm launch");
}

void linear_rows(const float* x, int64_t m, int64_t k, int64_t n, const void* w, bool w_bf16, const float* bias,
                 float* y, cudaStream_t stream) {
  if (m == 0) return;
  const dim3 block(kColumns, kSlices);
  const int64_t tiles = (m + kRows - 1) / kRows;
  const dim3 grid(static_cast<unsigned>((n + kColumns - 1) / kColumns),
                  static_cast<unsigned>(std::min<int64_t>(tiles, kMaxRowTiles)));
  if (w_bf16) {
    linear_rows_kernel<true><<<grid, block, 0, stream>>>(x, m, k, n, w, bias, y);
  } else {
    linear_rows_kernel<false><<<grid, block, 0, stream>>>(x, m, k, n, w, bias, y);
  }
  launched("linear_rows launch");
}

void add_bias(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream) {
  if (m == 0) return;
  add_bias_kernel<<<blocks_for(m * n), kThreads, 0, stream>>>(y, bias, m, n);
  launched("add_bias launch");
}

void gelu_tanh(float* x, int64_t count, cudaStream_t stream) {
  gelu_tanh_kernel<<<blocks_for(count), kThreads, 0, stream>>>(x, count);
  launched("gelu_tanh launch");
}

void split_qkv(const float* qkv, const int64_t* slots, int64_t num_tokens, int64_t c, bool kv_bf16, float* q, void* k,
               void* v, void* k_cache, void* v_cache, cudaStream_t stream) {
  if (kv_bf16) {
    split_qkv_kernel<true><<<blocks_for(num_tokens * c), kThreads, 0, stream>>>(qkv, slots, num_tokens, c, q, k, v,
                                                                                k_cache, v_cache);
  } else {
    split_qkv_kernel<false><<<blocks_for(num_tokens * c), kThreads, 0, stream>>>(qkv, slots, num_tokens, c, q, k, v,
                                                                                 k_cache, v_cache);
  }
  launched("split_qkv launch");
}

void gather_rows(const float* h, const float* delta, const int32_t* last, float* out, int64_t num_seqs, int64_t c,
                 cudaStream_t stream) {
  gather_rows_kernel<<<blocks_for(num_seqs * c), kThreads, 0, stream>>>(h, delta, last, out, num_seqs, c);
  launched("gather_rows launch");
}

}  // namespace aigc::cuda
