// Paged attention decode (aigc/attention.h), compiled once per ISA with the wrappers of
// simd/vec.h. One query per sequence, q (batch, n_heads, d), against the cache
// (num_blocks, block_size, n_kv_heads, d), float32 or bf16. Per (sequence, range of kv heads):
// one pass over the sequence's blocks, scores then values with the online softmax per block,
// so the cache is read once, in order, while the next block is prefetched into L2.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "aigc/attention.h"
#include "cpu/counts.h"
#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

using simd::F;
constexpr int kW = simd::kWidth;
constexpr float kInf = std::numeric_limits<float>::infinity();
// Value accumulators held in registers across a block's slots: AVX-512 keeps its measured
// 4; with 16 ymm, 8 (d = 64 in one pass) plus the weight still fit.
constexpr int kValueVectors = kW == 16 ? 4 : 8;

// One vector of the cache as float32, from float32 or bf16 bits; the partial forms read
// only n < kW elements.
inline F load(const float* p) { return simd::load(p); }
inline F load(const uint16_t* p) { return simd::load_bf16(p); }
inline F load_partial(const float* p, int n) { return simd::load_partial(p, n, 0.0f); }
inline F load_partial(const uint16_t* p, int n) { return simd::load_bf16_partial(p, n); }

struct DecodeScratch {
  std::vector<float> q;         // (rows, dpad) scaled queries, zero-padded
  std::vector<float> acc;       // (rows, dpad)
  std::vector<float> s;         // (block_size, rows_pad) scores, then weights, slot-major
  std::vector<float> m, l, alpha;  // (rows_pad,)
  std::vector<int64_t> k_offset;   // (rows,) where row g's kv head starts in a slot
};

inline void prefetch_l2(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 0, 2);
}

// The lines of the next block's K or V rows (`range` bytes of each slot), in address order,
// handed to the prefetcher a few at a time: K among this block's dot products, V among its
// value passes. Bursts (a slot's rows at once) stall on the miss buffers with no arithmetic
// to overlap, and issuing K and V in the dot products, once the batched reductions had made
// them short, left the memory idle during the value passes: 12-17% slower with 2 threads.
struct LineStream {
  const char* base = nullptr;
  int64_t slot_stride = 0, range = 0, slots = 0;  // bytes; slots: 0 for no next block
  int64_t slot = 0, offset = 0;                   // the next line
  int64_t step = 0;                               // lines per call of issue()

  // `calls` calls of issue() will cover every line.
  void plan(int64_t calls) { step = (slots * ((range + 63) / 64) + calls - 1) / calls; }
  void issue() {
    for (int64_t i = 0; i < step && slot < slots; ++i) {
      __builtin_prefetch(base + slot * slot_stride + offset, 0, 2);
      offset += 64;
      if (offset >= range) {
        offset = 0;
        ++slot;
      }
    }
  }
};

// Lane i = q[i] . k[k_offset[i]] over d elements for rows i < kRows of one slot (the other
// lanes 0), q zero-padded to whole vectors: kRows independent chains and one tree of
// horizontal adds (a reduce_add per dot was 6 of every 30 instructions).
template <int kRows, typename T>
F slot_scores(const T* k, const int64_t* k_offset, const float* q, int64_t dpad, int64_t d) {
  F acc[kW];
  for (F& a : acc) a = simd::set1(0.0f);
  const T* rows[kRows];
  for (int i = 0; i < kRows; ++i) rows[i] = k + k_offset[i];
  const int64_t full = d / kW * kW;
  for (int64_t c = 0; c < full; c += kW) {
    for (int i = 0; i < kRows; ++i) acc[i] = simd::fmadd(load(rows[i] + c), simd::load(q + i * dpad + c), acc[i]);
  }
  if (full < d) {
    const int tail = static_cast<int>(d - full);
    for (int i = 0; i < kRows; ++i) {
      acc[i] = simd::fmadd(load_partial(rows[i] + full, tail), simd::load(q + i * dpad + full), acc[i]);
    }
  }
  return simd::reduce_add_lanes(acc);
}

// acc[0 .. kVectors * kW) += sum_j w[j * w_stride] * v[j * stride ..] over the n slots of
// a block, the accumulators in registers across the slots.
template <int kVectors, typename T>
void value_pass(const T* v, int64_t stride, int64_t n, const float* w, int64_t w_stride, float* acc,
                LineStream& next) {
  F a[kVectors];
  for (int i = 0; i < kVectors; ++i) a[i] = simd::load(acc + i * kW);
  for (int64_t j = 0; j < n; ++j) {
    next.issue();
    const F weight = simd::set1(w[j * w_stride]);
    for (int i = 0; i < kVectors; ++i) a[i] = simd::fmadd(weight, load(v + j * stride + i * kW), a[i]);
  }
  for (int i = 0; i < kVectors; ++i) simd::store(acc + i * kW, a[i]);
}

// The same for the last `tail` (< kW) columns.
template <typename T>
void value_tail(const T* v, int64_t stride, int64_t n, const float* w, int64_t w_stride, int tail, float* acc,
                LineStream& next) {
  F a = simd::load(acc);
  for (int64_t j = 0; j < n; ++j) {
    next.issue();
    a = simd::fmadd(simd::set1(w[j * w_stride]), load_partial(v + j * stride, tail), a);
  }
  simd::store(acc, a);
}

// The passes of values() over a block, for LineStream::plan.
inline int64_t value_passes(int64_t d) { return (d / kW + kValueVectors - 1) / kValueVectors + (d % kW ? 1 : 0); }

template <typename T>
void values(const T* v, int64_t stride, int64_t n, const float* w, int64_t w_stride, int64_t d, float* acc,
            LineStream& next) {
  const int64_t full = d / kW;
  int64_t i = 0;
  for (; i + kValueVectors <= full; i += kValueVectors) {
    value_pass<kValueVectors>(v + i * kW, stride, n, w, w_stride, acc + i * kW, next);
  }
  with_count<kValueVectors - 1>(static_cast<int>(full - i), [&](auto vectors) {
    value_pass<decltype(vectors)::value>(v + i * kW, stride, n, w, w_stride, acc + i * kW, next);
  });
  if (d % kW) value_tail(v + full * kW, stride, n, w, w_stride, static_cast<int>(d % kW), acc + full * kW, next);
}

// Slot 0 of a block from the first kv head of an item's range, in K and V, and its slot count.
template <typename T>
struct BlockStart {
  const T* k = nullptr;
  const T* v = nullptr;
  int64_t n = 0;
};

// The first block of sequence b from kv head h0 (block_table[b][0]).
template <typename T>
BlockStart<T> first_block(const AttentionDecodeParams& p, int64_t b, int64_t h0) {
  const int64_t row = p.block_table[b * p.max_blocks] * p.block_size * p.n_kv_heads * p.head_dim + h0 * p.head_dim;
  return {static_cast<const T*>(p.k_cache) + row, static_cast<const T*>(p.v_cache) + row,
          std::min<int64_t>(p.block_size, p.context_lens[b])};
}

// Sequence b, kv heads [h0, h1): block by block, slot by slot, every head of the range in
// turn, so the cache is read in address order (a block of 16 slots x 12 heads x 64 dims is
// 48 KiB in one piece; one kv head at a time read 256 B of every 3 KiB and ran at 2.6 GB/s).
// `following` is the first block of the next item, prefetched during the last block.
template <typename T>
void decode_item(const AttentionDecodeParams& p, int64_t b, int64_t h0, int64_t h1, BlockStart<T> following,
                 DecodeScratch& ws) {
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);
  const int64_t d = p.head_dim, dpad = round_up(d, kW), group = p.n_heads / p.n_kv_heads;
  const int64_t bs = p.block_size, kv_stride = p.n_kv_heads * d;
  const int64_t rows = (h1 - h0) * group, rows_pad = round_up(rows, kW);  // query heads h0 * group ..
  const int64_t range_bytes = (h1 - h0) * d * static_cast<int64_t>(sizeof(T));
  ws.q.assign(rows * dpad, 0.0f);
  ws.acc.assign(rows * dpad, 0.0f);
  ws.s.resize(bs * rows_pad);
  ws.m.assign(rows_pad, -kInf);
  ws.l.assign(rows_pad, 0.0f);
  ws.alpha.resize(rows_pad);
  ws.k_offset.resize(rows);
  const float q_scale = p.scale * 1.44269504088896341f;  // log2(e): weights by exp2, as in prefill
  for (int64_t g = 0; g < rows; ++g) {
    const float* q = p.q + (b * p.n_heads + h0 * group + g) * d;
    for (int64_t c = 0; c < d; ++c) ws.q[g * dpad + c] = q[c] * q_scale;
    ws.k_offset[g] = g / group * d;
  }
  // Slot `slot` of the cache, from kv head h0.
  auto row = [&](const T* cache, int64_t slot) { return cache + slot * kv_stride + h0 * d; };
  const int64_t length = p.context_lens[b];
  const int32_t* table = p.block_table + b * p.max_blocks;
  const int64_t row_blocks = rows_pad / kW;
  for (int64_t blk = 0; blk * bs < length; ++blk) {
    const int64_t first = table[blk] * bs;
    const int64_t n = std::min(bs, length - blk * bs);
    // The block after this one, or the first of the next item.
    BlockStart<T> next = following;
    if ((blk + 1) * bs < length) {
      const int64_t slot = table[blk + 1] * bs;
      next = {row(k_cache, slot), row(v_cache, slot), std::min(bs, length - (blk + 1) * bs)};
    }
    const int64_t slot_bytes = kv_stride * static_cast<int64_t>(sizeof(T));
    LineStream next_k{reinterpret_cast<const char*>(next.k), slot_bytes, range_bytes, next.n};
    LineStream next_v{reinterpret_cast<const char*>(next.v), slot_bytes, range_bytes, next.n};
    next_k.plan(n * row_blocks);
    next_v.plan(rows * value_passes(d) * n);
    for (int64_t j = 0; j < n; ++j) {
      const T* k = row(k_cache, first + j);
      for (int64_t rb = 0; rb < row_blocks; ++rb) {
        next_k.issue();
        const int64_t g0 = rb * kW;
        float* s = ws.s.data() + j * rows_pad + g0;
        with_count<kW>(static_cast<int>(std::min<int64_t>(kW, rows - g0)), [&](auto count) {
          constexpr int kRows = decltype(count)::value;
          simd::store(s, slot_scores<kRows>(k, ws.k_offset.data() + g0, ws.q.data() + g0 * dpad, dpad, d));
        });
      }
    }
    // Online softmax, kW rows at a time (the scores are slot-major).
    for (int64_t g0 = 0; g0 < rows_pad; g0 += kW) {
      F max = simd::set1(-kInf);
      for (int64_t j = 0; j < n; ++j) max = simd::max(max, simd::load(ws.s.data() + j * rows_pad + g0));
      const F m_old = simd::load(ws.m.data() + g0);
      const F m_new = simd::max(m_old, max);
      const F alpha = simd::exp2_nonpositive(simd::sub(m_old, m_new));
      F sum = simd::set1(0.0f);
      for (int64_t j = 0; j < n; ++j) {
        float* s = ws.s.data() + j * rows_pad + g0;
        const F e = simd::exp2_nonpositive(simd::sub(simd::load(s), m_new));
        simd::store(s, e);
        sum = simd::add(sum, e);
      }
      simd::store(ws.l.data() + g0, simd::fmadd(simd::load(ws.l.data() + g0), alpha, sum));
      simd::store(ws.m.data() + g0, m_new);
      simd::store(ws.alpha.data() + g0, alpha);
    }
    for (int64_t g = 0; g < rows; ++g) {
      float* acc = ws.acc.data() + g * dpad;
      if (ws.alpha[g] != 1.0f) {
        const F alpha = simd::set1(ws.alpha[g]);
        for (int64_t c = 0; c < dpad; c += kW) simd::store(acc + c, simd::mul(simd::load(acc + c), alpha));
      }
      values(row(v_cache, first) + ws.k_offset[g], kv_stride, n, ws.s.data() + g, rows_pad, d, acc, next_v);
    }
  }
  for (int64_t g = 0; g < rows; ++g) {
    float* out = p.out + (b * p.n_heads + h0 * group + g) * d;
    const float inv = 1.0f / ws.l[g];
    for (int64_t c = 0; c < d; ++c) out[c] = ws.acc[g * dpad + c] * inv;
  }
}

}  // namespace

void attention_decode_items(const AttentionDecodeParams& p, int64_t first, int64_t last) {
  thread_local DecodeScratch ws;
  const int64_t chunks = (p.n_kv_heads + p.kv_heads_per_item - 1) / p.kv_heads_per_item;
  if (first >= last) return;
  auto run = [&](auto element) {
    using T = decltype(element);
    const int64_t range_bytes = p.kv_heads_per_item * p.head_dim * static_cast<int64_t>(sizeof(T));
    // The first block of the first item: nothing ran before it to prefetch it.
    const BlockStart<T> start = first_block<T>(p, first / chunks, first % chunks * p.kv_heads_per_item);
    for (int64_t j = 0; j < start.n; ++j) {
      prefetch_l2(start.k + j * p.n_kv_heads * p.head_dim, range_bytes);
      prefetch_l2(start.v + j * p.n_kv_heads * p.head_dim, range_bytes);
    }
    for (int64_t i = first; i < last; ++i) {
      const int64_t h0 = i % chunks * p.kv_heads_per_item, h1 = std::min(p.n_kv_heads, h0 + p.kv_heads_per_item);
      BlockStart<T> following;
      if (i + 1 < last) following = first_block<T>(p, (i + 1) / chunks, (i + 1) % chunks * p.kv_heads_per_item);
      decode_item<T>(p, i / chunks, h0, h1, following, ws);
    }
  };
  if (p.kv_bf16) {
    run(uint16_t{});
  } else {
    run(float{});
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
