// The sampler's per-row state, kept in the runtime for as long as its row lives: the
// row's parameters, seed and step, its token counts (the penalties' history) and its logit
// bias. Sampler::sample gathers any set of rows into one SampleParams (aigc/sampling.h),
// runs the kernel, then adds each sampled token to its row's history and moves the row's
// step on; a row the kernel could not sample keeps both, so its next call draws what a
// fresh row at that step would. FixedBatchSampler is ops.Sampler's batch: rows made once.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/sampling.h"

namespace aigc {

struct SamplingRow {
  uint64_t seed = 0, step = 0;  // step: the next token's index among the row's generated ones
  float temperature = 1.0f;     // >= 0, 0 = greedy
  int32_t top_k = 0;            // >= 0, 0 = off
  float top_p = 1.0f, min_p = 0.0f;
  float repetition_penalty = 1.0f, presence_penalty = 0.0f, frequency_penalty = 0.0f;
  bool counts_history = false;  // history is kept (and grows with each sampled token)
  TokenCounts history;          // empty: no penalty reads it
  std::vector<int64_t> bias_ids;  // ids in [0, vocab)
  std::vector<float> bias_values; // finite or -inf (a ban)
  // In place of bias_ids / bias_values for the first token (step 0) when not empty: token
  // healing bans every token that does not extend the prompt's trimmed last token.
  std::vector<int64_t> first_bias_ids;
  std::vector<float> first_bias_values;

  bool first_bias_applies() const { return step == 0 && !first_bias_ids.empty(); }
  const std::vector<int64_t>& step_bias_ids() const { return first_bias_applies() ? first_bias_ids : bias_ids; }
  const std::vector<float>& step_bias_values() const {
    return first_bias_applies() ? first_bias_values : bias_values;
  }
};

// Caller-owned outputs of one call of n rows: tokens (n,), logprobs (n,) or null,
// top_ids / top_logprobs (n, num_logprobs), status (n,).
struct SampleOutputs {
  int64_t* tokens;
  float* logprobs;
  int64_t* top_ids;
  float* top_logprobs;
  RowStatus* status;
};

// Row r's message from the status the kernel left, e.g. "logits: row 3 has +inf".
std::string row_message(int64_t row, const RowStatus& status);

class Sampler {
 public:
  // cuda: the kernel runs on the GPU (sample_cuda, CUDA builds only), else on the CPU.
  explicit Sampler(int64_t vocab, bool cuda = false) : vocab_(vocab), cuda_(cuda) {}
  int64_t vocab() const { return vocab_; }
  // Samples rows[i] from logits row i: logits (n, vocab), edited in place when `scratch`.
  // True when every row sampled. One call at a time (std::runtime_error otherwise): the
  // rows' histories grow inside it.
  bool sample(float* logits, bool scratch, SamplingRow* const* rows, int64_t n, int num_logprobs,
              const SampleOutputs& out);

 private:
  int64_t vocab_;
  bool cuda_;
  // Gathered per call; the histories are moved in and back out (no copy).
  std::vector<uint64_t> seeds_, steps_;
  std::vector<float> temperature_, top_p_, min_p_, repetition_, presence_, frequency_;
  std::vector<int32_t> top_k_;
  std::vector<TokenCounts> histories_;
  std::vector<int64_t> bias_ids_, bias_offsets_;
  std::vector<float> bias_values_;
  std::atomic<bool> busy_{false};
};

// A batch of rows prepared once and sampled step after step (ops.Sampler).
class FixedBatchSampler {
 public:
  // rows' histories, when given: ids (total,), CSR offsets (batch + 1,), prompt_lens
  // (batch,) or null (every token generated); counted over the thread pool. cuda: as Sampler.
  FixedBatchSampler(int64_t vocab, std::vector<SamplingRow> rows, int num_logprobs, bool logprobs,
                    const int64_t* history, const int64_t* history_offsets, const int64_t* prompt_lens,
                    bool cuda = false);
  int64_t batch() const { return static_cast<int64_t>(rows_.size()); }
  bool logprobs() const { return logprobs_; }
  int num_logprobs() const { return num_logprobs_; }
  // logits (batch, vocab); out.logprobs is ignored (null) unless logprobs().
  bool sample(float* logits, bool scratch, SampleOutputs out);
  const RowStatus* status() const { return status_.data(); }

 private:
  std::vector<SamplingRow> rows_;
  std::vector<SamplingRow*> pointers_;
  std::vector<RowStatus> status_;
  int num_logprobs_;
  bool logprobs_;
  Sampler sampler_;
};

}  // namespace aigc
