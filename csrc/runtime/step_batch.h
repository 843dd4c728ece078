// What the native models (runtime/gpt.h, runtime/lstm.h) are fed: one packed step of the
// continuous batch, and their weights by name from the ONNX file's initializers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/block_pool.h"

namespace aigc {

// One step. Sequences that decode (one token, not a prompt) come first, then whole
// prompts, each sequence's tokens contiguous.
struct StepBatch {
  const int64_t* tokens;        // (num_tokens,)
  const int64_t* positions;     // (num_tokens,) position of each token in its sequence
  int64_t num_tokens;
  const int32_t* cu_seqlens;    // (num_seqs + 1,) token offsets of the sequences
  const int32_t* context_lens;  // (num_seqs,) tokens the sequence holds after this step, 1 .. context
  const uint8_t* is_prompt;     // (num_seqs,) 1: the tokens are a whole prompt (positions 0..)
  const int32_t* block_table;   // (num_seqs, max_blocks) blocks the pool allocated, for every
                                //   block the sequence's context reaches
  int64_t num_seqs, max_blocks;
};

// Checks every field against the model's vocabulary and context and the pool's blocks
// before a model reads one; std::invalid_argument naming the field ("step: ...").
void check_step(const StepBatch& batch, const BlockPool& pool, int64_t vocab_size, int64_t context);

// Looks a float32 weight up by name; throws if it is absent or not of `shape`.
using WeightLookup = std::function<const float*(const std::string& name, const std::vector<int64_t>& shape)>;

}  // namespace aigc
