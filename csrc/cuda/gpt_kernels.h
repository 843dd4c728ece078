// The small kernels of the CUDA decoder (cuda/gpt.cc), each the device twin of a CPU step
// of runtime/gpt.cc; every pointer is device memory, every launch asynchronous on `stream`
// (a launch error throws std::runtime_error here).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace aigc::cuda {

// h (tokens, c) = wte[tokens] + wpe[positions].
void embed(const int64_t* tokens, const int64_t* positions, const float* wte, const float* wpe, float* h,
           int64_t num_tokens, int64_t c, cudaStream_t stream);
// h += delta (skipped when null), then y = LN(h) · weight + bias per row (y may be h).
void add_layer_norm(float* h, const float* delta, const float* weight, const float* bias, float* y, int64_t rows,
                    int64_t dim, float eps, cudaStream_t stream);
// y (m, n) = x (m, k) · w (k, n) [+ bias], w float32 or bf16 bits; each row of y computed by
// the same operations in the same order whatever m is and whatever the other rows are (the
// determinism contract: a decoding row's numbers do not depend on its batch).
void linear_rows(const float* x, int64_t m, int64_t k, int64_t n, const void* w, bool w_bf16, const float* bias,
                 float* y, cudaStream_t stream);
// y (m, n) += bias (n,).
void add_bias(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream);
// x ← GELU(x), the tanh form (GPT-2's "gelu_new").
void gelu_tanh(float* x, int64_t count, cudaStream_t stream);
// qkv (tokens, 3c) → q (tokens, c), k and v (tokens, c) (float32, or bf16 bits rounded to
// nearest even when kv_bf16), and the same keys and values into cache slot slots[t]
// (k_cache, v_cache: (slots, c) of the cache's dtype).
void split_qkv(const float* qkv, const int64_t* slots, int64_t num_tokens, int64_t c, bool kv_bf16, float* q, void* k,
               void* v, void* k_cache, void* v_cache, cudaStream_t stream);
// out (num_seqs, c) = h[last[s]] + delta[last[s]].
void gather_rows(const float* h, const float* delta, const int32_t* last, float* out, int64_t num_seqs, int64_t c,
                 cudaStream_t stream);

}  // namespace aigc::cuda
