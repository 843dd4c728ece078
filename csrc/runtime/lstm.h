// The native LSTM language model: embedding → n_layer LSTM layers → linear head, over one
// packed step of the continuous batch (runtime/step_batch.h) — whole prompts from the zero
// state and single tokens that continue a sequence's state — returning the next-token
// logits of each sequence. Per layer, the input projection x·W_ihᵀ (+ b_ih + b_hh) runs
// once over every token of the step; then, one time step at a time, the recurrent
// projection h·W_hhᵀ over the sequences that still have a token there, and the fused cell
// update (aigc/lstm.h). Every projection is linear_forward's (aigc/linear.h), whose rows
// never depend on the batch, so neither do a request's numbers.
// Weights come by their torch names (embedding.weight, lstm.weight_ih_l{i}, lstm.weight_hh_l{i},
// lstm.bias_ih_l{i}, lstm.bias_hh_l{i}, head.weight, head.bias; gates in torch's order
// i, f, g, o) from the exported ONNX file's initializers, converted once to the dtype.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "aigc/linear.h"
#include "runtime/block_pool.h"
#include "runtime/step_batch.h"

namespace aigc {

struct LstmConfig {
  int64_t vocab_size, n_embd, hidden_size, n_layer;
  int64_t context;  // the most tokens (prompt + generated) a sequence may hold
};

// The sequences' states: h and c of every layer, one slot per sequence. A slot is one
// block of the pool, as long as the whole context, so a sequence holds one whatever its
// length; h and c are each (n_layer, num_slots, hidden_size) float32.
class LstmState : public BlockPool {
 public:
  LstmState(int64_t n_layer, int64_t hidden_size, int64_t context, int64_t num_slots);
  int64_t n_layer() const { return n_layer_; }
  int64_t hidden_size() const { return hidden_; }
  float* h(int64_t layer, int64_t slot) { return h_.data() + (layer * num_blocks() + slot) * hidden_; }
  float* c(int64_t layer, int64_t slot) { return c_.data() + (layer * num_blocks() + slot) * hidden_; }

 private:
  int64_t n_layer_, hidden_;
  std::vector<float> h_, c_;
};

class LstmModel {
 public:
  LstmModel(const LstmConfig& config, const WeightLookup& weight, WeightDtype dtype);
  // Not movable (the busy flag): the binding holds it by pointer.
  LstmModel(const LstmModel&) = delete;
  LstmModel& operator=(const LstmModel&) = delete;

  const LstmConfig& config() const { return config_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t context() const { return config_.context; }
  // Validates the batch against the state (std::invalid_argument naming the field), then
  // runs it, leaving each sequence's h and c in its slot; logits: (num_seqs, vocab_size),
  // or with every_token (num_tokens, vocab_size), the logits after each token. One step at
  // a time: a second thread's call while one runs throws std::runtime_error.
  void forward(const StepBatch& batch, LstmState& state, float* logits, bool every_token = false);
  // Bytes of the weights every step streams, as stored (the embedding is gathered).
  int64_t weight_bytes() const;
  // Throws std::invalid_argument unless `state` has this model's layers, hidden size and context.
  void check_cache(const LstmState& state) const;

 private:
  struct Layer {
    Linear input, recurrent;  // x·W_ihᵀ + b_ih + b_hh (k = n_embd or hidden), h·W_hhᵀ
  };

  void reserve(int64_t num_tokens, int64_t num_seqs);
  void run_layer(const StepBatch& b, LstmState& state, int64_t l);

  LstmConfig config_;
  std::vector<float> embedding_;
  std::vector<Layer> layers_;
  Linear head_;
  // Step buffers: x the embedded tokens (tokens, n_embd), y a layer's outputs (tokens,
  // hidden), gates (tokens, 4·hidden); per sequence h, c; per time step the rows that run,
  // gathered (h_rows, c_rows), their recurrent projection and their tokens.
  CacheLineVector<float> x_, y_, gates_, h_, c_, h_rows_, c_rows_, recurrent_, last_;
  std::vector<int64_t> token_rows_, active_;
  std::atomic<bool> busy_{false};
};

}  // namespace aigc
