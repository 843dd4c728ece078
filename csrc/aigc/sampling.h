// The batched sampler: one call picks the next token of every row of a (batch, vocab)
// logits array, each row with its own parameters. Per row, in this order: logit bias ->
// repetition (HF rule, all history tokens) / presence / frequency (OpenAI rule, generated
// tokens only) penalties -> greedy when temperature == 0, else p = exp((l - max) / T) ->
// top_k -> top_p -> min_p -> one uniform draw, inverse CDF over the kept tokens ordered by
// descending probability (ties: lower id first). The uniform is Philox4x64-10 keyed
// (seed, kSamplerStream) at counter (step, 0, 0, 0): a row's token depends only on that
// row. logprobs are the log-softmax of the raw logits (before bias, penalties, temperature).
#pragma once

#include <cstdint>
#include <vector>

#include "aigc/isa.h"

namespace aigc {

constexpr uint64_t kSamplerStream = 0x53414d504c45ull;  // "SAMPLE"; see kLatentStream in rng.h
constexpr int kMaxLogprobs = 20;

// Why a row was not sampled. A row that fails fails alone: the kernel records its status,
// writes token -1 (log-probability NaN, top ids -1, top log-probabilities NaN) and goes on
// with the other rows; the binding builds the message from the status.
enum class SampleStatus : int32_t {
  kOk = 0,
  kNaN,          // a raw logit is NaN
  kPosInf,       // a raw logit is +inf (or, edited in place, one the edits made)
  kAllNegInf,    // every raw logit is -inf
  kAllBanned,    // every token at -inf after logit_bias (bans) and penalties
  kEditNaN,      // bias and penalties made the logit of `token` NaN
  kEditPosInf,   // ... or +inf (e.g. repetition_penalty 1e-39 dividing a positive logit)
};
struct RowStatus {
  SampleStatus code;
  int32_t token;  // kEditNaN / kEditPosInf: the token whose logit it was; else -1
};

// One row's history as the penalties read it: each distinct token once, in token order
// (the edits then walk the row's blocks in order), with how many times it was generated
// (0: in the prompt only). A sampler that runs step after step keeps one per row and adds
// each token it samples, so a step reads the distinct tokens, not the whole history again.
class TokenCounts {
 public:
  TokenCounts() = default;
  // history[0, n) in [0, vocab), the first prompt_len of them prompt tokens.
  TokenCounts(const int64_t* history, int64_t n, int64_t prompt_len, int64_t vocab);
  void add_generated(int32_t token);
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const int32_t* tokens() const { return tokens_.data(); }
  const int32_t* generated() const { return generated_.data(); }

 private:
  std::vector<int32_t> tokens_, generated_;
};

struct SampleParams {
  const float* logits;  // (batch, vocab), finite or -inf
  int64_t batch;
  int64_t vocab;
  const uint64_t* seeds;               // (batch,)
  const uint64_t* steps;               // (batch,)
  const float* temperature;            // (batch,) >= 0, 0 = greedy
  const int32_t* top_k;                // (batch,) >= 0, 0 or >= vocab = off
  const float* top_p;                  // (batch,) in (0, 1], 1 = off
  const float* min_p;                  // (batch,) in [0, 1], 0 = off
  const float* repetition_penalty;     // (batch,) > 0, 1 = off
  const float* presence_penalty;       // (batch,) 0 = off
  const float* frequency_penalty;      // (batch,) 0 = off
  const TokenCounts* history;          // (batch,) each row's history; null = none
  const int64_t* bias_ids;             // (m,) ids in [0, vocab); null = no bias
  const float* bias_values;            // (m,) finite or -inf (a ban)
  const int64_t* bias_offsets;         // (batch + 1,) CSR, 0 .. m
  // null, or `logits` itself, handed over as scratch: without log-probabilities to compute
  // (logprobs null, num_logprobs 0) bias and penalties then edit it in place instead of in
  // copies of the blocks they touch.
  float* scratch_logits;
  int num_logprobs;                    // 0 .. kMaxLogprobs, <= vocab
  int64_t* tokens;                     // (batch,) out
  float* logprobs;                     // (batch,) out; null = not wanted (saves the raw log-sum-exp)
  int64_t* top_ids;                    // (batch, num_logprobs) out
  float* top_logprobs;                 // (batch, num_logprobs) out
  RowStatus* status;                   // (batch,) out: kOk, or why the row has token -1
};

// Threads over rows (cpu/dispatch.cc). Never throws for a row's logits: NaN or +inf
// logits, a row of all -inf, or a row whose every token a bias of -inf bans set that
// row's status and leave the others sampled.
void sample_cpu(const SampleParams& p);
#ifdef AIGC_WITH_CUDA
// The same on the GPU (cuda/sampling.cu), from and to host arrays (std::runtime_error on a
// CUDA error): the same tokens, statuses and top ids, in the arithmetic of the CPU build
// that active_isa() names.
void sample_cuda(const SampleParams& p);
// Waits for the device (cudaDeviceSynchronize): benchmarks time whole calls.
void cuda_synchronize();
#endif

}  // namespace aigc

// Rows [first, last) of sample_cpu, one version per ISA (cpu/sampling.cc).
AIGC_ISA_DECLARE(void, sample_rows, (const SampleParams& p, int64_t first, int64_t last))
