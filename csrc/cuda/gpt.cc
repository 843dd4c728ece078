// See gpt.h. Per layer, as runtime/gpt.cc: x = LN1(h); qkv = x·c_attn; keys/values → cache;
// attention; h += attn·c_proj; x = LN2(h); h += GELU(x·c_fc)·c_proj — the residual adds
// fused into the next layer norm. Only the last token of each sequence reaches the LM head.
#include "cuda/gpt.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "aigc/checks.h"
#include "cuda/attention.h"
#include "cuda/gpt_kernels.h"

namespace aigc::cuda {
namespace {

template <typename T>
DeviceBuffer<T> upload(const T* data, int64_t count) {
  DeviceBuffer<T> buffer(count);
  check(cudaMemcpy(buffer.get(), data, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
  return buffer;
}

DeviceBuffer<float> upload_weight(const WeightLookup& weight, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  const float* data = weight(name, shape);
  int64_t count = 1;
  for (int64_t d : shape) count = checked_mul(count, d, "GPT config: weight size");
  return upload(data, count);
}

template <typename T>
void grow(DeviceBuffer<T>& buffer, int64_t count) {
  if (buffer.size() < count) buffer = DeviceBuffer<T>(count);
}

}  // namespace

CudaGptModel::CudaGptModel(const GptConfig& config, const WeightLookup& weight, WeightDtype dtype)
    : config_(config), dtype_(dtype) {
  if (dtype == WeightDtype::kInt8) {
    throw std::invalid_argument("dtype: the CUDA decoder stores float32 or bfloat16 weights, not int8");
  }
  check_gpt_config(config);
  check(cudaGetDevice(&device_), "cudaGetDevice");
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    if (dtype == WeightDtype::kFloat32) cublas_ = std::make_unique<Cublas>(stream_);
    const int64_t c = config.n_embd;
    const float* wte = weight("transformer.wte.weight", {config.vocab_size, c});
    wte_ = upload(wte, config.vocab_size * c);
    wpe_ = upload_weight(weight, "transformer.wpe.weight", {config.n_positions, c});
    ln_f_weight_ = upload_weight(weight, "transformer.ln_f.weight", {c});
    ln_f_bias_ = upload_weight(weight, "transformer.ln_f.bias", {c});
    auto linear = [&](const std::string& prefix, int64_t k, int64_t n) {
      // GPT-2's Conv1D layout: weight (in, out), so y = x · W + b.
      return upload_linear(weight(prefix + ".weight", {k, n}), n, 1, weight(prefix + ".bias", {n}), k, n);
    };
    for (int64_t i = 0; i < config.n_layer; ++i) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      Layer layer;
      layer.ln_1_weight = upload_weight(weight, p + "ln_1.weight", {c});
      layer.ln_1_bias = upload_weight(weight, p + "ln_1.bias", {c});
      layer.ln_2_weight = upload_weight(weight, p + "ln_2.weight", {c});
      layer.ln_2_bias = upload_weight(weight, p + "ln_2.bias", {c});
      layer.c_attn = linear(p + "attn.c_attn", c, 3 * c);
      layer.attn_proj = linear(p + "attn.c_proj", c, c);
      layer.c_fc = linear(p + "mlp.c_fc", c, 4 * c);
      layer.mlp_proj = linear(p + "mlp.c_proj", 4 * c, c);
      layers_.push_back(std::move(layer));
    }
    // Tied head: logits = x · wteᵀ, wte (vocab, n_embd) read with swapped strides.
    lm_head_ = upload_linear(wte, 1, c, nullptr, c, config.vocab_size);
  } catch (...) {
    cublas_.reset();  // before its stream
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaGptModel::~CudaGptModel() {
  cublas_.reset();  // before its stream
  cudaStreamDestroy(stream_);
}

CudaGptModel::DeviceLinear CudaGptModel::upload_linear(const float* w, int64_t row_stride, int64_t col_stride,
                                                       const float* bias, int64_t k, int64_t n) const {
  DeviceLinear layer;
  layer.k = k;
  layer.n = n;
  const int64_t count = checked_mul(k, n, "linear: k * n");
  auto at = [&](int64_t r, int64_t c) { return w[r * row_stride + c * col_stride]; };
  if (dtype_ == WeightDtype::kBFloat16) {
    std::vector<uint16_t> bits(count);
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t c = 0; c < n; ++c) bits[r * n + c] = float_to_bf16(at(r, c));
    }
    layer.w_bf16 = upload(bits.data(), count);
  } else if (col_stride == 1 && row_stride == n) {
    layer.w_f32 = upload(w, count);
  } else {
    std::vector<float> rows(count);
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t c = 0; c < n; ++c) rows[r * n + c] = at(r, c);
    }
    layer.w_f32 = upload(rows.data(), count);
  }
  if (bias != nullptr) layer.bias = upload(bias, n);
  return layer;
}

int64_t CudaGptModel::weight_bytes() const {
  auto bytes = [](const DeviceLinear& l) { return l.w_f32.size() * 4 + l.w_bf16.size() * 2; };
  int64_t total = bytes(lm_head_);
  for (const Layer& l : layers_) total += bytes(l.c_attn) + bytes(l.attn_proj) + bytes(l.c_fc) + bytes(l.mlp_proj);
  return total;
}

void CudaGptModel::check_cache(const CudaKvCache& cache) const {
  check_cache_geometry(config_, cache.n_layer(), cache.n_head(), cache.head_dim());
  if (cache.device() != device_) {
    throw std::invalid_argument("cache: on CUDA device " + std::to_string(cache.device()) + ", the model on " +
                                std::to_string(device_));
  }
}

void CudaGptModel::reserve(int64_t num_tokens, int64_t num_seqs, int64_t max_blocks) {
  const int64_t c = config_.n_embd;
  checked_product({num_tokens, 4, c}, "step: num_tokens * 4 * n_embd");  // the largest step buffer
  checked_product({num_seqs, config_.vocab_size}, "step: num_seqs * vocab_size");
  for (DeviceBuffer<float>* buffer : {&h_, &a_, &q_, &k_, &v_, &attn_, &proj_}) grow(*buffer, num_tokens * c);
  grow(qkv_, num_tokens * 3 * c);
  grow(fc_, num_tokens * 4 * c);
  grow(last_, num_seqs * c);
  grow(logits_, num_seqs * config_.vocab_size);
  grow(tokens_, num_tokens);
  grow(positions_, num_tokens);
  grow(slots_, num_tokens);
  grow(block_table_, checked_mul(num_seqs, max_blocks, "step: num_seqs * max_blocks"));
  grow(context_lens_, num_seqs);
  grow(prompt_cu_, num_seqs + 1);
  grow(last_index_, num_seqs);
  host_slots_.resize(num_tokens);
  host_prompt_cu_.resize(num_seqs + 1);
  host_last_.resize(num_seqs);
}

// The step's arrays (checked by check_step) to the device, with each token's cache slot,
// the prompts' offsets from the first prompt token and each sequence's last token. The
// host vectors are the model's: pageable copies are staged before cudaMemcpyAsync returns.
void CudaGptModel::upload_step(const StepBatch& b, const CudaKvCache& cache, int64_t decoding) {
  const int64_t bs = cache.block_size(), first = b.cu_seqlens[decoding];
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    for (int64_t t = b.cu_seqlens[s]; t < b.cu_seqlens[s + 1]; ++t) {
      const int64_t pos = b.positions[t];
      host_slots_[t] = static_cast<int64_t>(b.block_table[s * b.max_blocks + pos / bs]) * bs + pos % bs;
    }
    host_last_[s] = b.cu_seqlens[s + 1] - 1;
  }
  for (int64_t s = decoding; s <= b.num_seqs; ++s) {
    host_prompt_cu_[s - decoding] = b.cu_seqlens[s] - static_cast<int32_t>(first);
  }
  auto copy = [this](void* to, const void* from, int64_t bytes) {
    check(cudaMemcpyAsync(to, from, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (step)");
  };
  copy(tokens_.get(), b.tokens, b.num_tokens * sizeof(int64_t));
  copy(positions_.get(), b.positions, b.num_tokens * sizeof(int64_t));
  copy(slots_.get(), host_slots_.data(), b.num_tokens * sizeof(int64_t));
  copy(last_index_.get(), host_last_.data(), b.num_seqs * sizeof(int32_t));
  if (decoding > 0) {  // the decoding rows' tables are the table's first rows
    copy(block_table_.get(), b.block_table, decoding * b.max_blocks * sizeof(int32_t));
    copy(context_lens_.get(), b.context_lens, decoding * sizeof(int32_t));
  }
  copy(prompt_cu_.get(), host_prompt_cu_.data(), (b.num_seqs - decoding + 1) * sizeof(int32_t));
}

void CudaGptModel::project(const DeviceLinear& layer, const StepBatch& b, int64_t decoding, const float* x,
                           float* y) {
  const bool bf16 = dtype_ == WeightDtype::kBFloat16;
  const int64_t rows = bf16 ? b.num_tokens : b.cu_seqlens[decoding];
  linear_rows(x, rows, layer.k, layer.n, layer.weights(), bf16, layer.bias.get(), y, stream_);
  if (bf16 || rows == b.num_tokens) return;
  for (int64_t s = decoding; s < b.num_seqs; ++s) {
    const int64_t begin = b.cu_seqlens[s], length = b.cu_seqlens[s + 1] - begin;
    cublas_->matmul(x + begin * layer.k, layer.w_f32.get(), y + begin * layer.n, length, layer.k, layer.n);
  }
  add_bias(y + rows * layer.n, layer.bias.get(), b.num_tokens - rows, layer.n, stream_);
}

void CudaGptModel::attend(const StepBatch& b, CudaKvCache& cache, int64_t layer, int64_t decoding) {
  const int64_t c = config_.n_embd, heads = config_.n_head, d = c / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool bf16 = cache.bf16();
  if (decoding > 0) {
    AttentionDecodeParams p{};
    p.q = q_.get();
    p.k_cache = cache.keys(layer);
    p.v_cache = cache.values(layer);
    p.kv_bf16 = bf16;
    p.block_table = block_table_.get();
    p.context_lens = context_lens_.get();
    p.batch = decoding;
    p.max_blocks = b.max_blocks;
    p.num_blocks = cache.num_blocks();
    p.block_size = cache.block_size();
    p.n_heads = p.n_kv_heads = heads;
    p.head_dim = d;
    p.scale = scale;
    p.out = attn_.get();
    attention_decode(p, stream_);
  }
  if (decoding < b.num_seqs) {
    // The prompts attend over their own new keys and values (split_qkv's copies, rounded
    // to bf16 for a bf16 cache, as the CPU decoder's).
    const int64_t first = b.cu_seqlens[decoding];
    const int64_t element_bytes = bf16 ? 2 : 4;
    AttentionPrefillParams p{};
    p.q = q_.get() + first * c;
    p.k = reinterpret_cast<const uint8_t*>(k_.get()) + first * c * element_bytes;
    p.v = reinterpret_cast<const uint8_t*>(v_.get()) + first * c * element_bytes;
    p.kv_bf16 = bf16;
    p.cu_seqlens = prompt_cu_.get();
    p.n_seqs = b.num_seqs - decoding;
    p.tokens = b.num_tokens - first;
    p.n_heads = p.n_kv_heads = heads;
    p.head_dim = d;
    p.q_row_stride = p.kv_row_stride = c;
    p.scale = scale;
    p.out = attn_.get() + first * c;
    attention_prefill(p, stream_);
  }
}

void CudaGptModel::forward(const StepBatch& b, CudaKvCache& cache, float* logits) {
  if (busy_.exchange(true)) throw std::runtime_error("CudaGptModel: a step is already running in another thread");
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy = false; }
  } release{busy_};
  check_cache(cache);
  check_step(b, cache, config_.vocab_size, config_.n_positions);
  // The calling thread may be new (an Engine's): its current device is not necessarily ours.
  check(cudaSetDevice(device_), "cudaSetDevice");
  reserve(b.num_tokens, b.num_seqs, b.max_blocks);
  int64_t decoding = 0;
  while (decoding < b.num_seqs && !b.is_prompt[decoding]) ++decoding;
  upload_step(b, cache, decoding);
  const int64_t c = config_.n_embd, t_count = b.num_tokens;
  const float eps = config_.eps;
  embed(tokens_.get(), positions_.get(), wte_.get(), wpe_.get(), h_.get(), t_count, c, stream_);
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    Layer& layer = layers_[l];
    // h += the previous layer's MLP output (none before layer 0), then LN1.
    add_layer_norm(h_.get(), l ? proj_.get() : nullptr, layer.ln_1_weight.get(), layer.ln_1_bias.get(), a_.get(),
                   t_count, c, eps, stream_);
    project(layer.c_attn, b, decoding, a_.get(), qkv_.get());
    // Every token's keys and values reach the cache before any row attends (a step's
    // decoding rows may share a sequence's blocks: NativeGpt.prompt_logits).
    split_qkv(qkv_.get(), slots_.get(), t_count, c, cache.bf16(), q_.get(), k_.get(), v_.get(), cache.keys(l),
              cache.values(l), stream_);
    attend(b, cache, l, decoding);
    project(layer.attn_proj, b, decoding, attn_.get(), proj_.get());
    add_layer_norm(h_.get(), proj_.get(), layer.ln_2_weight.get(), layer.ln_2_bias.get(), a_.get(), t_count, c, eps,
                   stream_);
    project(layer.c_fc, b, decoding, a_.get(), fc_.get());
    gelu_tanh(fc_.get(), t_count * 4 * c, stream_);
    project(layer.mlp_proj, b, decoding, fc_.get(), proj_.get());
  }
  // The last token of each sequence: h + the last MLP output, final LN, the tied head.
  gather_rows(h_.get(), proj_.get(), last_index_.get(), last_.get(), b.num_seqs, c, stream_);
  add_layer_norm(last_.get(), nullptr, ln_f_weight_.get(), ln_f_bias_.get(), last_.get(), b.num_seqs, c, eps, stream_);
  linear_rows(last_.get(), b.num_seqs, c, config_.vocab_size, lm_head_.weights(), dtype_ == WeightDtype::kBFloat16,
              nullptr, logits_.get(), stream_);
  check(cudaMemcpyAsync(logits, logits_.get(), b.num_seqs * config_.vocab_size * sizeof(float),
                        cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync (logits)");
  check(cudaStreamSynchronize(stream_), "the decoder's step");
}

}  // namespace aigc::cuda
