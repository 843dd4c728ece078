// The CUDA attention kernels behind the CPU kernels' params (aigc/attention.h): every
// pointer in the params is device memory, the kernels run on `stream` (asynchronously: a
// launch error is thrown here, a fault at the stream's next synchronisation). Used by the
// CUDA decoder (cuda/gpt.cu) directly, and by the Python ops through host-array wrappers.
#pragma once

#include <cuda_runtime.h>

#include "aigc/attention.h"

namespace aigc::cuda {

void attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream);
// p.kv_heads_per_item (the CPU's work split) is not read. Each call takes scratch for the
// split's partial results, (batch * n_heads * splits) x (head_dim + 2) floats with splits at
// most ceil(1024 / (batch * n_heads)), stream-ordered (cudaMallocAsync / cudaFreeAsync on
// `stream`, which a CUDA graph can capture).
void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);

}  // namespace aigc::cuda
