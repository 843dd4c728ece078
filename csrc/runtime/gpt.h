// The native GPT decoder: GPT-2's forward pass (pre-LN blocks, learned positions, tanh
// GELU, tied LM head) over one packed step — the new tokens of every running sequence,
// whole prompts (prefill) and single tokens (decode) together — writing their keys and
// values into the paged KV cache (float32 or bf16, the cache's dtype) and returning the
// next-token logits of each sequence.
// Weights come by GPT-2 name from the exported ONNX file's initializers, converted once
// to the chosen dtype; buffers grow with the largest step seen, never shrink, so a
// steady stream of steps allocates nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/linear.h"
#include "runtime/kv_cache.h"
#include "runtime/step_batch.h"

namespace aigc {

struct GptConfig {
  int64_t vocab_size, n_positions, n_embd, n_layer, n_head;
  float eps;
};

// std::invalid_argument unless every size is >= 1, n_embd divides by n_head, eps > 0 and
// no weight or buffer size wraps (shared by the CPU and the CUDA decoder).
void check_gpt_config(const GptConfig& config);
// std::invalid_argument unless a cache of these sizes fits a model of `config`.
void check_cache_geometry(const GptConfig& config, int64_t n_layer, int64_t n_head, int64_t head_dim);

class GptModel {
 public:
  GptModel(const GptConfig& config, const WeightLookup& weight, WeightDtype dtype);
  // Not movable (the busy flag): the binding holds it by pointer.
  GptModel(const GptModel&) = delete;
  GptModel& operator=(const GptModel&) = delete;

  const GptConfig& config() const { return config_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t context() const { return config_.n_positions; }
  // Validates the batch against the cache (std::invalid_argument naming the field), then
  // runs it; logits: (num_seqs, vocab_size). One step at a time: a second thread's call
  // while one runs throws std::runtime_error (the step buffers are the model's).
  void forward(const StepBatch& batch, KvCache& cache, float* logits);
  // Bytes of the weights every step streams, as stored: the projections and the LM head
  // (the embedding tables are gathered a row per token).
  int64_t weight_bytes() const;
  // Throws std::invalid_argument unless `cache` has this model's layers, heads and head size.
  void check_cache(const KvCache& cache) const;

 private:
  struct Layer {
    std::vector<float> ln_1_weight, ln_1_bias, ln_2_weight, ln_2_bias;
    Linear c_attn, attn_proj, c_fc, mlp_proj;
  };

  void check(const StepBatch& batch, const KvCache& cache) const;
  void project(const Linear& layer, const StepBatch& batch, const float* x, float* y);
  void write_cache(const StepBatch& batch, KvCache& cache, int64_t layer);
  void attend(const StepBatch& batch, KvCache& cache, int64_t layer);
  void reserve(int64_t num_tokens, int64_t num_seqs, bool kv_bf16);

  GptConfig config_;
  WeightDtype dtype_;
  std::vector<float> wte_, wpe_, ln_f_weight_, ln_f_bias_;
  std::vector<Layer> layers_;
  Linear lm_head_;
  // Step buffers: h residual stream, a normalised input, qkv, the decoding rows' q,
  // attention out, MLP.
  CacheLineVector<float> h_, a_, qkv_, q_, attn_, proj_, fc_, last_;
  CacheLineVector<uint16_t> k16_, v16_;  // every token's keys and values, rounded, for a bf16 cache
  std::vector<int32_t> prompt_cu_;
  std::atomic<bool> busy_{false};
};

}  // namespace aigc
