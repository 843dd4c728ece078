// The batched sampler on the device (aigc/sampling.h's per-row order and statuses): every
// pointer in DeviceSampleParams is device memory, the kernels run on `stream`
// (asynchronously: a launch error is thrown here, a fault at the stream's next
// synchronisation). It draws the CPU sampler's tokens: the float arithmetic that decides
// a token (exp, the lane sums of the probabilities, the mass search) is the CPU build's
// named by `arithmetic`, and every order-dependent sum runs in the CPU's order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "aigc/isa.h"
#include "aigc/sampling.h"

namespace aigc::cuda {

// The rounding of one CPU build of cpu/sampling.cc (cpu/simd/vec_*.h): its vector width
// (exp_scaled's float lanes), fused multiply-adds in its exp or not, and its horizontal sum
// (AVX2 / AVX-512 halve the lanes, the generic build adds them in order).
struct CpuArithmetic {
  int width;
  bool fused;
  bool halving_sum;
};
CpuArithmetic cpu_arithmetic(Isa isa);

struct DeviceSampleParams {
  const float* logits;  // (batch, vocab), not modified
  int64_t batch;
  int64_t vocab;
  const uint64_t* seeds;  // (batch,) each; the ranges of aigc::SampleParams
  const uint64_t* steps;
  const float* temperature;
  const int32_t* top_k;
  const float* top_p;
  const float* min_p;
  const float* repetition_penalty;
  const float* presence_penalty;
  const float* frequency_penalty;
  // Each row's history as TokenCounts holds it, CSR: row r's distinct tokens (ascending)
  // history_tokens[history_offsets[r] .. history_offsets[r + 1]), how many times each was
  // generated in history_generated; history_offsets null = no history.
  const int32_t* history_tokens;
  const int32_t* history_generated;
  const int64_t* history_offsets;  // (batch + 1,)
  const int64_t* bias_ids;         // (m,) or null; as aigc::SampleParams
  const float* bias_values;
  const int64_t* bias_offsets;  // (batch + 1,)
  // The CPU's in-place mode (scratch logits, no log-probabilities): bias and penalties
  // before the NaN / +inf / -inf checks, so a NaN they make is kNaN and a row they ban
  // entirely kAllBanned (kAllNegInf without a bias).
  bool edits_first;
  bool any_top_k;  // some row has 0 < top_k < vocab: the rows are then sorted once
  CpuArithmetic arithmetic;
  int num_logprobs;     // 0 .. kMaxLogprobs, <= vocab
  int64_t* tokens;      // (batch,) out
  float* logprobs;      // (batch,) out, or null
  int64_t* top_ids;     // (batch, num_logprobs) out
  float* top_logprobs;  // (batch, num_logprobs) out
  RowStatus* status;    // (batch,) out
};

void sample(const DeviceSampleParams& p, cudaStream_t stream);

}  // namespace aigc::cuda
