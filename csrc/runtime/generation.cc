// See generation.h. The order of every decision (room, preemption, admission, batch rows)
// is the Python scheduler's it replaces, so a request's numbers, and so its tokens, are
// the same as there: decoding rows first (in admission order), then the new prompts.
#include "runtime/generation.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "runtime/thread_pool.h"

namespace aigc {
namespace {

std::string text(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

void check_bias(const std::vector<int64_t>& ids, const std::vector<float>& values, const std::string& name,
                int64_t vocab) {
  auto fail = [&name](const std::string& message) { throw std::invalid_argument(name + ": " + message); };
  if (ids.size() != values.size()) fail("as many ids as values expected");
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ids[j] < 0 || ids[j] >= vocab) fail("id " + std::to_string(ids[j]) + " is outside the vocabulary");
    if (std::isnan(values[j]) || values[j] == INFINITY) {
      fail("value " + text(values[j]) + ", expected a finite number or -inf (a ban)");
    }
  }
}

void check_request(const GenerationRequest& r, int64_t vocab, int64_t context) {
  auto fail = [](const std::string& message) { throw std::invalid_argument(message); };
  const SamplingRow& s = r.sampling;
  if (r.prompt.empty()) fail("prompt: expected >= 1 token, got none");
  for (int64_t token : r.prompt) {
    if (token < 0 || token >= vocab) fail("prompt: token " + std::to_string(token) + " is outside the vocabulary");
  }
  if (r.max_new_tokens < 1) fail("max_new_tokens: expected >= 1, got " + std::to_string(r.max_new_tokens));
  // Subtracted, not added: max_new_tokens may be near INT64_MAX (a sum would overflow).
  if (r.max_new_tokens > context - static_cast<int64_t>(r.prompt.size())) {
    fail("prompt: " + std::to_string(r.prompt.size()) + " tokens + max_new_tokens " +
         std::to_string(r.max_new_tokens) + " exceed the model's context of " + std::to_string(context) + " tokens");
  }
  if (r.eos_id < -1 || r.eos_id >= vocab) {
    fail("eos_id: expected -1 (none) or a token, got " + std::to_string(r.eos_id));
  }
  if (r.num_logprobs < -1 || r.num_logprobs > kMaxLogprobs || r.num_logprobs > vocab) {
    fail("num_logprobs: expected -1 (none) or 0 .. " + std::to_string(std::min<int64_t>(kMaxLogprobs, vocab)) +
         ", got " + std::to_string(r.num_logprobs));
  }
  if (!(s.temperature >= 0.0f && std::isfinite(s.temperature))) {
    fail("temperature: expected a finite number >= 0, got " + text(s.temperature));
  }
  if (s.top_k < 0) fail("top_k: expected >= 0, got " + std::to_string(s.top_k));
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) fail("top_p: expected a value in (0, 1], got " + text(s.top_p));
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) fail("min_p: expected a value in [0, 1], got " + text(s.min_p));
  if (!(s.repetition_penalty > 0.0f && std::isfinite(s.repetition_penalty))) {
    fail("repetition_penalty: expected a finite number > 0, got " + text(s.repetition_penalty));
  }
  if (!std::isfinite(s.presence_penalty)) {
    fail("presence_penalty: expected a finite number, got " + text(s.presence_penalty));
  }
  if (!std::isfinite(s.frequency_penalty)) {
    fail("frequency_penalty: expected a finite number, got " + text(s.frequency_penalty));
  }
  check_bias(s.bias_ids, s.bias_values, "logit_bias", vocab);
  check_bias(s.first_bias_ids, s.first_bias_values, "first_bias", vocab);
}

}  // namespace

class Generation::Turn {
 public:
  explicit Turn(Generation& g) : g_(g) {
    if (g.busy_.exchange(true)) throw std::runtime_error("Generation: a call is already running in another thread");
  }
  ~Turn() {
    g_.waiting_count_ = static_cast<int64_t>(g_.waiting_.size());
    g_.running_count_ = static_cast<int64_t>(g_.running_.size());
    g_.free_count_ = g_.cache_.free_blocks();
    g_.busy_ = false;
  }

 private:
  Generation& g_;
};

void StepResult::clear() {
  ids.clear(), tokens.clear(), states.clear(), errors.clear(), num_top.clear(), logprobs.clear();
  top_ids.clear(), top_logprobs.clear();
  width = 0;
}

int64_t Generation::Sequence::token(int64_t position) const {
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  return position < prompt ? request.prompt[position] : generated[position - prompt];
}

Generation::Generation(GptModel& model, KvCache& cache, int64_t max_batch_size, int64_t max_step_tokens)
    : Generation(std::make_unique<ModelOn<GptModel, KvCache>>(model, cache), max_batch_size, max_step_tokens) {}

Generation::Generation(LstmModel& model, LstmState& state, int64_t max_batch_size, int64_t max_step_tokens)
    : Generation(std::make_unique<ModelOn<LstmModel, LstmState>>(model, state), max_batch_size, max_step_tokens) {}

Generation::Generation(std::unique_ptr<BatchModel> model, int64_t max_batch_size, int64_t max_step_tokens)
    : model_(std::move(model)), cache_(model_->pool()), max_batch_size_(max_batch_size),
      max_step_tokens_(max_step_tokens), sampler_(model_->vocab_size()) {
  free_count_ = cache_.free_blocks();
  if (max_batch_size < 1) {
    throw std::invalid_argument("max_batch_size: expected >= 1, got " + std::to_string(max_batch_size));
  }
  if (max_step_tokens < 1) {
    throw std::invalid_argument("max_step_tokens: expected >= 1, got " + std::to_string(max_step_tokens));
  }
}

void Generation::add(GenerationRequest request) {
  Turn turn(*this);
  const int64_t vocab = model_->vocab_size();
  if (live_.count(request.id)) throw std::invalid_argument("id: " + std::to_string(request.id) + " is already queued");
  check_request(request, vocab, model_->context());
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  const int64_t needed = blocks_for(prompt + request.max_new_tokens);
  if (needed > cache_.num_blocks()) {
    throw std::invalid_argument("prompt: " + std::to_string(prompt) + " tokens + max_new_tokens " +
                                std::to_string(request.max_new_tokens) + " need " + std::to_string(needed) +
                                " KV-cache blocks, the cache holds " + std::to_string(cache_.num_blocks()) +
                                " (raise kv_cache_mb)");
  }
  auto seq = std::make_unique<Sequence>();
  seq->request = std::move(request);
  SamplingRow& row = seq->request.sampling;
  row.step = 0;
  row.counts_history = row.repetition_penalty != 1.0f || row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f;
  row.history = row.counts_history ? TokenCounts(seq->request.prompt.data(), prompt, prompt, vocab)
                                   : TokenCounts();
  live_.insert(seq->request.id);
  waiting_.push_back(std::move(seq));
}

void Generation::release(Sequence& seq) {
  if (!seq.blocks.empty()) cache_.release(seq.blocks);
  seq.blocks.clear();
}

bool Generation::remove(int64_t id) {
  Turn turn(*this);
  auto matches = [id](const Owned& s) { return s->request.id == id; };
  bool found = false;
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    release(**it);
    running_.erase(it);
    found = true;
  } else if (auto w = std::find_if(waiting_.begin(), waiting_.end(), matches); w != waiting_.end()) {
    release(**w);
    waiting_.erase(w);
    found = true;
  } else if (auto f = std::find_if(finished_.begin(), finished_.end(), matches); f != finished_.end()) {
    finished_.erase(f);
    found = true;
  }
  live_.erase(id);
  return found;
}

void Generation::reset(Sequence& seq, int64_t generated) {
  seq.generated.resize(std::min<size_t>(seq.generated.size(), std::max<int64_t>(generated, 0)));
  SamplingRow& row = seq.request.sampling;
  row.step = seq.generated.size();
  if (row.counts_history) {
    std::vector<int64_t> history(seq.request.prompt);
    history.insert(history.end(), seq.generated.begin(), seq.generated.end());
    row.history = TokenCounts(history.data(), static_cast<int64_t>(history.size()),
                              static_cast<int64_t>(seq.request.prompt.size()), model_->vocab_size());
  }
}

void Generation::rewind(int64_t id, int64_t generated) {
  Turn turn(*this);
  auto matches = [id](const Owned& s) { return s->request.id == id; };
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    if (static_cast<int64_t>((*it)->generated.size()) <= generated) return;
    Sequence* seq = it->get();
    reset(*seq, generated);
    preempt(seq);
  } else if (auto f = std::find_if(finished_.begin(), finished_.end(), matches); f != finished_.end()) {
    // Finished here (EOS, length, a failed row) but not where the caller is: again.
    reset(**f, generated);
    (*f)->cached = 0;
    waiting_.push_front(std::move(*f));
    finished_.erase(f);
    ++preemptions_;
  } else if (auto w = std::find_if(waiting_.begin(), waiting_.end(), matches); w != waiting_.end()) {
    reset(**w, generated);
  }
}

std::vector<int64_t> Generation::waiting_ids() {
  Turn turn(*this);
  std::vector<int64_t> ids;
  for (const Owned& s : waiting_) ids.push_back(s->request.id);
  return ids;
}

std::vector<int64_t> Generation::running_ids() {
  Turn turn(*this);
  std::vector<int64_t> ids;
  for (const Owned& s : running_) ids.push_back(s->request.id);
  return ids;
}

void Generation::preempt(Sequence* seq) {
  auto it = std::find_if(running_.begin(), running_.end(), [seq](const Owned& s) { return s.get() == seq; });
  Owned owned = std::move(*it);
  running_.erase(it);
  release(*owned);
  owned->cached = 0;
  owned->running = false;
  waiting_.push_front(std::move(owned));
  ++preemptions_;
}

void Generation::make_room() {
  std::vector<Sequence*> snapshot;
  for (const Owned& s : running_) snapshot.push_back(s.get());
  for (Sequence* seq : snapshot) {
    if (!seq->running) continue;  // preempted below, for an earlier sequence
    while (blocks_for(seq->cached + 1) > static_cast<int64_t>(seq->blocks.size())) {
      if (cache_.free_blocks() == 0) {
        Sequence* victim = running_.back().get();
        preempt(victim);
        if (victim == seq) break;
        continue;
      }
      seq->blocks.push_back(cache_.allocate(1)[0]);
    }
  }
}

int64_t Generation::admit() {
  int64_t admitted = 0;
  int64_t budget = max_step_tokens_ - num_running();
  while (!waiting_.empty() && num_running() < max_batch_size_) {
    Sequence& seq = *waiting_.front();
    const int64_t prompt = static_cast<int64_t>(seq.request.prompt.size());
    const int64_t needed = blocks_for(prompt + 1);
    if (needed > cache_.free_blocks() || (prompt > budget && admitted > 0)) break;
    seq.blocks = cache_.allocate(needed);
    seq.running = true;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    ++admitted;
    budget -= prompt;
  }
  return admitted;
}

void Generation::forward(int64_t first_prompt) {
  const int64_t n = static_cast<int64_t>(batch_.size());
  tokens_.clear(), positions_.clear();
  cu_seqlens_.assign(1, 0);
  context_lens_.resize(n);
  is_prompt_.resize(n);
  size_t max_blocks = 1;
  for (int64_t s = 0; s < n; ++s) {
    Sequence& seq = *batch_[s];
    max_blocks = std::max(max_blocks, seq.blocks.size());
    if (s < first_prompt) {  // the next known token: a replayed one after preemption, or the last sampled
      tokens_.push_back(seq.token(seq.cached));
      positions_.push_back(seq.cached);
      context_lens_[s] = static_cast<int32_t>(seq.cached + 1);
    } else {
      const std::vector<int64_t>& prompt = seq.request.prompt;
      tokens_.insert(tokens_.end(), prompt.begin(), prompt.end());
      for (size_t i = 0; i < prompt.size(); ++i) positions_.push_back(static_cast<int64_t>(i));
      context_lens_[s] = static_cast<int32_t>(prompt.size());
    }
    is_prompt_[s] = s >= first_prompt;
    cu_seqlens_.push_back(static_cast<int32_t>(tokens_.size()));
  }
  block_table_.assign(n * max_blocks, 0);
  for (int64_t s = 0; s < n; ++s) {
    std::copy(batch_[s]->blocks.begin(), batch_[s]->blocks.end(), block_table_.begin() + s * max_blocks);
  }
  logits_.resize(n * model_->vocab_size());
  StepBatch b{};
  b.tokens = tokens_.data();
  b.positions = positions_.data();
  b.num_tokens = static_cast<int64_t>(tokens_.size());
  b.cu_seqlens = cu_seqlens_.data();
  b.context_lens = context_lens_.data();
  b.is_prompt = is_prompt_.data();
  b.block_table = block_table_.data();
  b.num_seqs = n;
  b.max_blocks = static_cast<int64_t>(max_blocks);
  model_->forward(b, logits_.data());
  for (int64_t s = 0; s < n; ++s) batch_[s]->cached += cu_seqlens_[s + 1] - cu_seqlens_[s];
}

void Generation::sample(const std::vector<int64_t>& due) {
  const int64_t n = static_cast<int64_t>(due.size()), vocab = model_->vocab_size();
  float* logits = logits_.data();
  if (n < static_cast<int64_t>(batch_.size())) {  // the usual case, every row due, copies nothing
    due_logits_.resize(n * vocab);
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(logits_.data() + due[i] * vocab, vocab, due_logits_.data() + i * vocab);
    }
    logits = due_logits_.data();
  }
  int width = 0;
  bool logprobs = false;
  rows_.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const GenerationRequest& r = batch_[due[i]]->request;
    rows_[i] = &batch_[due[i]]->request.sampling;
    logprobs |= r.num_logprobs >= 0;
    width = std::max(width, r.num_logprobs);
  }
  out_tokens_.resize(n);
  out_logprobs_.resize(n);
  out_top_ids_.resize(n * width);
  out_top_logprobs_.resize(n * width);
  out_status_.resize(n);
  SampleOutputs out{out_tokens_.data(), logprobs ? out_logprobs_.data() : nullptr, out_top_ids_.data(),
                    out_top_logprobs_.data(), out_status_.data()};
  sampler_.sample(logits, true, rows_.data(), n, width, out);
  result_.width = width;
  for (int64_t i = 0; i < n; ++i) {
    Sequence& seq = *batch_[due[i]];
    const GenerationRequest& r = seq.request;
    RowState state = RowState::kRunning;
    std::string error;
    if (out_status_[i].code != SampleStatus::kOk) {
      state = RowState::kError;
      error = row_message(i, out_status_[i]);
    } else {
      seq.generated.push_back(out_tokens_[i]);
      if (out_tokens_[i] == r.eos_id) {
        state = RowState::kStoppedEos;
      } else if (static_cast<int64_t>(seq.generated.size()) >= r.max_new_tokens) {
        state = RowState::kStoppedLength;
      }
    }
    seq.running = state == RowState::kRunning;
    result_.ids.push_back(r.id);
    result_.tokens.push_back(out_tokens_[i]);
    result_.states.push_back(state);
    result_.errors.push_back(std::move(error));
    result_.num_top.push_back(r.num_logprobs);
    result_.logprobs.push_back(logprobs ? out_logprobs_[i] : NAN);
    result_.top_ids.insert(result_.top_ids.end(), out_top_ids_.begin() + i * width,
                           out_top_ids_.begin() + (i + 1) * width);
    result_.top_logprobs.insert(result_.top_logprobs.end(), out_top_logprobs_.begin() + i * width,
                                out_top_logprobs_.begin() + (i + 1) * width);
  }
}

const StepResult& Generation::step() {
  Turn turn(*this);
  result_.clear();
  for (const Owned& f : finished_) live_.erase(f->request.id);
  finished_.clear();
  make_room();
  const int64_t admitted = admit();
  batch_.clear();
  for (const Owned& s : running_) batch_.push_back(s.get());
  if (batch_.empty()) return result_;
  const int64_t first_prompt = static_cast<int64_t>(batch_.size()) - admitted;
  // Which rows sample, known before the forward pass (it moves `cached` on).
  std::vector<int64_t> due;
  for (int64_t s = 0; s < static_cast<int64_t>(batch_.size()); ++s) {
    const Sequence& seq = *batch_[s];
    const int64_t new_tokens = s < first_prompt ? 1 : static_cast<int64_t>(seq.request.prompt.size());
    if (seq.cached + new_tokens == seq.known()) due.push_back(s);
  }
  {
    LingerScope linger;  // the sampler comes at once, while the pool's threads still spin for work
    forward(first_prompt);
    if (!due.empty()) sample(due);
  }
  // Finished sequences leave (their blocks freed), kept until the next step for rewind.
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->running) {
      ++it;
      continue;
    }
    release(**it);
    finished_.push_back(std::move(*it));
    it = running_.erase(it);
  }
  return result_;
}

}  // namespace aigc
