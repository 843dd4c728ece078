// TokenCounts (aigc/sampling.h): a row's distinct history tokens and their counts.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "aigc/sampling.h"

namespace aigc {

TokenCounts::TokenCounts(const int64_t* history, int64_t n, int64_t prompt_len, int64_t vocab) {
  // The distinct tokens through a bitmap by token that rows share (6 KB at vocab 50257,
  // cleared behind each row from its own tokens), sorted, then the generated ones counted
  // by binary search (a table of counts by token, 400 KB at that vocab, costs a cache miss
  // a token).
  thread_local std::vector<uint64_t> seen;
  if (static_cast<int64_t>(seen.size()) * 64 < vocab) seen.assign((vocab + 63) / 64, 0);
  for (int64_t j = 0; j < n; ++j) {
    const auto token = static_cast<int32_t>(history[j]);
    const uint64_t bit = uint64_t{1} << (token & 63);
    if ((seen[token >> 6] & bit) == 0) {
      seen[token >> 6] |= bit;
      tokens_.push_back(token);
    }
  }
  for (const int32_t token : tokens_) seen[token >> 6] = 0;
  std::sort(tokens_.begin(), tokens_.end());
  generated_.assign(tokens_.size(), 0);
  for (int64_t j = std::max<int64_t>(prompt_len, 0); j < n; ++j) {
    ++generated_[std::lower_bound(tokens_.begin(), tokens_.end(), static_cast<int32_t>(history[j])) - tokens_.begin()];
  }
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
