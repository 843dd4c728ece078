// See gpt.h. Per layer: x = LN1(h); qkv = x·c_attn; keys/values → cache; attention;
// h += attn·c_proj; x = LN2(h); h += GELU(x·c_fc)·c_proj — the residual adds fused into
// the next layer norm. Only the last token of each sequence goes through the LM head.
#include "runtime/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "aigc/attention.h"
#include "aigc/checks.h"
#include "aigc/norm.h"
#include "runtime/thread_pool.h"

namespace aigc {
namespace {

std::vector<float> copy_weight(const WeightLookup& weight, const std::string& name, const std::vector<int64_t>& shape) {
  const float* data = weight(name, shape);
  int64_t count = 1;
  for (int64_t d : shape) count = checked_mul(count, d, "GPT config: weight size");
  return std::vector<float>(data, data + count);
}

// Tokens per task of the per-token copies (write_cache, the decoding rows' q): a prompt's
// are spread over the pool, a decode step's (under 64 rows) stay on the calling thread. On
// one thread a 512-token prompt's copies took 8 % of perf's samples while the other core
// waited; spread, GPT-2-small int8 prompts went 5,030-5,107 → 5,387-5,915 tokens/s (1 × 512)
// and 5,366-5,898 → 6,077-6,325 (4 × 256) on the AMX Xeon, alternating builds.
constexpr int64_t kCopyGrain = 64;

Linear linear_weight(const WeightLookup& weight, const std::string& prefix, int64_t k, int64_t n, WeightDtype dtype) {
  // GPT-2's Conv1D layout: weight (in, out), so y = x · W + b.
  return make_linear(weight(prefix + ".weight", {k, n}), n, 1, weight(prefix + ".bias", {n}), k, n, dtype);
}

}  // namespace

void check_gpt_config(const GptConfig& config) {
  const int64_t c = config.n_embd;
  if (config.n_layer < 1 || config.n_head < 1 || c < 1 || c % config.n_head || config.vocab_size < 1 ||
      config.n_positions < 1 || !(config.eps > 0.0f)) {
    throw std::invalid_argument("GPT config: sizes must be >= 1, n_embd divisible by n_head, eps > 0");
  }
  // Every buffer and weight size is a product of these: none may wrap (a wrapped
  // 3 * n_embd would reach the weight lookup as a negative size, which matches any).
  checked_product({config.vocab_size, c}, "GPT config: vocab_size * n_embd");
  checked_product({config.n_positions, c}, "GPT config: n_positions * n_embd");
  checked_product({4, c, c}, "GPT config: 4 * n_embd * n_embd");
}

void check_cache_geometry(const GptConfig& config, int64_t n_layer, int64_t n_head, int64_t head_dim) {
  // Every layer writes and reads its own part of the cache: a cache of fewer layers was
  // written past its end.
  const int64_t model_head_dim = config.n_embd / config.n_head;
  if (n_layer != config.n_layer || n_head != config.n_head || head_dim != model_head_dim) {
    throw std::invalid_argument("cache: made for n_layer " + std::to_string(n_layer) + ", n_head " +
                                std::to_string(n_head) + ", head_dim " + std::to_string(head_dim) +
                                "; the model has " + std::to_string(config.n_layer) + ", " +
                                std::to_string(config.n_head) + ", " + std::to_string(model_head_dim));
  }
}

GptModel::GptModel(const GptConfig& config, const WeightLookup& weight, WeightDtype dtype)
    : config_(config), dtype_(dtype) {
  const int64_t c = config.n_embd;
  check_gpt_config(config);
  wte_ = copy_weight(weight, "transformer.wte.weight", {config.vocab_size, c});
  wpe_ = copy_weight(weight, "transformer.wpe.weight", {config.n_positions, c});
  ln_f_weight_ = copy_weight(weight, "transformer.ln_f.weight", {c});
  ln_f_bias_ = copy_weight(weight, "transformer.ln_f.bias", {c});
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    Layer layer;
    layer.ln_1_weight = copy_weight(weight, p + "ln_1.weight", {c});
    layer.ln_1_bias = copy_weight(weight, p + "ln_1.bias", {c});
    layer.ln_2_weight = copy_weight(weight, p + "ln_2.weight", {c});
    layer.ln_2_bias = copy_weight(weight, p + "ln_2.bias", {c});
    layer.c_attn = linear_weight(weight, p + "attn.c_attn", c, 3 * c, dtype);
    layer.attn_proj = linear_weight(weight, p + "attn.c_proj", c, c, dtype);
    layer.c_fc = linear_weight(weight, p + "mlp.c_fc", c, 4 * c, dtype);
    layer.mlp_proj = linear_weight(weight, p + "mlp.c_proj", 4 * c, c, dtype);
    layers_.push_back(std::move(layer));
  }
  // Tied head: logits = x · wteᵀ, read from wte (vocab, n_embd) with swapped strides.
  lm_head_ = make_linear(wte_.data(), 1, c, nullptr, c, config.vocab_size, dtype);
}

int64_t GptModel::weight_bytes() const {
  auto bytes = [](const Linear& l) {
    return static_cast<int64_t>(l.w_f32.size() * 4 + l.w_bf16.size() * 2 + l.w_i8.size() + l.scale.size() * 4);
  };
  int64_t total = bytes(lm_head_);
  for (const Layer& l : layers_) total += bytes(l.c_attn) + bytes(l.attn_proj) + bytes(l.c_fc) + bytes(l.mlp_proj);
  return total;
}

void GptModel::check_cache(const KvCache& cache) const {
  check_cache_geometry(config_, cache.n_layer(), cache.n_head(), cache.head_dim());
}

void GptModel::check(const StepBatch& b, const KvCache& cache) const {
  check_cache(cache);
  check_step(b, cache, config_.vocab_size, config_.n_positions);
}

void GptModel::reserve(int64_t num_tokens, int64_t num_seqs, bool kv_bf16) {
  const int64_t c = config_.n_embd;
  checked_product({num_tokens, 4, c}, "step: num_tokens * 4 * n_embd");  // the largest buffer
  auto grow = [](auto& buffer, int64_t size) {
    if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  };
  grow(h_, num_tokens * c);
  grow(a_, num_tokens * c);
  grow(qkv_, num_tokens * 3 * c);
  grow(attn_, num_tokens * c);
  grow(q_, num_seqs * c);
  // Every token's keys and values rounded to bf16 for a bf16 cache (write_cache).
  if (kv_bf16) {
    grow(k16_, num_tokens * c);
    grow(v16_, num_tokens * c);
  }
  if (static_cast<int64_t>(prompt_cu_.size()) < num_seqs + 1) prompt_cu_.resize(num_seqs + 1);
  grow(proj_, num_tokens * c);
  grow(fc_, num_tokens * 4 * c);
  grow(last_, num_seqs * c);
}

void GptModel::project(const Linear& layer, const StepBatch& b, const float* x, float* y) {
  // With AVX-512 the own kernels outrun OpenBLAS's panel by panel at every m (float32 on a
  // 2-core Xeon, GPT-2-small shapes: 1.7× at m = 32, 1.4-1.5× at m = 256 and 1024), so
  // every row goes through them.
  if (dtype_ != WeightDtype::kFloat32 || active_isa() == Isa::kAvx512) return linear_forward(layer, x, b.num_tokens, y);
  // float32 on AVX2: the decoding rows through the row-independent kernel, each prompt
  // through OpenBLAS with m = its own length (see aigc/linear.h: both keep a request's
  // numbers independent of the rest of the batch).
  int64_t s = 0;
  while (s < b.num_seqs && !b.is_prompt[s]) ++s;
  linear_forward(layer, x, b.cu_seqlens[s], y);
  for (; s < b.num_seqs; ++s) {
    const int64_t begin = b.cu_seqlens[s], length = b.cu_seqlens[s + 1] - begin;
    linear_forward_blas(layer, x + begin * layer.k, length, y + begin * layer.n);
  }
}

// A bf16 cache gets the keys and values rounded to nearest even (float_to_bf16, as
// ops.to_bf16), once per step into k16_/v16_ (tokens, n_embd): the prompts' attention
// reads those same rounded copies, so a token's logits depend only on the bf16 K/V before
// it, whether they came by prefill or by decode (a preempted request's recomputation sees
// the numbers its first pass saw).
void GptModel::write_cache(const StepBatch& b, KvCache& cache, int64_t layer) {
  const int64_t c = config_.n_embd, bs = cache.block_size();
  const bool bf16 = cache.bf16();
  parallel_for(b.num_tokens, [&](int64_t first, int64_t last) {
    // The sequence of token `first`: cu_seqlens is sorted, and empty sequences are skipped.
    int64_t s = std::upper_bound(b.cu_seqlens, b.cu_seqlens + b.num_seqs + 1, first) - b.cu_seqlens - 1;
    for (int64_t t = first; t < last; ++t) {
      while (t >= b.cu_seqlens[s + 1]) ++s;
      const int64_t pos = b.positions[t];
      const int64_t slot = static_cast<int64_t>(b.block_table[s * b.max_blocks + pos / bs]) * bs + pos % bs;
      const float* key = qkv_.data() + t * 3 * c + c;
      const float* value = key + c;
      if (bf16) {
        uint16_t* k = k16_.data() + t * c;
        uint16_t* v = v16_.data() + t * c;
        for (int64_t i = 0; i < c; ++i) {
          k[i] = float_to_bf16(key[i]);
          v[i] = float_to_bf16(value[i]);
        }
        std::memcpy(static_cast<uint16_t*>(cache.keys(layer)) + slot * c, k, c * sizeof(uint16_t));
        std::memcpy(static_cast<uint16_t*>(cache.values(layer)) + slot * c, v, c * sizeof(uint16_t));
      } else {
        std::memcpy(static_cast<float*>(cache.keys(layer)) + slot * c, key, c * sizeof(float));
        std::memcpy(static_cast<float*>(cache.values(layer)) + slot * c, value, c * sizeof(float));
      }
    }
  }, kCopyGrain);
}

void GptModel::attend(const StepBatch& b, KvCache& cache, int64_t layer) {
  const int64_t c = config_.n_embd, heads = config_.n_head, d = c / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool bf16 = cache.bf16();
  int64_t decoding = 0;
  while (decoding < b.num_seqs && !b.is_prompt[decoding]) ++decoding;
  if (decoding > 0) {
    // The decode kernel wants q as a (batch, heads, head_dim) array; qkv holds q, k and v
    // side by side per token.
    parallel_for(decoding, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) std::memcpy(q_.data() + i * c, qkv_.data() + i * 3 * c, c * sizeof(float));
    }, kCopyGrain);
    AttentionDecodeParams p{};
    p.q = q_.data();
    p.k_cache = cache.keys(layer);
    p.v_cache = cache.values(layer);
    p.kv_bf16 = bf16;
    p.block_table = b.block_table;
    p.context_lens = b.context_lens;
    p.batch = decoding;
    p.max_blocks = b.max_blocks;
    p.num_blocks = cache.num_blocks();
    p.block_size = cache.block_size();
    p.n_heads = p.n_kv_heads = heads;
    p.head_dim = d;
    p.scale = scale;
    p.out = attn_.data();
    attention_decode_cpu(p);
  }
  if (decoding < b.num_seqs) {
    const int64_t first = b.cu_seqlens[decoding], tokens = b.num_tokens - first;
    // q, k and v read in place from qkv (copying them out was ~7% of an int8 prompt).
    const float* qkv = qkv_.data() + first * 3 * c;
    AttentionPrefillParams p{};
    p.q = qkv;
    p.q_row_stride = 3 * c;
    if (bf16) {  // rounded by write_cache
      p.k = k16_.data() + first * c;
      p.v = v16_.data() + first * c;
      p.kv_row_stride = c;
    } else {
      p.k = qkv + c;
      p.v = qkv + 2 * c;
      p.kv_row_stride = 3 * c;
    }
    p.kv_bf16 = bf16;
    for (int64_t s = decoding; s <= b.num_seqs; ++s) prompt_cu_[s - decoding] = b.cu_seqlens[s] - static_cast<int32_t>(first);
    p.cu_seqlens = prompt_cu_.data();
    p.n_seqs = b.num_seqs - decoding;
    p.tokens = tokens;
    p.n_heads = p.n_kv_heads = heads;
    p.head_dim = d;
    p.scale = scale;
    p.out = attn_.data() + first * c;
    attention_prefill_cpu(p);
  }
}

void GptModel::forward(const StepBatch& b, KvCache& cache, float* logits) {
  if (busy_.exchange(true)) throw std::runtime_error("GptModel: a step is already running in another thread");
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy = false; }
  } release{busy_};
  check(b, cache);
  LingerScope linger;  // ~35 kernels in a row: keep the workers awake between them
  reserve(b.num_tokens, b.num_seqs, cache.bf16());
  const int64_t c = config_.n_embd, t_count = b.num_tokens;
  for (int64_t t = 0; t < t_count; ++t) {
    const float* token = wte_.data() + b.tokens[t] * c;
    const float* position = wpe_.data() + b.positions[t] * c;
    for (int64_t i = 0; i < c; ++i) h_[t * c + i] = token[i] + position[i];
  }
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    Layer& layer = layers_[l];
    // h += the previous layer's MLP output (none before layer 0), then LN1.
    add_layer_norm({h_.data(), l ? proj_.data() : nullptr, layer.ln_1_weight.data(), layer.ln_1_bias.data(),
                    a_.data(), t_count, c, config_.eps});
    project(layer.c_attn, b, a_.data(), qkv_.data());
    write_cache(b, cache, l);
    attend(b, cache, l);
    project(layer.attn_proj, b, attn_.data(), proj_.data());
    add_layer_norm({h_.data(), proj_.data(), layer.ln_2_weight.data(), layer.ln_2_bias.data(), a_.data(), t_count, c,
                    config_.eps});
    project(layer.c_fc, b, a_.data(), fc_.data());
    gelu_tanh(fc_.data(), t_count * 4 * c);
    project(layer.mlp_proj, b, fc_.data(), proj_.data());
  }
  // The last token of each sequence: h + the last MLP output, final LN, the tied head.
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    const int64_t t = b.cu_seqlens[s + 1] - 1;
    for (int64_t i = 0; i < c; ++i) last_[s * c + i] = h_[t * c + i] + proj_[t * c + i];
  }
  add_layer_norm({last_.data(), nullptr, ln_f_weight_.data(), ln_f_bias_.data(), last_.data(), b.num_seqs, c,
                  config_.eps});
  linear_forward(lm_head_, last_.data(), b.num_seqs, logits);
}

}  // namespace aigc
