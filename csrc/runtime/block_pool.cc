// See block_pool.h.
#include "runtime/block_pool.h"

#include <stdexcept>
#include <string>

namespace aigc {

BlockPool::BlockPool(const char* what, int64_t block_size, int64_t num_blocks)
    : what_(what), block_size_(block_size), num_blocks_(num_blocks) {
  if (block_size < 1 || num_blocks < 1) {
    throw std::invalid_argument(std::string(what) + ": block_size and num_blocks must be >= 1");
  }
  // Block ids are int32 (block tables, allocate).
  if (num_blocks > INT32_MAX) {
    throw std::invalid_argument(std::string(what) + ": num_blocks must be <= 2**31 - 1 (block ids are int32), got " +
                                std::to_string(num_blocks));
  }
  in_use_.assign(num_blocks, 0);
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::vector<int32_t> BlockPool::allocate(int64_t count) {
  if (count < 0) throw std::invalid_argument("count: expected >= 0, got " + std::to_string(count));
  if (count > free_blocks()) {
    throw std::runtime_error(std::string(what_) + ": " + std::to_string(count) + " blocks wanted, " +
                             std::to_string(free_blocks()) + " free");
  }
  std::vector<int32_t> blocks(count);
  for (int64_t i = 0; i < count; ++i) {
    blocks[i] = free_.back();
    free_.pop_back();
    in_use_[blocks[i]] = 1;
  }
  return blocks;
}

void BlockPool::check_owned(int32_t block) const {
  if (block < 0 || block >= num_blocks_ || !in_use_[block]) {
    throw std::invalid_argument(std::string(what_) + ": block " + std::to_string(block) + " is not an allocated block");
  }
}

void BlockPool::release(const std::vector<int32_t>& blocks) {
  for (int32_t block : blocks) {
    check_owned(block);
    in_use_[block] = 0;
    free_.push_back(block);
  }
}

}  // namespace aigc
