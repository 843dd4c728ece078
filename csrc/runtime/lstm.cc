// See lstm.h. Per layer l: gates = x·W_ihᵀ + b (all the step's tokens at once); then for
// time j = 0 .. the longest sequence's length - 1, the sequences with a token at j
// (decoding ones at j = 0 only) gather their h and c, add h·W_hhᵀ, and update them in the
// cell; the new h is the token's output, the next layer's input. Only the last token of
// each sequence goes through the head (every token's, for prompt log-probabilities).
#include "runtime/lstm.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "aigc/checks.h"
#include "aigc/lstm.h"
#include "runtime/thread_pool.h"

namespace aigc {
namespace {

// nn.LSTM / nn.Linear keep weights (out, in): y = x · Wᵀ reads element (r, c) at w[c * in + r].
Linear transposed(const float* w, const float* bias, int64_t in, int64_t out, WeightDtype dtype) {
  return make_linear(w, 1, in, bias, in, out, dtype);
}

int64_t checked_slots(int64_t n_layer, int64_t hidden, int64_t num_slots) {
  if (n_layer < 1 || hidden < 1 || num_slots < 1) throw std::invalid_argument("LSTM state: every size must be >= 1");
  return checked_product({n_layer, num_slots, hidden}, "LSTM state size");
}

}  // namespace

LstmState::LstmState(int64_t n_layer, int64_t hidden_size, int64_t context, int64_t num_slots)
    : BlockPool("LSTM state", context, (checked_slots(n_layer, hidden_size, num_slots), num_slots)),
      n_layer_(n_layer), hidden_(hidden_size) {
  h_.assign(checked_slots(n_layer, hidden_size, num_slots), 0.0f);
  c_.assign(h_.size(), 0.0f);
}

LstmModel::LstmModel(const LstmConfig& config, const WeightLookup& weight, WeightDtype dtype) : config_(config) {
  const int64_t v = config.vocab_size, e = config.n_embd, h = config.hidden_size;
  if (v < 1 || e < 1 || h < 1 || config.n_layer < 1 || config.context < 1) {
    throw std::invalid_argument("LSTM config: sizes must be >= 1");
  }
  // Every weight and buffer size below is a product of these: none may wrap.
  checked_product({v, std::max(e, h)}, "LSTM config: vocab_size * max(n_embd, hidden_size)");
  checked_product({4, h, std::max(e, h)}, "LSTM config: 4 * hidden_size * max(n_embd, hidden_size)");
  const float* table = weight("embedding.weight", {v, e});
  embedding_.assign(table, table + v * e);
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string l = "_l" + std::to_string(i);
    const int64_t in = i == 0 ? e : h;
    // The two biases always meet in the sum: one bias, added by the input projection.
    const float* b_ih = weight("lstm.bias_ih" + l, {4 * h});
    const float* b_hh = weight("lstm.bias_hh" + l, {4 * h});
    std::vector<float> bias(4 * h);
    for (int64_t j = 0; j < 4 * h; ++j) bias[j] = b_ih[j] + b_hh[j];
    Layer layer;
    layer.input = transposed(weight("lstm.weight_ih" + l, {4 * h, in}), bias.data(), in, 4 * h, dtype);
    layer.recurrent = transposed(weight("lstm.weight_hh" + l, {4 * h, h}), nullptr, h, 4 * h, dtype);
    layers_.push_back(std::move(layer));
  }
  head_ = transposed(weight("head.weight", {v, h}), weight("head.bias", {v}), h, v, dtype);
}

int64_t LstmModel::weight_bytes() const {
  auto bytes = [](const Linear& l) {
    return static_cast<int64_t>(l.w_f32.size() * 4 + l.w_bf16.size() * 2 + l.w_i8.size() + l.scale.size() * 4);
  };
  int64_t total = bytes(head_);
  for (const Layer& l : layers_) total += bytes(l.input) + bytes(l.recurrent);
  return total;
}

void LstmModel::check_cache(const LstmState& state) const {
  if (state.n_layer() != config_.n_layer || state.hidden_size() != config_.hidden_size ||
      state.block_size() != config_.context) {
    throw std::invalid_argument("state: made for n_layer " + std::to_string(state.n_layer()) + ", hidden_size " +
                                std::to_string(state.hidden_size()) + ", context " +
                                std::to_string(state.block_size()) + "; the model has " +
                                std::to_string(config_.n_layer) + ", " + std::to_string(config_.hidden_size) +
                                ", " + std::to_string(config_.context));
  }
}

void LstmModel::reserve(int64_t num_tokens, int64_t num_seqs) {
  const int64_t e = config_.n_embd, h = config_.hidden_size;
  checked_product({num_tokens, 4, std::max(e, h)}, "step: num_tokens * 4 * max(n_embd, hidden_size)");
  auto grow = [](auto& buffer, int64_t size) {
    if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  };
  grow(x_, num_tokens * e);
  grow(y_, num_tokens * h);
  grow(gates_, num_tokens * 4 * h);
  grow(h_, num_seqs * h);
  grow(c_, num_seqs * h);
  grow(h_rows_, num_seqs * h);
  grow(c_rows_, num_seqs * h);
  grow(recurrent_, num_seqs * 4 * h);
  grow(last_, num_seqs * h);
  grow(token_rows_, num_seqs);
  grow(active_, num_seqs);
}

void LstmModel::run_layer(const StepBatch& b, LstmState& state, int64_t l) {
  const int64_t h = config_.hidden_size, n = b.num_seqs;
  const Layer& layer = layers_[l];
  linear_forward(layer.input, l == 0 ? x_.data() : y_.data(), b.num_tokens, gates_.data());
  // Each sequence's h and c: a prompt's start at zero, a decoding one's continue its slot's.
  for (int64_t s = 0; s < n; ++s) {
    const int64_t slot = b.block_table[s * b.max_blocks];
    if (b.is_prompt[s]) {
      std::fill_n(h_.data() + s * h, h, 0.0f);
      std::fill_n(c_.data() + s * h, h, 0.0f);
    } else {
      std::memcpy(h_.data() + s * h, state.h(l, slot), h * sizeof(float));
      std::memcpy(c_.data() + s * h, state.c(l, slot), h * sizeof(float));
    }
  }
  int64_t steps = 0;
  for (int64_t s = 0; s < n; ++s) steps = std::max<int64_t>(steps, b.cu_seqlens[s + 1] - b.cu_seqlens[s]);
  for (int64_t j = 0; j < steps; ++j) {
    int64_t rows = 0;
    for (int64_t s = 0; s < n; ++s) {
      if (b.cu_seqlens[s + 1] - b.cu_seqlens[s] > j) {
        active_[rows] = s;
        token_rows_[rows++] = b.cu_seqlens[s] + j;
      }
    }
    // Every sequence runs (every decode step): their h and c rows in place, no gather.
    const bool all = rows == n;
    float* hr = all ? h_.data() : h_rows_.data();
    float* cr = all ? c_.data() : c_rows_.data();
    if (!all) {
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(hr + r * h, h_.data() + active_[r] * h, h * sizeof(float));
        std::memcpy(cr + r * h, c_.data() + active_[r] * h, h * sizeof(float));
      }
    }
    linear_forward(layer.recurrent, hr, rows, recurrent_.data());
    lstm_cell({gates_.data(), token_rows_.data(), recurrent_.data(), cr, hr, rows, h});
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(y_.data() + token_rows_[r] * h, hr + r * h, h * sizeof(float));
      if (!all) {
        std::memcpy(h_.data() + active_[r] * h, hr + r * h, h * sizeof(float));
        std::memcpy(c_.data() + active_[r] * h, cr + r * h, h * sizeof(float));
      }
    }
  }
  for (int64_t s = 0; s < n; ++s) {
    const int64_t slot = b.block_table[s * b.max_blocks];
    std::memcpy(state.h(l, slot), h_.data() + s * h, h * sizeof(float));
    std::memcpy(state.c(l, slot), c_.data() + s * h, h * sizeof(float));
  }
}

void LstmModel::forward(const StepBatch& b, LstmState& state, float* logits, bool every_token) {
  if (busy_.exchange(true)) throw std::runtime_error("LstmModel: a step is already running in another thread");
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy = false; }
  } release{busy_};
  check_cache(state);
  check_step(b, state, config_.vocab_size, config_.context);
  LingerScope linger;  // a few kernels per layer and time step: keep the workers awake between them
  reserve(b.num_tokens, b.num_seqs);
  const int64_t e = config_.n_embd, h = config_.hidden_size;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    std::memcpy(x_.data() + t * e, embedding_.data() + b.tokens[t] * e, e * sizeof(float));
  }
  for (int64_t l = 0; l < config_.n_layer; ++l) run_layer(b, state, l);
  if (every_token) return linear_forward(head_, y_.data(), b.num_tokens, logits);
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    std::memcpy(last_.data() + s * h, y_.data() + (b.cu_seqlens[s + 1] - 1) * h, h * sizeof(float));
  }
  linear_forward(head_, last_.data(), b.num_seqs, logits);
}

}  // namespace aigc
