// The KV cache of the CUDA decoder: runtime/kv_cache.h's paged layout and dtypes in device
// memory. Per layer, keys and values are each (num_blocks, block_size, n_head, head_dim)
// float32, or bf16 bits (uint16); the block lists (BlockPool) stay on the host, where the
// continuous batch allocates and releases them between steps.
#pragma once

#include <cstdint>

#include "cuda/device.h"
#include "runtime/kv_cache.h"

namespace aigc::cuda {

class CudaKvCache : public BlockPool {
 public:
  // On the current device, zero-filled; std::runtime_error when it does not fit.
  CudaKvCache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks,
              KvDtype dtype = KvDtype::kFloat32);

  int64_t n_layer() const { return n_layer_; }
  int64_t n_head() const { return n_head_; }
  int64_t head_dim() const { return head_dim_; }
  int device() const { return device_; }
  KvDtype dtype() const { return dtype_; }
  bool bf16() const { return dtype_ == KvDtype::kBFloat16; }
  int64_t block_elements() const { return block_size() * n_head_ * head_dim_; }
  int64_t element_bytes() const { return bf16() ? 2 : 4; }

  // One layer's keys (values) in device memory: float* or uint16_t* (bf16 bits) by dtype().
  void* keys(int64_t layer) { return element(2 * layer * num_blocks() * block_elements()); }
  void* values(int64_t layer) { return element((2 * layer + 1) * num_blocks() * block_elements()); }

 private:
  void* element(int64_t index) { return storage_.get() + index * element_bytes(); }

  int64_t n_layer_, n_head_, head_dim_;
  int device_ = 0;
  KvDtype dtype_;
  DeviceBuffer<uint8_t> storage_;
};

}  // namespace aigc::cuda
