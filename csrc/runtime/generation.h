// The native continuous batch: the waiting queue in arrival order, admission while KV
// blocks and the step's token budget last, preemption of the latest arrival when the
// pool is empty (recomputed exactly later: its prompt prefilled again, then its generated
// tokens replayed one per step as decode rows), and one step — the packed StepBatch,
// the model's forward, sampling of the due rows with each row's own SamplingRow, the
// token-level stops (EOS, max_new_tokens), freeing finished sequences' blocks — in one
// call that needs no Python. Text-level stops (stop strings) are the caller's: remove().
// The model is a GptModel over its KvCache or an LstmModel over its LstmState (a block
// is a sequence's state slot there: one per sequence, so an LSTM batch with a slot per
// row never preempts).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "aigc/linear.h"
#include "runtime/block_pool.h"
#include "runtime/gpt.h"
#include "runtime/lstm.h"
#include "runtime/sampler.h"

namespace aigc {

struct GenerationRequest {
  int64_t id = 0;
  std::vector<int64_t> prompt;  // >= 1 token, each in [0, vocab)
  SamplingRow sampling;         // params, seed, bias; history and step are set by add
  int64_t eos_id = -1;          // -1: none (ignore_eos)
  int64_t max_new_tokens = 1;   // >= 1
  int num_logprobs = -1;        // -1: no log-probabilities; 0 .. kMaxLogprobs: chosen + top n
};

enum class RowState : int32_t { kRunning = 0, kStoppedEos = 1, kStoppedLength = 2, kError = 3 };

// The rows of one step that produced a token or failed, in batch order.
struct StepResult {
  std::vector<int64_t> ids, tokens;  // token -1 for kError
  std::vector<RowState> states;
  std::vector<std::string> errors;   // kError's message, else empty
  std::vector<int32_t> num_top;      // -1: the row asked for no log-probabilities
  std::vector<float> logprobs;       // (rows,)
  std::vector<int64_t> top_ids;      // (rows, width)
  std::vector<float> top_logprobs;   // (rows, width)
  int width = 0;
  void clear();
};

// What a Generation runs: a model and the pool its sequences' state lives in.
class BatchModel {
 public:
  virtual ~BatchModel() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t context() const = 0;  // the most tokens a sequence may hold
  virtual BlockPool& pool() = 0;
  virtual void forward(const StepBatch& batch, float* logits) = 0;  // logits (num_seqs, vocab)
};

// A model and its own kind of pool under the one face Generation drives: GptModel over
// KvCache, LstmModel over LstmState, the CUDA decoder over its device cache (cuda/gpt.h).
template <typename Model, typename Pool>
class ModelOn final : public BatchModel {
 public:
  ModelOn(Model& model, Pool& pool) : model_(model), pool_(pool) { model.check_cache(pool); }
  int64_t vocab_size() const override { return model_.vocab_size(); }
  int64_t context() const override { return model_.context(); }
  BlockPool& pool() override { return pool_; }
  void forward(const StepBatch& batch, float* logits) override { model_.forward(batch, pool_, logits); }

 private:
  Model& model_;
  Pool& pool_;
};

class Generation {
 public:
  Generation(GptModel& model, KvCache& cache, int64_t max_batch_size, int64_t max_step_tokens);
  Generation(LstmModel& model, LstmState& state, int64_t max_batch_size, int64_t max_step_tokens);
  // Any other model: the CUDA decoder (python/cuda_decoder.cc), its logits copied to the host.
  Generation(std::unique_ptr<BatchModel> model, int64_t max_batch_size, int64_t max_step_tokens);

  // Queues a request (std::invalid_argument: a live id again, or one that could never
  // run: more tokens than the context, more blocks than the whole cache).
  void add(GenerationRequest request);
  // Cancels (or ends, after a stop string) a sequence wherever it is; frees its blocks.
  // False when the id is unknown.
  bool remove(int64_t id);
  // Takes a sequence back to `generated` tokens (when it has more: a step whose results
  // the caller did not take) and queues it first, to be recomputed exactly.
  void rewind(int64_t id, int64_t generated);
  // One step over everything that can run now; the result stays valid until the next call.
  const StepResult& step();

  // Counts as of the end of the last call: safe to read from any thread, even while a
  // step runs (an Engine's callers read them while its thread steps).
  int64_t num_waiting() const { return waiting_count_; }
  int64_t num_running() const { return running_count_; }
  int64_t free_blocks() const { return free_count_; }
  int64_t num_blocks() const { return cache_.num_blocks(); }
  int64_t preemptions() const { return preemptions_; }
  // add, remove, rewind, step and these two take turns: a call while another runs throws
  // std::runtime_error (the queues are the batch's).
  std::vector<int64_t> waiting_ids();
  std::vector<int64_t> running_ids();

 private:
  struct Sequence {
    GenerationRequest request;
    std::vector<int64_t> generated;
    std::vector<int32_t> blocks;
    int64_t cached = 0;  // tokens whose keys and values are in the cache
    bool running = false;
    int64_t known() const { return static_cast<int64_t>(request.prompt.size() + generated.size()); }
    int64_t token(int64_t position) const;
  };
  using Owned = std::unique_ptr<Sequence>;

  class Turn;  // the busy flag, held for one call; publishes the counts at its end
  int64_t blocks_for(int64_t tokens) const { return cache_.blocks_for(tokens); }
  void make_room();
  void preempt(Sequence* seq);
  int64_t admit();  // how many sequences at the end of running_ were admitted
  void forward(int64_t first_prompt);
  void sample(const std::vector<int64_t>& due);
  void release(Sequence& seq);  // its blocks back to the cache
  void reset(Sequence& seq, int64_t generated);  // back to `generated` tokens, uncached

  std::unique_ptr<BatchModel> model_;
  BlockPool& cache_;
  int64_t max_batch_size_, max_step_tokens_;
  std::atomic<int64_t> preemptions_{0}, waiting_count_{0}, running_count_{0}, free_count_{0};
  std::atomic<bool> busy_{false};
  std::deque<Owned> waiting_;
  std::vector<Owned> running_;
  std::vector<Owned> finished_;  // the last step's, kept for rewind
  std::unordered_set<int64_t> live_;
  Sampler sampler_;
  StepResult result_;
  // Step buffers.
  std::vector<Sequence*> batch_;
  std::vector<int64_t> tokens_, positions_;
  std::vector<int32_t> cu_seqlens_, context_lens_, block_table_;
  std::vector<uint8_t> is_prompt_;
  CacheLineVector<float> logits_, due_logits_;
  std::vector<SamplingRow*> rows_;
  std::vector<int64_t> out_tokens_, out_top_ids_;
  std::vector<float> out_logprobs_, out_top_logprobs_;
  std::vector<RowStatus> out_status_;
};

}  // namespace aigc
