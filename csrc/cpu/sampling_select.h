// The sampler's selection over one row (cpu/sampling.cc): the row seen as blocks of
// kSampleBlock logits with their maxima (RowView), the streaming top-k that skips every
// block whose maximum is under its threshold, and the mass search that finds where a
// cumulative probability is reached without sorting. Included at file scope by the
// per-ISA sampler: everything sits in the ISA namespace, so no build's inline copy can
// replace another's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
// Logits per block: the unit of the row's maxima and of the copies that bias and
// penalties edit (128 floats = 512 bytes, a whole number of vectors on every ISA).
constexpr int64_t kSampleBlock = 128;
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

// How many of values[0, padded) reach x (padded: a multiple of kWidth).
inline int64_t count_reaching(const float* values, int64_t padded, float x) {
  const simd::F t = simd::set1(x);
  int64_t count = 0;
  for (int64_t i = 0; i < padded; i += simd::kWidth) {
    count += __builtin_popcount(simd::mask_ge(simd::load(values + i), t));
  }
  return count;
}

// A value that at least k of values[0, padded) reach, near the k-th largest: 12 halvings
// between the smallest and the largest finite value, each a vector count (no branch on
// single values; nth_element mispredicted its way to 4 µs a row on 393 block maxima).
// -inf when fewer than k values are finite (-inf pads and marks empty parts).
inline float reached_by_k(const float* values, int64_t padded, int64_t k) {
  const simd::F inf = simd::set1(kInf), minus_inf = simd::set1(-kInf);
  simd::F lo_lanes = inf, hi_lanes = minus_inf;  // the smallest finite value, the largest
  for (int64_t i = 0; i < padded; i += simd::kWidth) {
    const simd::F v = simd::load(values + i);
    lo_lanes = simd::min(lo_lanes, simd::select_eq(v, minus_inf, inf, v));
    hi_lanes = simd::max(hi_lanes, v);
  }
  float lo = -simd::reduce_max(simd::sub(simd::set1(0.0f), lo_lanes));  // the lanes' minimum
  float hi = simd::reduce_max(hi_lanes);
  if (hi == -kInf || count_reaching(values, padded, lo) < k) return -kInf;
  for (int i = 0; i < 12; ++i) {  // lo is reached by at least k throughout
    const float mid = lo + (hi - lo) / 2;
    (count_reaching(values, padded, mid) >= k ? lo : hi) = mid;
  }
  return lo;
}

// Sorts n <= kRankBelow candidates into the sampling order and keeps the first `keep`
// (<= n), without comparisons that branch on the values: a candidate's place is a vector
// count of the values at or above its own (std::sort and nth_element mispredicted their
// way to ~1.5 µs a row over the ~100 candidates of real text's logits). Equal values share
// a count, so a place below `keep` stays empty: then std::sort decides the ties.
constexpr int64_t kRankBelow = 256;
inline void rank_sort(Candidate* cand, int64_t n, int64_t keep) {
  alignas(64) float values[kRankBelow + simd::kWidth];
  auto pack = [&] {  // the values, padded below every candidate (never -inf)
    for (int64_t i = 0; i < n; ++i) values[i] = cand[i].value;
    const int64_t padded = (n + simd::kWidth - 1) / simd::kWidth * simd::kWidth;
    std::fill(values + n, values + padded, -kInf);
    return padded;
  };
  int64_t padded = pack();
  if (keep < n) {
    // The ranking costs n^2: first drop, without a branch, those under a value that `keep`
    // of them reach (at vocab 4096 the stream leaves ~70-130 for top_k 50).
    const float bound = reached_by_k(values, padded, keep);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      cand[kept] = cand[i];
      kept += cand[i].value >= bound ? 1 : 0;
    }
    n = kept;
    padded = pack();
  }
  Candidate sorted[kRankBelow];
  bool taken[kRankBelow] = {};
  int64_t filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    const simd::F x = simd::set1(values[i]);
    int64_t place = -1;
    for (int64_t j = 0; j < padded; j += simd::kWidth) {
      place += __builtin_popcount(simd::mask_ge(simd::load(values + j), x));
    }
    if (place < keep) {
      filled += taken[place] ? 0 : 1;
      taken[place] = true;
      sorted[place] = cand[i];
    }
  }
  if (filled == keep) {
    std::copy_n(sorted, keep, cand);
  } else {
    std::sort(cand, cand + n, ahead);
  }
}

// At most kRankBelow candidates put in the sampling order, if they are not in it already
// (top_k_select leaves them sorted but for the rare long stream).
inline void in_sampling_order(std::vector<Candidate>& cand) {
  if (!std::is_sorted(cand.begin(), cand.end(), ahead)) {
    rank_sort(cand.data(), static_cast<int64_t>(cand.size()), static_cast<int64_t>(cand.size()));
  }
}

// A row of n logits as blocks of kSampleBlock: the raw logits, except the blocks that
// bias or penalties touched, which live in edited copies (a touched token costs a copy
// of its block, not of the row). Every block comes with its maximum and its kWidth lane
// maxima: lane j's is the maximum of the block's tokens j, j + kWidth, j + 2 kWidth, ...
// (the tokens of a partial last vector belong to no lane), so a row has kWidth times more
// disjoint parts with a known maximum than it has blocks, at no extra read.
struct RowView {
  const float* raw;
  int64_t n;
  int64_t blocks;
  const float* raw_max;              // (blocks) the raw blocks' maxima
  const float* raw_lanes;            // (blocks, kWidth) their lane maxima
  const int32_t* slot = nullptr;     // (blocks) -1, or the block's index among the copies; null: none
  const float* copies = nullptr;     // kSampleBlock floats per copy
  const float* copy_max = nullptr;   // their maxima
  const float* copy_lanes = nullptr;  // their lane maxima

  bool edited(int64_t b) const { return slot != nullptr && slot[b] >= 0; }
  const float* block(int64_t b) const { return edited(b) ? copies + slot[b] * kSampleBlock : raw + b * kSampleBlock; }
  float max_of(int64_t b) const { return edited(b) ? copy_max[slot[b]] : raw_max[b]; }
  const float* lanes_of(int64_t b) const {
    return edited(b) ? copy_lanes + slot[b] * simd::kWidth : raw_lanes + b * simd::kWidth;
  }
  int64_t length(int64_t b) const { return std::min(kSampleBlock, n - b * kSampleBlock); }
  float max() const {
    float m = -kInf;
    for (int64_t b = 0; b < blocks; ++b) m = std::max(m, max_of(b));
    return m;
  }
};

// The maximum of block x[0, n), n >= 1, NaN-free; its lane maxima (see RowView) into lanes.
inline float block_max(const float* x, int64_t n, float* lanes) {
  simd::F m = simd::set1(-kInf);
  int64_t i = 0;
  for (; i + simd::kWidth <= n; i += simd::kWidth) m = simd::max(m, simd::load(x + i));
  simd::store(lanes, m);
  float result = simd::reduce_max(m);
  for (; i < n; ++i) result = std::max(result, x[i]);
  return result;
}

// The first index of `max` in x[0, n) (greedy: ties to the lowest id).
inline int64_t first_index_of(const float* x, int64_t n, float max) {
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

// The first token of the row's maximum `max` (greedy).
inline int64_t argmax(const RowView& row, float max) {
  int64_t b = 0;
  while (b + 1 < row.blocks && row.max_of(b) != max) ++b;
  return b * kSampleBlock + first_index_of(row.block(b), row.length(b), max);
}

// A value <= the k-th largest logit of the row, from k disjoint parts of it: one that at
// least k part maxima reach, which are k distinct tokens. The parts are the blocks when
// there are k of them, else (a small vocab: 32 blocks at 4096) their lanes, which bound
// the k-th logit far tighter than k segments would (on a row of pycode-gpt's logits, 82
// tokens pass for k 50 instead of 311), without another read. The value: reached_by_k of
// the part maxima; -inf when fewer than k parts have a finite maximum.
inline float kth_lower_bound(const RowView& row, int64_t k, std::vector<float>& maxima) {
  const bool by_block = row.blocks >= k;
  const int64_t parts = by_block ? (row.blocks + simd::kWidth - 1) / simd::kWidth * simd::kWidth
                                 : row.blocks * simd::kWidth;
  if (parts < k) return -kInf;
  maxima.assign(parts, -kInf);
  for (int64_t b = 0; b < row.blocks; ++b) {
    if (by_block) {
      maxima[b] = row.max_of(b);
    } else {
      std::copy_n(row.lanes_of(b), simd::kWidth, maxima.data() + b * simd::kWidth);
    }
  }
  return reached_by_k(maxima.data(), parts, k);
}

// The k first tokens of the row in the sampling order into out (fewer when fewer than k
// are > -inf), sorted when the stream left at most kRankBelow, else unordered; `buffer`
// holds the stream. Streaming: a token enters the buffer only at or above the current
// threshold, first kth_lower_bound (for random logits about 50 of 393 blocks at vocab
// 50257 reach it: the others are skipped unread), then the k-th best value so far; when
// the buffer fills, nth_element cuts it back to k and raises the threshold. Later tokens
// have higher ids, so from then on one equal to the threshold loses the tie: the test
// becomes strict.
inline void top_k_select(const RowView& row, int64_t k, std::vector<float>& scratch,
                         std::vector<Candidate>& buffer, std::vector<Candidate>& out) {
  const int64_t capacity = std::max<int64_t>(2 * k, k + 512);
  // The buffer only grows: resizing it every row would zero it every row.
  if (static_cast<int64_t>(buffer.size()) < capacity) buffer.resize(capacity);
  int64_t count = 0;
  float threshold = kth_lower_bound(row, k, scratch);
  bool strict = threshold == -kInf;  // -inf tokens are never candidates
  auto passes = [&](float x) { return x > threshold || (!strict && x == threshold); };
  auto offer = [&](float x, int64_t id) {
    if (!passes(x)) return;
    buffer[count++] = {x, static_cast<int32_t>(id)};
    if (count == capacity) {
      std::nth_element(buffer.begin(), buffer.begin() + (k - 1), buffer.begin() + count, ahead);
      count = k;
      threshold = buffer[k - 1].value;
      strict = true;
    }
  };
  for (int64_t b = 0; b < row.blocks; ++b) {
    if (!passes(row.max_of(b))) continue;
    const float* x = row.block(b);
    const int64_t n = row.length(b), first = b * kSampleBlock;
    int64_t i = 0;
    for (; i + simd::kWidth <= n; i += simd::kWidth) {
      const simd::F v = simd::load(x + i), t = simd::set1(threshold);
      unsigned hit = strict ? simd::mask_gt(v, t) : simd::mask_ge(v, t);
      while (hit) {
        const int lane = __builtin_ctz(hit);
        offer(x[i + lane], first + i + lane);
        hit &= hit - 1;
      }
    }
    for (; i < n; ++i) offer(x[i], first + i);
  }
  if (count <= kRankBelow) {
    rank_sort(buffer.data(), count, std::min(count, k));
  } else if (count > k) {
    std::nth_element(buffer.begin(), buffer.begin() + (k - 1), buffer.begin() + count, ahead);
  }
  out.assign(buffer.begin(), buffer.begin() + std::min(count, k));
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

}  // namespace
}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
