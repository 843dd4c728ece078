// The KV cache of the native decoder: one pool of fixed-size blocks, allocated once for a
// memory budget. A sequence owns a list of blocks (its block table); token t of it lives
// in block table[t / block_size], slot t % block_size. Per layer, keys and values are
// each (num_blocks, block_size, n_head, head_dim) float32, or bf16 bits (uint16) when the
// cache is made with KvDtype::kBFloat16 — the paged layout the attention kernels read.
// allocate/release (runtime/block_pool.h) run between steps, never inside one.
#pragma once

#include <cstdint>
#include <vector>

#include "aigc/linear.h"
#include "runtime/block_pool.h"

namespace aigc {

// bf16: half the bytes per token, so twice the blocks for a budget and half the bytes the
// decode attention streams; keys and values rounded to nearest even (float_to_bf16).
enum class KvDtype { kFloat32, kBFloat16 };

// The element count of a cache of these sizes (keys and values, every layer), or
// std::invalid_argument: a size < 1, more blocks than int32 ids, a count that wraps.
// Shared with the device cache (cuda/kv_cache.h).
int64_t kv_cache_elements(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks);

class KvCache : public BlockPool {
 public:
  KvCache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks,
          KvDtype dtype = KvDtype::kFloat32);

  int64_t n_layer() const { return n_layer_; }
  int64_t n_head() const { return n_head_; }
  int64_t head_dim() const { return head_dim_; }
  KvDtype dtype() const { return dtype_; }
  bool bf16() const { return dtype_ == KvDtype::kBFloat16; }
  // Elements in one block of one layer's keys (or values).
  int64_t block_elements() const { return block_size() * n_head_ * head_dim_; }
  int64_t element_bytes() const { return bf16() ? 2 : 4; }

  // One layer's keys (values): float* or uint16_t* (bf16 bits) by dtype().
  void* keys(int64_t layer) { return element(2 * layer * num_blocks() * block_elements()); }
  void* values(int64_t layer) { return element((2 * layer + 1) * num_blocks() * block_elements()); }

 private:
  void* element(int64_t index) {
    return bf16() ? static_cast<void*>(storage_bf16_.data() + index) : static_cast<void*>(storage_.data() + index);
  }

  int64_t n_layer_, n_head_, head_dim_;
  KvDtype dtype_;
  CacheLineVector<float> storage_;          // float32 caches, on cache lines like every step buffer
  CacheLineVector<uint16_t> storage_bf16_;  // bf16 caches
};

}  // namespace aigc
