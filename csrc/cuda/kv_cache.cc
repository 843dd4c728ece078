// See kv_cache.h.
#include "cuda/kv_cache.h"

#include "aigc/checks.h"

namespace aigc::cuda {

CudaKvCache::CudaKvCache(int64_t n_layer, int64_t n_head, int64_t head_dim, int64_t block_size, int64_t num_blocks,
                         KvDtype dtype)
    : BlockPool("KV cache", block_size,
                (kv_cache_elements(n_layer, n_head, head_dim, block_size, num_blocks), num_blocks)),
      n_layer_(n_layer), n_head_(n_head), head_dim_(head_dim), dtype_(dtype) {
  const int64_t bytes = checked_mul(kv_cache_elements(n_layer, n_head, head_dim, block_size, num_blocks),
                                    element_bytes(), "KV cache bytes");
  check(cudaGetDevice(&device_), "cudaGetDevice");
  storage_ = DeviceBuffer<uint8_t>(bytes);
  check(cudaMemset(storage_.get(), 0, bytes), "cudaMemset (KV cache)");
}

}  // namespace aigc::cuda
