// See step_batch.h.
#include "runtime/step_batch.h"

#include <stdexcept>
#include <string>

#include "aigc/checks.h"

namespace aigc {

void check_step(const StepBatch& b, const BlockPool& pool, int64_t vocab_size, int64_t context_limit) {
  auto fail = [](const std::string& message) { throw std::invalid_argument("step: " + message); };
  if (b.num_seqs < 1 || b.num_tokens < 1) fail("no tokens");
  // Whole before any sequence is read: a later decrease would let an earlier sequence run
  // past the tokens.
  check_offsets(b.cu_seqlens, b.num_seqs, b.num_tokens, "cu_seqlens", "sequence", "num_tokens");
  bool prompts_started = false;
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    const int64_t begin = b.cu_seqlens[s], end = b.cu_seqlens[s + 1], length = end - begin;
    const int64_t context = b.context_lens[s];
    if (length < 1) fail("sequence " + std::to_string(s) + " has no new token");
    // Context 0 put a decoding token at position -1, before its first block; a negative
    // one skipped the block checks.
    if (context < length) {
      fail("context_lens: sequence " + std::to_string(s) + " is " + std::to_string(context) + ", expected >= " +
           std::to_string(length) + " (its new tokens)");
    }
    if (b.is_prompt[s]) {
      prompts_started = true;
      if (context != length) fail("prompt " + std::to_string(s) + " must fill its context exactly");
    } else if (prompts_started || length != 1) {
      fail("decoding sequences (one token each) must come before the prompts");
    }
    if (context > context_limit) {
      fail("sequence " + std::to_string(s) + " has " + std::to_string(context) + " tokens, over the context of " +
           std::to_string(context_limit));
    }
    const int64_t blocks = pool.blocks_for(context);
    if (blocks > b.max_blocks) fail("sequence " + std::to_string(s) + " needs more blocks than its table holds");
    for (int64_t j = 0; j < blocks; ++j) pool.check_owned(b.block_table[s * b.max_blocks + j]);
    for (int64_t t = begin; t < end; ++t) {
      if (b.positions[t] != context - length + (t - begin)) {
        fail("positions must be consecutive, ending at context - 1");
      }
      if (b.tokens[t] < 0 || b.tokens[t] >= vocab_size) {
        fail("token " + std::to_string(b.tokens[t]) + " is outside the vocabulary");
      }
    }
  }
}

}  // namespace aigc
