// A pool of fixed-size blocks that sequences own while they run: the KV cache's blocks of
// block_size tokens (runtime/kv_cache.h), or the LSTM's state slots, one block of the
// whole context per sequence (runtime/lstm.h). The continuous batch (runtime/generation.h)
// allocates and releases them between steps, never inside one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aigc {

class BlockPool {
 public:
  // `what` names the pool in errors ("KV cache", "LSTM state").
  BlockPool(const char* what, int64_t block_size, int64_t num_blocks);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // `count` free blocks (lowest ids first), or std::runtime_error when fewer are free
  // (std::invalid_argument for a negative count).
  std::vector<int32_t> allocate(int64_t count);
  // Blocks back to the pool; a block that is not in use is an error (a double free).
  void release(const std::vector<int32_t>& blocks);
  void check_owned(int32_t block) const;

 private:
  const char* what_;
  int64_t block_size_, num_blocks_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<uint8_t> in_use_;
};

}  // namespace aigc
