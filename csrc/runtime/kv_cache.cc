// See kv_cache.h.
#include "runtime/kv_cache.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "aigc/checks.h"

namespace aigc {

// Checked before the pool (the base) allocates its block lists: every size >= 1, and a
// count that does not wrap (it did: KvCache(2**20, ...) came out as 0 floats, then every
// write went past them).
int64_t kv_cache_elements(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size,
                          int64_t num_blocks) {
  if (n_layer < 1 || n_head < 1 || head_dim < 1 || block_size < 1 || num_blocks < 1) {
    throw std::invalid_argument("KV cache: every size must be >= 1 (is kv_cache_mb too small for one block?)");
  }
  if (num_blocks > INT32_MAX) {
    throw std::invalid_argument("KV cache: num_blocks must be <= 2**31 - 1 (block ids are int32), got " +
                                std::to_string(num_blocks));
  }
  return checked_product({2, n_layer, num_blocks, block_size, n_head, head_dim}, "KV cache size");
}

KvCache::KvCache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks,
                 KvDtype dtype)
    : BlockPool("KV cache", block_size,
                (kv_cache_elements(n_layer, n_head, head_dim, block_size, num_blocks), num_blocks)),
      n_layer_(n_layer), n_head_(n_head), head_dim_(head_dim), dtype_(dtype) {
  const int64_t elements = kv_cache_elements(n_layer, n_head, head_dim, block_size, num_blocks);
  if (bf16()) {
    storage_bf16_.assign(static_cast<size_t>(elements), 0);
  } else {
    storage_.assign(static_cast<size_t>(elements), 0.0f);
  }
}

}  // namespace aigc
