// The batched sampler (aigc/sampling.h), one row at a time; compiled once per ISA.
// logits: (batch, vocab) float32, row r at logits + r * vocab. Per row, over the vocab:
// one read for the max, the NaN / +inf check, the raw log-sum-exp and the copy that bias
// and penalties edit (scan_row), then
// either a streaming top-k (threshold + candidate buffer: no sort of the vocabulary) or,
// with top_k off, one pass of exp((l - max) / T) and a radix search on the probabilities'
// bits for the nucleus and the draw. Bias and penalties touch only their few tokens.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "aigc/rng.h"
#include "aigc/sampling.h"
#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
// Below this many candidates a mass search sorts them: 64 is one cache line of ids.
constexpr int64_t kSortBelow = 64;

// value: a logit during top-k selection, an unnormalised probability afterwards.
struct Candidate {
  float value;
  int32_t id;
};

// The sampling order: descending value, ties to the lower id.
inline bool ahead(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

struct Workspace {
  std::vector<float> logits;       // (vocab) the row after bias and penalties
  std::vector<float> probs;        // (vocab) exp((l - max) / T), top_k off
  std::vector<Candidate> cand;     // top-k survivors
  std::vector<Candidate> kept;     // after top_p / min_p
  std::vector<Candidate> search;   // the mass search's shrinking bucket
  std::vector<float> values;       // candidate values, packed for SIMD exp
  std::vector<int64_t> history;    // token * 2 + (generated ? 1 : 0), sorted
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

[[noreturn]] void row_error(int64_t row, const std::string& what) {
  throw std::invalid_argument("logits: row " + std::to_string(row) + " " + what);
}

// Max of x[0, n) and whether any element is NaN.
float max_and_nan(const float* x, int64_t n, bool* nan) {
  simd::F m = simd::set1(-kInf);
  unsigned bad = 0;
  int64_t i = 0;
  for (; i + simd::kWidth <= n; i += simd::kWidth) {
    const simd::F v = simd::load(x + i);
    bad |= simd::mask_nan(v);
    m = simd::max(m, v);
  }
  if (i < n) {
    const simd::F v = simd::load_partial(x + i, static_cast<int>(n - i), -kInf);
    bad |= simd::mask_nan(v);
    m = simd::max(m, v);
  }
  *nan = bad != 0;
  return simd::reduce_max(m);
}

// One read of the row for max, NaN check, log-sum-exp and (copy != null) the copy that
// bias and penalties will edit: chunks of kChunk floats (4 KiB, in L1) get their max from
// memory, then sum exp(x - chunk max) from L1 into 4 chains (one chain waited on the add
// latency), and the chunks combine in double, rescaled to the running max. Four passes
// (max, sum_exp, memcpy, ...) were 2.6 ms at (64, 50257), 3.2x one read of the logits.
constexpr int64_t kChunk = 1024;
struct RowStats {
  float max;
  double log_total;  // max + log(sum exp(x - max))
  bool nan;
};
RowStats scan_row(const float* x, int64_t n, float* copy) {
  const int64_t kVec = simd::kWidth;
  float max = -kInf;
  double total = 0.0;  // sum exp(x - max) so far
  unsigned bad = 0;
  alignas(64) float tail[kChunk];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    const float* chunk = x + c0;
    simd::F m = simd::set1(-kInf);
    int64_t i = 0;
    for (; i + kVec <= len; i += kVec) {
      const simd::F v = simd::load(chunk + i);
      bad |= simd::mask_nan(v);
      m = simd::max(m, v);
      if (copy != nullptr) simd::store(copy + c0 + i, v);
    }
    if (i < len) {
      // The ragged end, padded with -inf in a local copy so the sum below reads whole vectors.
      const int rest = static_cast<int>(len - i);
      const simd::F v = simd::load_partial(chunk + i, rest, -kInf);
      bad |= simd::mask_nan(v);
      m = simd::max(m, v);
      std::memcpy(tail, chunk, i * sizeof(float));
      simd::store(tail + i, v);
      if (copy != nullptr) std::memcpy(copy + c0 + i, chunk + i, rest * sizeof(float));
      chunk = tail;
      i += kVec;
    }
    const float chunk_max = simd::reduce_max(m);
    if (chunk_max == -kInf || chunk_max == kInf || bad != 0) {
      max = std::max(max, chunk_max);  // the caller reports +inf and NaN; -inf adds nothing
      continue;
    }
    const simd::F shift = simd::set1(chunk_max);
    simd::F acc[4] = {simd::set1(0.0f), simd::set1(0.0f), simd::set1(0.0f), simd::set1(0.0f)};
    int64_t k = 0;
    for (; k + 4 * kVec <= i; k += 4 * kVec) {
      for (int a = 0; a < 4; ++a) acc[a] = simd::add(acc[a], simd::exp(simd::sub(simd::load(chunk + k + a * kVec), shift)));
    }
    for (; k < i; k += kVec) acc[0] = simd::add(acc[0], simd::exp(simd::sub(simd::load(chunk + k), shift)));
    const double sum = simd::reduce_add(simd::add(simd::add(acc[0], acc[1]), simd::add(acc[2], acc[3])));
    if (chunk_max > max) {
      total = total * std::exp(static_cast<double>(max) - chunk_max) + sum;
      max = chunk_max;
    } else {
      total += sum * std::exp(static_cast<double>(chunk_max) - max);
    }
  }
  return {max, max + std::log(total), bad != 0};
}

// out[i] = exp((x[i] - shift) / temperature); returns their sum. Lanes accumulate 64
// vectors in float (relative error <= 64 ulp per block), blocks add up in double.
double exp_scaled(const float* x, float* out, int64_t n, float shift, float temperature) {
  const simd::F s = simd::set1(shift), t = simd::set1(temperature);
  double total = 0.0;
  int64_t i = 0;
  while (i + simd::kWidth <= n) {
    simd::F acc = simd::set1(0.0f);
    const int64_t block_end = std::min(n, i + 64 * simd::kWidth);
    for (; i + simd::kWidth <= block_end; i += simd::kWidth) {
      const simd::F p = simd::exp(simd::div(simd::sub(simd::load(x + i), s), t));
      simd::store(out + i, p);
      acc = simd::add(acc, p);
    }
    total += simd::reduce_add(acc);
  }
  if (i < n) {
    alignas(64) float tail[simd::kWidth];
    const int rest = static_cast<int>(n - i);
    const simd::F v = simd::load_partial(x + i, rest, -kInf);
    simd::store(tail, simd::exp(simd::div(simd::sub(v, s), t)));
    for (int j = 0; j < rest; ++j) {
      out[i + j] = tail[j];
      total += tail[j];
    }
  }
  return total;
}

// The first index of the maximum of x[0, n) (greedy: ties to the lowest id).
int64_t argmax(const float* x, int64_t n, float max) {
  const simd::F m = simd::set1(max);
  int64_t i = 0;
  for (; i + simd::kWidth <= n; i += simd::kWidth) {
    const unsigned hit = simd::mask_eq(simd::load(x + i), m);
    if (hit) return i + __builtin_ctz(hit);
  }
  for (; i < n; ++i) {
    if (x[i] == max) return i;
  }
  return n - 1;
}

// A value <= the k-th largest of x[0, n): split x into k segments; their k maxima are k
// distinct tokens, so the smallest of them is at most the k-th largest. -inf when the
// segments would be shorter than two vectors (then it filters too little to pay).
float kth_lower_bound(const float* x, int64_t n, int64_t k) {
  const int64_t segment = n / k;
  if (segment < 2 * simd::kWidth) return -kInf;
  float bound = kInf;
  for (int64_t s = 0; s < k; ++s) {
    const float* begin = x + s * segment;
    const int64_t length = s == k - 1 ? n - s * segment : segment;
    simd::F m = simd::set1(-kInf);
    int64_t i = 0;
    for (; i + simd::kWidth <= length; i += simd::kWidth) m = simd::max(m, simd::load(begin + i));
    float segment_max = simd::reduce_max(m);
    for (; i < length; ++i) segment_max = std::max(segment_max, begin[i]);
    bound = std::min(bound, segment_max);
  }
  return bound;
}

// The k first tokens of x[0, n) in the sampling order, unordered, into out (fewer when
// fewer than k are > -inf). Streaming: a token enters the buffer only at or above the
// current threshold, first kth_lower_bound (for random logits it lets about 0.5% of the
// vocab through, against 10% for a threshold raised only by the buffer: 4x faster at
// k = 50, vocab 50257), then the k-th best value so far; when the buffer fills,
// nth_element cuts it back to k and raises the threshold. Later tokens have higher ids,
// so from then on one equal to the threshold loses the tie: the test becomes strict.
void top_k_select(const float* x, int64_t n, int64_t k, std::vector<Candidate>& out) {
  const int64_t capacity = std::max<int64_t>(2 * k, k + 512);
  out.resize(capacity);
  int64_t count = 0;
  float threshold = kth_lower_bound(x, n, k);
  bool strict = threshold == -kInf;  // -inf tokens are never candidates
  auto compact = [&] {
    std::nth_element(out.begin(), out.begin() + (k - 1), out.begin() + count, ahead);
    count = k;
    threshold = out[k - 1].value;
    strict = true;
  };
  auto offer = [&](int64_t i) {
    if (!(x[i] > threshold || (!strict && x[i] == threshold))) return;
    out[count++] = {x[i], static_cast<int32_t>(i)};
    if (count == capacity) compact();
  };
  int64_t i = 0;
  for (; i + simd::kWidth <= n; i += simd::kWidth) {
    const simd::F v = simd::load(x + i), t = simd::set1(threshold);
    unsigned hit = strict ? simd::mask_gt(v, t) : simd::mask_ge(v, t);
    while (hit) {
      offer(i + __builtin_ctz(hit));
      hit &= hit - 1;
    }
  }
  for (; i < n; ++i) offer(i);
  if (count > k) compact();
  out.resize(count);
}

// Where the cumulative mass of the candidates, taken in the sampling order (descending
// probability, ties to the lower id), first reaches `target` (>= target, or > target when
// strict): the candidate at which it does. No full sort: a radix search on the bits of
// the (non-negative) probabilities, whose order as integers is their order as floats —
// histogram the mass by 10 bits (from bit 20 down), find the bucket where the running
// mass crosses the target, keep only its members, and repeat with the next 10 bits;
// once at most kSortBelow are left (or all share every bit), sort them and walk.
// `value(i)` and `id(i)` read candidate i of the m; zero probabilities never get chosen.
template <typename Value, typename Id>
Candidate mass_search(const Value& value, const Id& id, int64_t m, double target, bool strict,
                      std::vector<Candidate>& bucket) {
  auto reached = [&](double mass) { return strict ? mass > target : mass >= target; };
  auto bits = [](float v) {
    uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  };
  double before = 0.0;  // mass of everything ahead of the current bucket
  // Picks the bucket of 10 bits at `shift` over `count` members; returns it.
  auto pick = [&](auto&& member_value, int64_t count, int shift) {
    double mass[1024] = {};
    for (int64_t i = 0; i < count; ++i) {
      const float v = member_value(i);
      mass[(bits(v) >> shift) & 1023] += v;
    }
    int last = -1;
    for (int b = 1023; b >= 0; --b) {
      if (mass[b] == 0.0) continue;
      if (reached(before + mass[b])) return b;
      before += mass[b];
      last = b;
    }
    before -= mass[last];  // rounding kept the total just under the target: the last bucket
    return last;
  };
  bucket.clear();
  if (m <= kSortBelow) {
    for (int64_t i = 0; i < m; ++i) bucket.push_back({value(i), id(i)});
  } else {
    const int b = pick(value, m, 20);
    for (int64_t i = 0; i < m; ++i) {
      if (static_cast<int>(bits(value(i)) >> 20) == b) bucket.push_back({value(i), id(i)});
    }
    for (int shift : {10, 0}) {
      const int64_t count = static_cast<int64_t>(bucket.size());
      if (count <= kSortBelow) break;
      const int c = pick([&](int64_t i) { return bucket[i].value; }, count, shift);
      int64_t kept = 0;
      for (int64_t i = 0; i < count; ++i) {
        if (static_cast<int>((bits(bucket[i].value) >> shift) & 1023) == c) bucket[kept++] = bucket[i];
      }
      bucket.resize(kept);
    }
  }
  std::sort(bucket.begin(), bucket.end(), ahead);
  Candidate last{0.0f, -1};
  for (const Candidate& c : bucket) {
    if (c.value == 0.0f) break;
    before += c.value;
    last = c;
    if (reached(before)) return c;
  }
  return last;
}

bool has_penalties(const SampleParams& p, int64_t r) {
  return p.history != nullptr && p.history_offsets[r + 1] > p.history_offsets[r] &&
         (p.repetition_penalty[r] != 1.0f || p.presence_penalty[r] != 0.0f || p.frequency_penalty[r] != 0.0f);
}
bool has_bias(const SampleParams& p, int64_t r) {
  return p.bias_ids != nullptr && p.bias_offsets[r + 1] > p.bias_offsets[r];
}
// Whether the row needs an editable copy (scan_row makes it).
bool needs_copy(const SampleParams& p, int64_t r) { return has_penalties(p, r) || has_bias(p, r); }

// Applies logit bias, then repetition, frequency and presence penalties (vLLM's order) to
// the tokens they touch, in ws.logits (the copy scan_row made). Returns false when
// nothing applies to the row.
bool bias_and_penalties(const SampleParams& p, int64_t r, Workspace& ws) {
  const float repetition = p.repetition_penalty[r], presence = p.presence_penalty[r],
              frequency = p.frequency_penalty[r];
  const bool penalties = has_penalties(p, r);
  const bool bias = has_bias(p, r);
  if (!penalties && !bias) return false;
  float* logits = ws.logits.data();
  auto check = [&](int64_t token) {
    if (std::isnan(logits[token]) || logits[token] == kInf) {
      row_error(r, "has logit " + std::to_string(logits[token]) + " at token " + std::to_string(token) +
                       " after logit_bias and penalties");
    }
  };
  if (bias) {
    for (int64_t j = p.bias_offsets[r]; j < p.bias_offsets[r + 1]; ++j) {
      logits[p.bias_ids[j]] += p.bias_values[j];
      check(p.bias_ids[j]);
    }
  }
  if (!penalties) return true;
  const int64_t begin = p.history_offsets[r], end = p.history_offsets[r + 1];
  const int64_t prompt_end = begin + (p.prompt_lens != nullptr ? p.prompt_lens[r] : 0);
  ws.history.clear();
  for (int64_t j = begin; j < end; ++j) ws.history.push_back(p.history[j] * 2 + (j >= prompt_end ? 1 : 0));
  std::sort(ws.history.begin(), ws.history.end());
  for (size_t j = 0; j < ws.history.size();) {
    const int64_t token = ws.history[j] / 2;
    int64_t generated = 0;
    for (; j < ws.history.size() && ws.history[j] / 2 == token; ++j) generated += ws.history[j] & 1;
    float x = logits[token];
    if (repetition != 1.0f) x = x < 0.0f ? x * repetition : x / repetition;
    if (generated > 0) {
      x = x - frequency * static_cast<float>(generated);
      x = x - presence;
    }
    logits[token] = x;
    check(token);
  }
  return true;
}

// The draw for temperature > 0; `logits` is the row after bias and penalties.
int64_t draw(const SampleParams& p, int64_t r, const float* logits, Workspace& ws) {
  const int64_t vocab = p.vocab;
  const float temperature = p.temperature[r], top_p = p.top_p[r], min_p = p.min_p[r];
  const int64_t top_k = p.top_k[r];
  const double u =
      uniform_from_bits(philox4x64(p.steps[r], 0, 0, 0, p.seeds[r], kSamplerStream).v[0]);
  const bool by_mass = top_p < 1.0f;

  // Candidates (value, id) with probabilities exp((l - max) / T), and their sum.
  double total;
  const Candidate* cand = nullptr;
  const float* dense = nullptr;  // top_k off: every token, id = index
  int64_t m;
  if (top_k > 0 && top_k < vocab) {
    top_k_select(logits, vocab, top_k, ws.cand);
    m = static_cast<int64_t>(ws.cand.size());
    if (m == 0) row_error(r, "has every token at -inf after logit_bias");
    float max = -kInf;
    for (const Candidate& c : ws.cand) max = std::max(max, c.value);
    ws.values.resize(m);
    for (int64_t i = 0; i < m; ++i) ws.values[i] = ws.cand[i].value;
    total = exp_scaled(ws.values.data(), ws.values.data(), m, max, temperature);
    for (int64_t i = 0; i < m; ++i) ws.cand[i].value = ws.values[i];
    cand = ws.cand.data();
  } else {
    bool nan;
    const float max = max_and_nan(logits, vocab, &nan);
    if (max == -kInf) row_error(r, "has every token at -inf after logit_bias");
    ws.probs.resize(vocab);
    total = exp_scaled(logits, ws.probs.data(), vocab, max, temperature);
    dense = ws.probs.data();
    m = vocab;
  }
  auto value = [&](int64_t i) { return dense ? dense[i] : cand[i].value; };
  auto id = [&](int64_t i) { return dense ? static_cast<int32_t>(i) : cand[i].id; };

  // top_p and min_p each keep a prefix of the sampling order: keep the shorter.
  const Candidate* kept = cand;
  int64_t n_kept = m;
  double kept_total = total;
  if (by_mass || min_p > 0.0f) {
    Candidate edge{0.0f, std::numeric_limits<int32_t>::max()};
    if (by_mass) edge = mass_search(value, id, m, static_cast<double>(top_p) * total, false, ws.search);
    ws.kept.clear();
    kept_total = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const Candidate c{value(i), id(i)};
      if ((c.value > edge.value || (c.value == edge.value && c.id <= edge.id)) && c.value >= min_p &&
          c.value > 0.0f) {
        ws.kept.push_back(c);
        kept_total += c.value;
      }
    }
    kept = ws.kept.data();
    n_kept = static_cast<int64_t>(ws.kept.size());
    dense = nullptr;
  }
  auto kept_value = [&](int64_t i) { return dense ? dense[i] : kept[i].value; };
  auto kept_id = [&](int64_t i) { return dense ? static_cast<int32_t>(i) : kept[i].id; };
  // u in [0, 1): the first token whose cumulative mass exceeds u * total.
  return mass_search(kept_value, kept_id, n_kept, u * kept_total, true, ws.search).id;
}

void sample_row(const SampleParams& p, int64_t r, Workspace& ws) {
  const int64_t vocab = p.vocab;
  const float* raw = p.logits + r * vocab;
  ws.logits.resize(vocab);
  const RowStats stats = scan_row(raw, vocab, needs_copy(p, r) ? ws.logits.data() : nullptr);
  bool nan = stats.nan;
  const float raw_max = stats.max;
  if (nan) row_error(r, "has NaN");
  if (raw_max == kInf) row_error(r, "has +inf");
  if (raw_max == -kInf) row_error(r, "is all -inf");
  const double log_total = stats.log_total;

  const float* logits = bias_and_penalties(p, r, ws) ? ws.logits.data() : raw;
  int64_t token;
  if (p.temperature[r] == 0.0f) {
    const float max = logits == raw ? raw_max : max_and_nan(logits, vocab, &nan);
    if (max == -kInf) row_error(r, "has every token at -inf after logit_bias");
    token = argmax(logits, vocab, max);
  } else {
    token = draw(p, r, logits, ws);
  }
  p.tokens[r] = token;
  p.logprobs[r] = static_cast<float>(raw[token] - log_total);

  const int n = p.num_logprobs;
  if (n > 0) {
    top_k_select(raw, vocab, n, ws.cand);
    std::sort(ws.cand.begin(), ws.cand.end(), ahead);
    for (int j = 0; j < n; ++j) {
      // Fewer than n finite logits: the rest are -inf tokens, lowest ids first.
      const bool have = j < static_cast<int>(ws.cand.size());
      p.top_ids[r * n + j] = have ? ws.cand[j].id : -1;
      p.top_logprobs[r * n + j] = have ? static_cast<float>(ws.cand[j].value - log_total) : -kInf;
    }
    if (static_cast<int>(ws.cand.size()) < n) {
      int j = static_cast<int>(ws.cand.size());
      for (int64_t t = 0; t < vocab && j < n; ++t) {
        if (raw[t] == -kInf) p.top_ids[r * n + j++] = t;
      }
    }
  }
}

}  // namespace

void sample_rows(const SampleParams& p, int64_t first, int64_t last) {
  Workspace& ws = workspace();
  for (int64_t r = first; r < last; ++r) sample_row(p, r, ws);
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
