// TokenCounts (aigc/sampling.h): a row's distinct history tokens and their counts.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "aigc/sampling.h"

namespace aigc {

TokenCounts::TokenCounts(const int64_t* history, int64_t n, int64_t prompt_len, int64_t vocab) {
  // Counted by token in a table that rows share (an entry is this row's only where its
  // stamp is, so no row clears it), then put in token order.
  thread_local std::vector<uint32_t> stamp_of;
  thread_local std::vector<int32_t> count_of;
  thread_local uint32_t stamp = 0;
  if (static_cast<int64_t>(stamp_of.size()) < vocab || ++stamp == 0) {
    stamp_of.assign(std::max<size_t>(stamp_of.size(), vocab), 0);
    count_of.resize(stamp_of.size());
    stamp = 1;
  }
  for (int64_t j = 0; j < n; ++j) {
    const auto token = static_cast<int32_t>(history[j]);
    if (stamp_of[token] != stamp) {
      stamp_of[token] = stamp;
      count_of[token] = 0;
      tokens_.push_back(token);
    }
    count_of[token] += j >= prompt_len ? 1 : 0;
  }
  std::sort(tokens_.begin(), tokens_.end());
  generated_.reserve(tokens_.size());
  for (const int32_t token : tokens_) generated_.push_back(count_of[token]);
}

void TokenCounts::add_generated(int32_t token) {
  // One search and at most one insertion a step: a few hundred ints moved at worst.
  const auto at = std::lower_bound(tokens_.begin(), tokens_.end(), token);
  const auto place = at - tokens_.begin();
  if (at != tokens_.end() && *at == token) {
    ++generated_[place];
  } else {
    tokens_.insert(at, token);
    generated_.insert(generated_.begin() + place, 1);
  }
}

}  // namespace aigc
