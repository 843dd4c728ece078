// Causal attention for the decoder, fp32 accumulation, K/V stored as fp32 or bf16 (the top
// 16 bits of a float32, uint16 in memory); grouped-query: head h reads kv head
// h / (n_heads / n_kv_heads).
// prefill: packed variable-length sequences, sequence s = tokens [cu_seqlens[s],
//   cu_seqlens[s + 1]); query i sees keys 0..i of its own sequence. Tiles of queries x keys
//   with an online softmax: the (seq x seq) score matrix never exists.
// decode: one new query per sequence against a paged cache: token t of sequence b lives in
//   block block_table[b][t / block_size], slot t % block_size; it sees context_lens[b] tokens.
#pragma once

#include <cstdint>

#include "aigc/isa.h"

namespace aigc {

struct AttentionPrefillParams {
  const float* q;        // (tokens, n_heads, head_dim), a token's row every q_row_stride floats
  const void* k;         // (tokens, n_kv_heads, head_dim) float32, or uint16 bf16 when kv_bf16,
  const void* v;         //   a token's row every kv_row_stride elements; v the same as k
  int64_t q_row_stride;  // >= n_heads * head_dim (packed): the decoder reads q, k and v
  int64_t kv_row_stride; //   where its qkv projection left them, side by side per token
  bool kv_bf16;
  const int32_t* cu_seqlens;  // (n_seqs + 1,) 0 .. tokens, non-decreasing
  int64_t n_seqs;
  int64_t tokens;
  int64_t n_heads;
  int64_t n_kv_heads;    // divides n_heads
  int64_t head_dim;
  float scale;           // applied to q . k
  float* out;            // (tokens, n_heads, head_dim), packed
};

struct AttentionDecodeParams {
  const float* q;        // (batch, n_heads, head_dim)
  const void* k_cache;   // (num_blocks, block_size, n_kv_heads, head_dim) float32 or bf16
  const void* v_cache;   // same as k_cache
  bool kv_bf16;
  const int32_t* block_table;   // (batch, max_blocks) ids in [0, num_blocks)
  const int32_t* context_lens;  // (batch,) 1 .. max_blocks * block_size
  int64_t batch;
  int64_t max_blocks;
  int64_t num_blocks;
  int64_t block_size;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  float scale;
  float* out;            // (batch, n_heads, head_dim)
  int64_t kv_heads_per_item;  // work split, set by attention_decode_cpu
};

// Query tiles of kAttentionTile rows: the unit of work the threads share.
constexpr int kAttentionTile = 64;

// Threaded over heads x query tiles, and batch x ranges of kv heads (cpu/dispatch.cc).
void attention_prefill_cpu(const AttentionPrefillParams& p);
void attention_decode_cpu(const AttentionDecodeParams& p);
// The CUDA kernels (cuda/attention.h) on host arrays, for the Python ops: the inputs copied
// to the device, the kernel run, the output copied back. timed_runs > 0 (the benchmarks):
// one untimed run, then that many timed by CUDA events, returning the seconds of one (the
// copies left out); 0: one run, returns 0. Defined in a CUDA build only (cuda/attention_*.cu).
double attention_prefill_cuda(const AttentionPrefillParams& p, int timed_runs = 0);
double attention_decode_cuda(const AttentionDecodeParams& p, int timed_runs = 0);

}  // namespace aigc

// Work item `i` of [first, last) is head i / n_tiles of tile i % n_tiles, tile t being the
// query rows [tile_start[t], tile_start[t] + kAttentionTile) of sequence tile_seq[t]
// (clipped to the sequence). One version per ISA (cpu/attention_prefill.cc).
AIGC_ISA_DECLARE(void, attention_prefill_items,
                 (const AttentionPrefillParams& p, const int32_t* tile_seq, const int32_t* tile_start,
                  int64_t n_tiles, int64_t first, int64_t last))
// Items [first, last) of batch x ceil(n_kv_heads / kv_heads_per_item): a sequence and a
// range of its kv heads. One version per ISA (cpu/attention_decode.cc).
AIGC_ISA_DECLARE(void, attention_decode_items, (const AttentionDecodeParams& p, int64_t first, int64_t last))
