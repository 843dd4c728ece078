// The CPU entry points of the kernels: split the work over the thread pool, then call the
// version of the kernel built for the active ISA (aigc/isa.h). No math here.
#include <algorithm>
#include <atomic>
#include <vector>

#include "aigc/attention.h"
#include "aigc/isa.h"
#include "aigc/latent.h"
#include "aigc/lstm.h"
#include "aigc/norm.h"
#include "aigc/sampling.h"
#include "runtime/thread_pool.h"

namespace aigc {

void sample_latent_cpu(const LatentParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.n, [&](int64_t first, int64_t last) { sample_latent_rows(p, first, last, isa); });
}

int64_t images_to_uint8_cpu(const ToUint8Params& p) {
  const Isa isa = active_isa();
  std::atomic<int64_t> nonfinite{0};
  parallel_for(p.n, [&](int64_t first, int64_t last) {
    nonfinite += AIGC_ISA_CALL(isa, images_to_uint8, p, first, last);
  });
  return nonfinite;
}

void add_layer_norm(const LayerNormParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.rows, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, add_layer_norm_rows, p, first, last); },
               16384 / (p.dim > 0 ? p.dim : 1));
}

void gelu_tanh(float* x, int64_t n) {
  const Isa isa = active_isa();
  parallel_for(n, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, gelu_tanh_range, x, first, last); }, 16384);
}

void lstm_cell(const LstmCellParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.rows, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, lstm_cell_rows, p, first, last); },
               4096 / (p.hidden > 0 ? p.hidden : 1));
}

void sample_cpu(const SampleParams& p) {
  const Isa isa = active_isa();
  parallel_for(p.batch, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, sample_rows, p, first, last); });
}

void attention_prefill_cpu(const AttentionPrefillParams& p) {
  const Isa isa = active_isa();
  // Reused across calls: the decoder calls this once per layer per prompt.
  thread_local std::vector<int32_t> tile_seq, tile_start;
  tile_seq.clear();
  tile_start.clear();
  for (int64_t s = 0; s < p.n_seqs; ++s) {
    for (int32_t q0 = 0; q0 < p.cu_seqlens[s + 1] - p.cu_seqlens[s]; q0 += kAttentionTile) {
      tile_seq.push_back(static_cast<int32_t>(s));
      tile_start.push_back(q0);
    }
  }
  const int64_t n_tiles = static_cast<int64_t>(tile_seq.size());
  // Head-major items: a contiguous share of them is whole heads, every tile of each, so
  // the threads get equal causal work (tile-major would give one thread the long rows).
  // Pointers, not the thread_local names: inside the lambda those are the worker's own.
  const int32_t* seqs = tile_seq.data();
  const int32_t* starts = tile_start.data();
  parallel_for(n_tiles * p.n_heads, [&](int64_t first, int64_t last) {
    AIGC_ISA_CALL(isa, attention_prefill_items, p, seqs, starts, n_tiles, first, last);
  });
}

void attention_decode_cpu(const AttentionDecodeParams& params) {
  // The split below divides by the batch and the kv heads: nothing to do is done here.
  if (params.batch < 1 || params.n_kv_heads < 1) return;
  const Isa isa = active_isa();
  // Whole sequences (every kv head: the cache is read in address order) unless that leaves
  // fewer than 4 items per thread; then the kv heads split into ranges.
  AttentionDecodeParams p = params;
  const int64_t chunks = std::min<int64_t>(p.n_kv_heads, (4 * num_threads() + p.batch - 1) / p.batch);
  p.kv_heads_per_item = (p.n_kv_heads + chunks - 1) / chunks;
  const int64_t items = p.batch * ((p.n_kv_heads + p.kv_heads_per_item - 1) / p.kv_heads_per_item);
  parallel_for(items, [&](int64_t first, int64_t last) { AIGC_ISA_CALL(isa, attention_decode_items, p, first, last); });
}

}  // namespace aigc
