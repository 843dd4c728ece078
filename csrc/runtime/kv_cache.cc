// See kv_cache.h.
#include "runtime/kv_cache.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "aigc/checks.h"

namespace aigc {

KvCache::KvCache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks,
                 KvDtype dtype)
    : n_layer_(n_layer), n_head_(n_head), head_dim_(head_dim), block_size_(block_size), num_blocks_(num_blocks),
      dtype_(dtype) {
  if (n_layer < 1 || n_head < 1 || head_dim < 1 || block_size < 1 || num_blocks < 1) {
    throw std::invalid_argument("KV cache: every size must be >= 1 (is kv_cache_mb too small for one block?)");
  }
  // Block ids are int32 (block tables, allocate); the element count must not wrap (it did:
  // KvCache(2**20, ...) came out as 0 floats, then every write went past them).
  if (num_blocks > INT32_MAX) {
    throw std::invalid_argument("KV cache: num_blocks must be <= 2**31 - 1 (block ids are int32), got " +
                                std::to_string(num_blocks));
  }
  const int64_t elements = checked_product({2, n_layer, num_blocks, block_size, n_head, head_dim}, "KV cache size");
  if (bf16()) {
    storage_bf16_.assign(static_cast<size_t>(elements), 0);
  } else {
    storage_.assign(static_cast<size_t>(elements), 0.0f);
  }
  in_use_.assign(num_blocks, 0);
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::vector<int32_t> KvCache::allocate(int64_t count) {
  if (count < 0) throw std::invalid_argument("count: expected >= 0, got " + std::to_string(count));
  if (count > free_blocks()) {
    throw std::runtime_error("KV cache: " + std::to_string(count) + " blocks wanted, " +
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

void KvCache::check_owned(int32_t block) const {
  if (block < 0 || block >= num_blocks_ || !in_use_[block]) {
    throw std::invalid_argument("KV cache: block " + std::to_string(block) + " is not an allocated block");
  }
}

void KvCache::release(const std::vector<int32_t>& blocks) {
  for (int32_t block : blocks) {
    check_owned(block);
    in_use_[block] = 0;
    free_.push_back(block);
  }
}

}  // namespace aigc
