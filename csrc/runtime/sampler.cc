// See sampler.h.
#include "runtime/sampler.h"

#include <stdexcept>
#include <utility>

#include "runtime/thread_pool.h"

namespace aigc {

std::string row_message(int64_t row, const RowStatus& status) {
  const std::string token = " at token " + std::to_string(status.token) + " after logit_bias and penalties";
  std::string what;
  switch (status.code) {
    case SampleStatus::kOk: what = "was sampled"; break;
    case SampleStatus::kNaN: what = "has NaN"; break;
    case SampleStatus::kPosInf: what = "has +inf"; break;
    case SampleStatus::kAllNegInf: what = "is all -inf"; break;
    case SampleStatus::kAllBanned: what = "has every token at -inf after logit_bias"; break;
    case SampleStatus::kEditNaN: what = "has NaN" + token; break;
    case SampleStatus::kEditPosInf: what = "has +inf" + token; break;
  }
  return "logits: row " + std::to_string(row) + " " + what;
}

bool Sampler::sample(float* logits, bool scratch, SamplingRow* const* rows, int64_t n, int num_logprobs,
                     const SampleOutputs& out) {
  if (n == 0) return true;
  if (busy_.exchange(true)) throw std::runtime_error("Sampler: already sampling in another thread");
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy = false; }
  } release{busy_};
  auto gather = [n](auto& v) { v.resize(n); };
  gather(seeds_), gather(steps_), gather(temperature_), gather(top_k_), gather(top_p_), gather(min_p_);
  gather(repetition_), gather(presence_), gather(frequency_), gather(histories_);
  bool any_bias = false;
  for (int64_t r = 0; r < n; ++r) {
    const SamplingRow& row = *rows[r];
    seeds_[r] = row.seed;
    steps_[r] = row.step;
    temperature_[r] = row.temperature;
    top_k_[r] = row.top_k;
    top_p_[r] = row.top_p;
    min_p_[r] = row.min_p;
    repetition_[r] = row.repetition_penalty;
    presence_[r] = row.presence_penalty;
    frequency_[r] = row.frequency_penalty;
    any_bias |= !row.step_bias_ids().empty();
  }
  if (any_bias) {
    bias_ids_.clear();
    bias_values_.clear();
    bias_offsets_.assign(1, 0);
    for (int64_t r = 0; r < n; ++r) {
      const std::vector<int64_t>& ids = rows[r]->step_bias_ids();
      const std::vector<float>& values = rows[r]->step_bias_values();
      bias_ids_.insert(bias_ids_.end(), ids.begin(), ids.end());
      bias_values_.insert(bias_values_.end(), values.begin(), values.end());
      bias_offsets_.push_back(static_cast<int64_t>(bias_ids_.size()));
    }
  }
  // A row without history is an empty TokenCounts: the kernel edits nothing for it.
  for (int64_t r = 0; r < n; ++r) std::swap(histories_[r], rows[r]->history);
  SampleParams p{};
  p.logits = logits;
  p.scratch_logits = scratch ? logits : nullptr;
  p.batch = n;
  p.vocab = vocab_;
  p.seeds = seeds_.data();
  p.steps = steps_.data();
  p.temperature = temperature_.data();
  p.top_k = top_k_.data();
  p.top_p = top_p_.data();
  p.min_p = min_p_.data();
  p.repetition_penalty = repetition_.data();
  p.presence_penalty = presence_.data();
  p.frequency_penalty = frequency_.data();
  p.history = histories_.data();
  if (any_bias) {
    p.bias_ids = bias_ids_.data();
    p.bias_values = bias_values_.data();
    p.bias_offsets = bias_offsets_.data();
  }
  p.num_logprobs = num_logprobs;
  p.tokens = out.tokens;
  p.logprobs = out.logprobs;
  p.top_ids = out.top_ids;
  p.top_logprobs = out.top_logprobs;
  p.status = out.status;
  try {
#ifdef AIGC_WITH_CUDA
    if (cuda_) {
      sample_cuda(p);
    } else {
      sample_cpu(p);
    }
#else
    sample_cpu(p);
#endif
  } catch (...) {
    for (int64_t r = 0; r < n; ++r) std::swap(histories_[r], rows[r]->history);
    throw;
  }
  bool all_sampled = true;
  for (int64_t r = 0; r < n; ++r) {
    SamplingRow& row = *rows[r];
    std::swap(histories_[r], row.history);
    if (out.status[r].code != SampleStatus::kOk) {
      all_sampled = false;
      continue;
    }
    if (row.counts_history) row.history.add_generated(static_cast<int32_t>(out.tokens[r]));
    ++row.step;
  }
  return all_sampled;
}

FixedBatchSampler::FixedBatchSampler(int64_t vocab, std::vector<SamplingRow> rows, int num_logprobs, bool logprobs,
                                     const int64_t* history, const int64_t* offsets, const int64_t* prompt_lens,
                                     bool cuda)
    : rows_(std::move(rows)), num_logprobs_(num_logprobs), logprobs_(logprobs), sampler_(vocab, cuda) {
  const int64_t b = batch();
  if (history != nullptr) {
    parallel_for(b, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        rows_[r].counts_history = true;
        rows_[r].history = TokenCounts(history + offsets[r], offsets[r + 1] - offsets[r],
                                       prompt_lens != nullptr ? prompt_lens[r] : 0, vocab);
      }
    });
  }
  pointers_.resize(b);
  for (int64_t r = 0; r < b; ++r) pointers_[r] = &rows_[r];
  status_.assign(b, RowStatus{SampleStatus::kOk, -1});
}

bool FixedBatchSampler::sample(float* logits, bool scratch, SampleOutputs out) {
  if (!logprobs_) out.logprobs = nullptr;
  out.status = status_.data();
  return sampler_.sample(logits, scratch, pointers_.data(), batch(), num_logprobs_, out);
}

}  // namespace aigc
