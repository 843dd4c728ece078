// The batched sampler (aigc/sampling.h), one row at a time; compiled once per ISA.
// logits: (batch, vocab) float32, row r at logits + r * vocab. Per row: one read of the
// logits from memory (scan_row) for the NaN / +inf check, the maximum of every block of
// kSampleBlock logits and, when log-probabilities are wanted, the raw log-sum-exp; bias
// and penalties edit copies of the few blocks they touch; then greedy (the block maxima
// point at the argmax), a streaming top-k that reads only the blocks that can hold a
// candidate (cpu/sampling_select.h), or, with top_k off, one pass of exp((l - max) / T)
// and a radix search on the probabilities' bits for the nucleus and the draw. Nothing
// sorts the vocabulary. A row that cannot be sampled (NaN, +inf, nothing left to draw)
// gets a status and token -1; the other rows go on (aigc/sampling.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "aigc/rng.h"
#include "aigc/sampling.h"
#include "cpu/sampling_select.h"
#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

struct Workspace {
  std::vector<float> block_max;    // (blocks) of the raw row, from scan_row
  std::vector<float> lane_max;     // (blocks, kWidth) their lane maxima (RowView), from scan_row
  std::vector<int32_t> slot;       // (blocks) -1, or the block's edited copy (RowView)
  std::vector<float> copies;       // the edited blocks, kSampleBlock floats each
  std::vector<float> copy_max;     // their maxima
  std::vector<float> copy_lanes;   // and lane maxima
  std::vector<int64_t> edited;     // which blocks have a copy, in `slot` order
  std::vector<float> scratch;      // kth_lower_bound's part maxima
  std::vector<float> probs;        // (vocab) exp((l - max) / T), top_k off
  std::vector<Candidate> stream;   // top_k_select's buffer
  std::vector<Candidate> cand;     // top-k survivors
  std::vector<Candidate> kept;     // after top_p / min_p
  std::vector<Candidate> search;   // the mass search's shrinking bucket
  std::vector<float> values;       // candidate values, packed for SIMD exp
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

constexpr RowStatus kSampled{SampleStatus::kOk, -1};
// Cold, as the throw it replaces was: the compiler keeps the failure paths out of the
// sampled row's way.
[[gnu::cold, gnu::noinline]] RowStatus failed(SampleStatus code, int64_t token = -1) {
  return {code, static_cast<int32_t>(token)};
}

// One read of the row from memory for its NaN check, the maximum of every block (into
// block_max, its lane maxima into lane_max) and, when asked (with_total; it costs as much
// as the rest of the scan), the raw log-sum-exp: chunks of kChunk floats (4 KiB, in L1)
// get their block maxima from memory, then, while the next chunk is prefetched, sum from
// L1 2^(x log2 e - c), c = chunk max * log2 e rounded to float (one fused multiply-add,
// the error of c corrected once in double); chunks combine in double, rescaled to the
// running max.
constexpr int64_t kChunk = 8 * kSampleBlock;
struct RowStats {
  float max;
  double log_total;  // max + log(sum exp(x - max)); NaN when not asked for
  bool nan;
};
RowStats scan_row(const float* x, int64_t n, bool with_total, float* block_max, float* lane_max) {
  const int64_t kVec = simd::kWidth;
  const float log2e = 1.44269504088896341f;
  float max = -kInf;
  double total = 0.0;  // sum exp(x - max) so far
  unsigned bad = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    const float* chunk = x + c0;
    float chunk_max = -kInf;
    for (int64_t b0 = 0; b0 < len; b0 += kSampleBlock) {
      const int64_t end = std::min(b0 + kSampleBlock, len);
      simd::F m = simd::set1(-kInf);
      int64_t i = b0;
      for (; i + kVec <= end; i += kVec) {
        const simd::F v = simd::load(chunk + i);
        bad |= simd::mask_nan(v);
        m = simd::max(m, v);
      }
      simd::store(lane_max + (c0 + b0) / kSampleBlock * kVec, m);
      float block = simd::reduce_max(m);
      for (; i < end; ++i) {
        bad |= std::isnan(chunk[i]) ? 1u : 0u;
        block = std::max(block, chunk[i]);
      }
      block_max[(c0 + b0) / kSampleBlock] = block;
      chunk_max = std::max(chunk_max, block);
    }
    if (!with_total || chunk_max == -kInf || chunk_max == kInf || bad != 0) {
      max = std::max(max, chunk_max);  // the caller reports +inf and NaN; -inf adds nothing
      continue;
    }
    const float c = chunk_max * log2e;
    const simd::F scale = simd::set1(log2e), offset = simd::set1(-c), floor = simd::set1(-126.0f);
    auto term = [&](int64_t i) {
      return simd::exp2_in_range(simd::max(simd::fmadd(simd::load(chunk + i), scale, offset), floor));
    };
    const float* next = c0 + kChunk < n ? chunk + kChunk : nullptr;
    simd::F acc[2] = {simd::set1(0.0f), simd::set1(0.0f)};
    int64_t k = 0;
    for (; k + 2 * kVec <= len; k += 2 * kVec) {
      for (int64_t line = 0; next != nullptr && line < 2 * kVec; line += 16) __builtin_prefetch(next + k + line);
      acc[0] = simd::add(acc[0], term(k));
      acc[1] = simd::add(acc[1], term(k + kVec));
    }
    for (; k + kVec <= len; k += kVec) acc[0] = simd::add(acc[0], term(k));
    // 2^(x log2 e - c) = exp(x - chunk_max) * 2^(chunk_max log2 e - c): undo the second factor
    double sum = simd::reduce_add(simd::add(acc[0], acc[1])) *
                 std::exp2(static_cast<double>(c) - static_cast<double>(chunk_max) * log2e);
    for (; k < len; ++k) sum += std::exp(static_cast<double>(chunk[k]) - chunk_max);
    if (chunk_max > max) {
      total = total * std::exp(static_cast<double>(max) - chunk_max) + sum;
      max = chunk_max;
    } else {
      total += sum * std::exp(static_cast<double>(chunk_max) - max);
    }
  }
  return {max, with_total ? max + std::log(total) : std::numeric_limits<double>::quiet_NaN(), bad != 0};
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

// Before a row: no block has an edited copy.
void forget_edits(Workspace& ws, int64_t blocks) {
  if (static_cast<int64_t>(ws.slot.size()) != blocks) {
    ws.slot.assign(blocks, -1);
    ws.copies.resize(blocks * kSampleBlock);  // room for every block: no growth per edit
  } else {
    for (const int64_t b : ws.edited) ws.slot[b] = -1;
  }
  ws.edited.clear();
}

// The editable logit of `token`: its block is copied out of the raw row on first touch.
float& editable(Workspace& ws, const float* raw, int64_t n, int64_t token) {
  const int64_t b = token / kSampleBlock, first = b * kSampleBlock;
  int32_t& slot = ws.slot[b];
  if (slot < 0) {
    slot = static_cast<int32_t>(ws.edited.size());
    ws.edited.push_back(b);
    std::copy(raw + first, raw + std::min(first + kSampleBlock, n), ws.copies.data() + slot * kSampleBlock);
  }
  return ws.copies[slot * kSampleBlock + (token - first)];
}

bool has_penalties(const SampleParams& p, int64_t r) {
  return p.history != nullptr && p.history[r].size() > 0 &&
         (p.repetition_penalty[r] != 1.0f || p.presence_penalty[r] != 0.0f || p.frequency_penalty[r] != 0.0f);
}
bool has_bias(const SampleParams& p, int64_t r) {
  return p.bias_ids != nullptr && p.bias_offsets[r + 1] > p.bias_offsets[r];
}

// Applies logit bias, then repetition, frequency and presence penalties (vLLM's order) to
// the logits at(token) gives, check(token, x) on each result.
template <typename At, typename Check>
void edit_logits(const SampleParams& p, int64_t r, const At& at, const Check& check) {
  if (has_bias(p, r)) {
    for (int64_t j = p.bias_offsets[r]; j < p.bias_offsets[r + 1]; ++j) {
      float& x = at(p.bias_ids[j]);
      x += p.bias_values[j];
      check(p.bias_ids[j], x);
    }
  }
  if (has_penalties(p, r)) {
    const float repetition = p.repetition_penalty[r], presence = p.presence_penalty[r],
                frequency = p.frequency_penalty[r];
    const TokenCounts& history = p.history[r];
    for (int64_t i = 0; i < history.size(); ++i) {
      const int32_t token = history.tokens()[i], generated = history.generated()[i];
      float& x = at(token);
      if (repetition != 1.0f) x = x < 0.0f ? x * repetition : x / repetition;
      // No branch on whether the token was generated: prompt and generated ones interleave.
      const float shifted = (x - frequency * static_cast<float>(generated)) - presence;
      x = generated > 0 ? shifted : x;
      check(token, x);
    }
  }
}

// Bias and penalties in copies of the blocks they touch, which `row` then reads; the
// status of the first logit they make NaN or +inf, if any.
RowStatus edit_copies(const SampleParams& p, int64_t r, Workspace& ws, RowView& row) {
  if (!has_penalties(p, r) && !has_bias(p, r)) return kSampled;
  RowStatus status = kSampled;
  edit_logits(
      p, r, [&](int64_t token) -> float& { return editable(ws, row.raw, row.n, token); },
      [&](int64_t token, float x) {
        if ((std::isnan(x) || x == kInf) && status.code == SampleStatus::kOk) {
          status = failed(std::isnan(x) ? SampleStatus::kEditNaN : SampleStatus::kEditPosInf, token);
        }
      });
  if (status.code != SampleStatus::kOk) return status;
  ws.copy_max.resize(ws.edited.size());
  ws.copy_lanes.resize(ws.edited.size() * simd::kWidth);
  for (size_t s = 0; s < ws.edited.size(); ++s) {
    ws.copy_max[s] = block_max(ws.copies.data() + s * kSampleBlock, row.length(ws.edited[s]),
                               ws.copy_lanes.data() + s * simd::kWidth);
  }
  row.slot = ws.slot.data();
  row.copies = ws.copies.data();
  row.copy_max = ws.copy_max.data();
  row.copy_lanes = ws.copy_lanes.data();
  return kSampled;
}

// The draw from at most kSortBelow candidates (probabilities, `total` their sum):
// sorted once into the sampling order, where top_p and min_p each keep a prefix — the
// shorter wins — and the draw walks the kept prefix, as mass_search would (it sorts what
// it is given below kSortBelow) but with one sort instead of one per search.
int64_t draw_sorted(std::vector<Candidate>& cand, double total, float top_p, float min_p, double u) {
  in_sampling_order(cand);  // exp may tie two logits
  const double target = static_cast<double>(top_p) * total;
  const bool by_mass = top_p < 1.0f;
  size_t kept = 0;
  double mass = 0.0;
  while (kept < cand.size() && cand[kept].value > 0.0f && cand[kept].value >= min_p) {
    mass += cand[kept++].value;
    if (by_mass && mass >= target) break;
  }
  // u in [0, 1): the first token whose cumulative mass exceeds u * mass (the last kept one
  // when rounding keeps the sum under it).
  double before = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    before += cand[i].value;
    if (before > u * mass) return cand[i].id;
  }
  return cand[kept - 1].id;
}

// The draw for temperature > 0 over `row`, the logits after bias and penalties; -1 when
// every token is at -inf.
int64_t draw(const SampleParams& p, int64_t r, const RowView& row, Workspace& ws) {
  const int64_t vocab = p.vocab;
  const float temperature = p.temperature[r], top_p = p.top_p[r], min_p = p.min_p[r];
  const int64_t top_k = p.top_k[r];
  const double u =
      uniform_from_bits(philox4x64(p.steps[r], 0, 0, 0, p.seeds[r], kSamplerStream).v[0]);
  const bool by_mass = top_p < 1.0f;

  // Candidates (value, id) with probabilities exp((l - max) / T), and their sum.
  double total = 0.0;
  const Candidate* cand = nullptr;
  const float* dense = nullptr;  // top_k off: every token, id = index
  int64_t m;
  if (top_k > 0 && top_k < vocab) {
    top_k_select(row, top_k, ws.scratch, ws.stream, ws.cand);
    m = static_cast<int64_t>(ws.cand.size());
    if (__builtin_expect(m == 0, 0)) return -1;
    // The probability sums below depend on the candidates' order: the sampling order, also
    // where the stream left them as nth_element does (over kRankBelow of them; that order is
    // the standard library's), so that one order is defined, the CUDA sampler's too.
    if (!std::is_sorted(ws.cand.begin(), ws.cand.end(), ahead)) std::sort(ws.cand.begin(), ws.cand.end(), ahead);
    float max = -kInf;
    for (const Candidate& c : ws.cand) max = std::max(max, c.value);
    ws.values.resize(m);
    for (int64_t i = 0; i < m; ++i) ws.values[i] = ws.cand[i].value;
    total = exp_scaled(ws.values.data(), ws.values.data(), m, max, temperature);
    for (int64_t i = 0; i < m; ++i) ws.cand[i].value = ws.values[i];
    if (m <= kSortBelow) return draw_sorted(ws.cand, total, top_p, min_p, u);
    cand = ws.cand.data();
  } else {
    const float max = row.max();
    if (__builtin_expect(max == -kInf, 0)) return -1;
    ws.probs.resize(vocab);
    for (int64_t b = 0; b < row.blocks; ++b) {
      total += exp_scaled(row.block(b), ws.probs.data() + b * kSampleBlock, row.length(b), max, temperature);
    }
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

RowStatus sample_row(const SampleParams& p, int64_t r, Workspace& ws) {
  const int64_t vocab = p.vocab, blocks = (vocab + kSampleBlock - 1) / kSampleBlock;
  const float* raw = p.logits + r * vocab;
  ws.block_max.resize(blocks);
  ws.lane_max.resize(blocks * simd::kWidth);
  forget_edits(ws, blocks);
  const bool with_total = p.logprobs != nullptr || p.num_logprobs > 0;
  // With no log-probability to compute nothing reads the raw logits after the edits: given
  // them as scratch, bias and penalties edit them in place before the one read (which then
  // finds a NaN or +inf they made), rather than copies of the blocks they touch after it.
  const bool in_place = p.scratch_logits != nullptr && !with_total;
  if (in_place) {
    float* scratch = p.scratch_logits + r * vocab;
    edit_logits(p, r, [&](int64_t token) -> float& { return scratch[token]; }, [](int64_t, float) {});
  }
  const RowStats stats = scan_row(raw, vocab, with_total, ws.block_max.data(), ws.lane_max.data());
  if (stats.nan) return failed(SampleStatus::kNaN);
  if (stats.max == kInf) return failed(SampleStatus::kPosInf);
  if (stats.max == -kInf) {
    return failed(in_place && has_bias(p, r) ? SampleStatus::kAllBanned : SampleStatus::kAllNegInf);
  }

  const RowView raw_row{raw, vocab, blocks, ws.block_max.data(), ws.lane_max.data()};
  RowView row = raw_row;
  if (!in_place) {
    const RowStatus edited = edit_copies(p, r, ws, row);
    if (edited.code != SampleStatus::kOk) return edited;
  }
  int64_t token = -1;
  if (p.temperature[r] == 0.0f) {
    const float max = row.max();
    if (max != -kInf) token = argmax(row, max);
  } else {
    token = draw(p, r, row, ws);
  }
  if (token < 0) return failed(SampleStatus::kAllBanned);
  p.tokens[r] = token;
  if (p.logprobs != nullptr) p.logprobs[r] = static_cast<float>(raw[token] - stats.log_total);

  const int n = p.num_logprobs;
  if (n > 0) {
    top_k_select(raw_row, n, ws.scratch, ws.stream, ws.cand);
    in_sampling_order(ws.cand);
    for (int j = 0; j < n; ++j) {
      // Fewer than n finite logits: the rest are -inf tokens, lowest ids first.
      const bool have = j < static_cast<int>(ws.cand.size());
      p.top_ids[r * n + j] = have ? ws.cand[j].id : -1;
      p.top_logprobs[r * n + j] = have ? static_cast<float>(ws.cand[j].value - stats.log_total) : -kInf;
    }
    if (static_cast<int>(ws.cand.size()) < n) {
      int j = static_cast<int>(ws.cand.size());
      for (int64_t t = 0; t < vocab && j < n; ++t) {
        if (raw[t] == -kInf) p.top_ids[r * n + j++] = t;
      }
    }
  }
  return kSampled;
}

// A failed row's outputs: nothing in them could pass for a sampled token.
[[gnu::cold, gnu::noinline]] void clear_row(const SampleParams& p, int64_t r) {
  p.tokens[r] = -1;
  if (p.logprobs != nullptr) p.logprobs[r] = std::numeric_limits<float>::quiet_NaN();
  for (int j = 0; j < p.num_logprobs; ++j) {
    p.top_ids[r * p.num_logprobs + j] = -1;
    p.top_logprobs[r * p.num_logprobs + j] = std::numeric_limits<float>::quiet_NaN();
  }
}

}  // namespace

void sample_rows(const SampleParams& p, int64_t first, int64_t last) {
  Workspace& ws = workspace();
  for (int64_t r = first; r < last; ++r) {
    const RowStatus status = sample_row(p, r, ws);
    p.status[r] = status;
    if (status.code != SampleStatus::kOk) clear_row(p, r);
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
