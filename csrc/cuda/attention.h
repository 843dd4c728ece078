// The CUDA attention kernels behind the CPU kernels' params (aigc/attention.h): every
// pointer in the params is device memory, the kernels run on `stream` (asynchronously: a
// launch error is thrown here, a fault at the stream's next synchronisation). Used by the
// CUDA decoder (cuda/gpt.cu) directly, and by the Python ops through host-array wrappers.
#pragma once

#include <cuda_runtime.h>

#include "aigc/attention.h"

namespace aigc::cuda {

void attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream);
// p.kv_heads_per_item (the CPU's work split) is not read.
void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);

}  // namespace aigc::cuda
