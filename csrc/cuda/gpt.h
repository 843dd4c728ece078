// The GPT decoder on a CUDA device: runtime/gpt.h's model — the same packed StepBatch
// (decoding rows first, then whole prompts), the same math, the same checks and messages —
// with the weights resident on the device (float32 or bf16; int8 is the CPU's only) and the
// paged KV cache in device memory (cuda/kv_cache.h). The step's host arrays are copied in,
// every kernel runs on the model's stream, and forward returns once the (num_seqs, vocab)
// logits are in host memory, where the sampler reads them.
// Projections: the decoding rows through linear_rows (row-independent, as the CPU's own
// kernels); each float32 prompt through cuBLAS with m = its own length (as the CPU's
// OpenBLAS); bf16 weights through linear_rows for every row.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "aigc/linear.h"
#include "cuda/cublas.h"
#include "cuda/device.h"
#include "cuda/kv_cache.h"
#include "runtime/gpt.h"
#include "runtime/step_batch.h"

namespace aigc::cuda {

class CudaGptModel {
 public:
  // On the current device. std::invalid_argument: a bad config or dtype (int8); the
  // weight lookup's own errors; std::runtime_error: out of device memory, no cuBLAS.
  CudaGptModel(const GptConfig& config, const WeightLookup& weight, WeightDtype dtype);
  ~CudaGptModel();
  CudaGptModel(const CudaGptModel&) = delete;
  CudaGptModel& operator=(const CudaGptModel&) = delete;

  const GptConfig& config() const { return config_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t context() const { return config_.n_positions; }
  int device() const { return device_; }
  // As GptModel::forward; logits: host memory, (num_seqs, vocab_size).
  void forward(const StepBatch& batch, CudaKvCache& cache, float* logits);
  int64_t weight_bytes() const;
  // Throws std::invalid_argument unless `cache` has this model's layers, heads, head size
  // and device.
  void check_cache(const CudaKvCache& cache) const;

 private:
  // y = x · w + bias, w (k, n) row-major in the model's dtype.
  struct DeviceLinear {
    int64_t k = 0, n = 0;
    DeviceBuffer<float> w_f32;
    DeviceBuffer<uint16_t> w_bf16;
    DeviceBuffer<float> bias;
    const void* weights() const { return w_f32.get() ? static_cast<const void*>(w_f32.get()) : w_bf16.get(); }
  };
  struct Layer {
    DeviceBuffer<float> ln_1_weight, ln_1_bias, ln_2_weight, ln_2_bias;
    DeviceLinear c_attn, attn_proj, c_fc, mlp_proj;
  };

  DeviceLinear upload_linear(const float* w, int64_t row_stride, int64_t col_stride, const float* bias, int64_t k,
                             int64_t n) const;
  void upload_step(const StepBatch& b, const CudaKvCache& cache, int64_t decoding);
  void project(const DeviceLinear& layer, const StepBatch& b, int64_t decoding, const float* x, float* y);
  void attend(const StepBatch& b, CudaKvCache& cache, int64_t layer, int64_t decoding);
  void reserve(int64_t num_tokens, int64_t num_seqs, int64_t max_blocks);

  GptConfig config_;
  WeightDtype dtype_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Cublas> cublas_;  // float32 models only
  DeviceBuffer<float> wte_, wpe_, ln_f_weight_, ln_f_bias_;
  std::vector<Layer> layers_;
  DeviceLinear lm_head_;  // wteᵀ (n_embd, vocab) in the model's dtype
  // Step buffers on the device: residual stream, normalised input, qkv, q / k / v, attention
  // output, projection output, MLP, the last tokens, the logits; k and v hold bf16 bits
  // for a bf16 cache (half of each buffer used).
  DeviceBuffer<float> h_, a_, qkv_, q_, k_, v_, attn_, proj_, fc_, last_, logits_;
  // The step's host arrays on the device, and what is derived from them on the host: each
  // token's cache slot, the prompts' offsets from the first prompt token, each sequence's
  // last token.
  DeviceBuffer<int64_t> tokens_, positions_, slots_;
  DeviceBuffer<int32_t> block_table_, context_lens_, prompt_cu_, last_index_;
  std::vector<int64_t> host_slots_;
  std::vector<int32_t> host_prompt_cu_, host_last_;
  std::atomic<bool> busy_{false};
};

}  // namespace aigc::cuda
