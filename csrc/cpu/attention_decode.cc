// Paged attention decode (aigc/attention.h), compiled once per ISA with the wrappers of
// simd/vec.h. One query per sequence, q (batch, n_heads, d), against the cache
// (num_blocks, block_size, n_kv_heads, d), float32 or bf16. Per (sequence, range of kv heads):
// one pass over the sequence's blocks, scores then values with the online softmax per block,
// so the cache is read once, in order, while the next block is prefetched into L2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "aigc/attention.h"
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

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One vector of the cache as float32, from float32 or bf16 bits; the partial forms read
// only n < kW elements.
inline F load(const float* p) { return simd::load(p); }
inline F load(const uint16_t* p) { return simd::load_bf16(p); }
inline F load_partial(const float* p, int n) { return simd::load_partial(p, n, 0.0f); }
inline F load_partial(const uint16_t* p, int n) { return simd::load_bf16_partial(p, n); }

struct DecodeScratch {
  std::vector<float> q;     // (rows, dpad) scaled queries, zero-padded
  std::vector<float> acc;   // (rows, dpad)
  std::vector<float> s;     // (rows, block_size rounded to vectors) scores, then weights
  std::vector<float> m, l;  // (rows,)
};

inline void prefetch_l2(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 0, 2);
}

// acc[0 .. kVectors * kW) += sum_j s[j] * v[j * stride ..] over the n slots of a block.
template <int kVectors, typename T>
void value_pass(const T* v, int64_t stride, int64_t n, const float* s, float* acc) {
  F a[kVectors];
  for (int i = 0; i < kVectors; ++i) a[i] = simd::load(acc + i * kW);
  for (int64_t j = 0; j < n; ++j) {
    const F w = simd::set1(s[j]);
    for (int i = 0; i < kVectors; ++i) a[i] = simd::fmadd(w, load(v + j * stride + i * kW), a[i]);
  }
  for (int i = 0; i < kVectors; ++i) simd::store(acc + i * kW, a[i]);
}

// The same for the last `tail` (< kW) columns.
template <typename T>
void value_tail(const T* v, int64_t stride, int64_t n, const float* s, int tail, float* acc) {
  F a = simd::load(acc);
  for (int64_t j = 0; j < n; ++j) a = simd::fmadd(simd::set1(s[j]), load_partial(v + j * stride, tail), a);
  simd::store(acc, a);
}

template <typename T>
void values(const T* v, int64_t stride, int64_t n, const float* s, int64_t d, float* acc) {
  const int64_t full = d / kW;
  int64_t i = 0;
  for (; i + kValueVectors <= full; i += kValueVectors) value_pass<kValueVectors>(v + i * kW, stride, n, s, acc + i * kW);
  switch (full - i) {
    case 7: value_pass<7>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 6: value_pass<6>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 5: value_pass<5>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 4: value_pass<4>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 3: value_pass<3>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 2: value_pass<2>(v + i * kW, stride, n, s, acc + i * kW); break;
    case 1: value_pass<1>(v + i * kW, stride, n, s, acc + i * kW); break;
    default: break;
  }
  if (d % kW) value_tail(v + full * kW, stride, n, s, static_cast<int>(d % kW), acc + full * kW);
}

// q . k over d elements, q zero-padded to whole vectors.
template <typename T>
float dot(const T* k, const float* q, int64_t d) {
  const int64_t full = d / kW * kW;
  F acc = simd::set1(0.0f);
  for (int64_t c = 0; c < full; c += kW) acc = simd::fmadd(load(k + c), simd::load(q + c), acc);
  if (full < d) acc = simd::fmadd(load_partial(k + full, static_cast<int>(d - full)), simd::load(q + full), acc);
  return simd::reduce_add(acc);
}

float exp2_scalar(float x) {
  alignas(64) float lanes[kW];
  simd::store(lanes, simd::exp2_nonpositive(simd::set1(x)));
  return lanes[0];
}

// Sequence b, kv heads [h0, h1): block by block, slot by slot, every head of the range in
// turn, so the cache is read in address order (a block of 16 slots x 12 heads x 64 dims is
// 48 KiB in one piece; one kv head at a time read 256 B of every 3 KiB and ran at 2.6 GB/s).
// Slot 0 of a block from the first kv head of an item's range, in K and V, and its slot count.
template <typename T>
struct BlockStart {
  const T* k = nullptr;
  const T* v = nullptr;
  int64_t n = 0;
};

// The first block of item i's sequence, from its first kv head (block_table[b][0]).
template <typename T>
BlockStart<T> first_block(const AttentionDecodeParams& p, int64_t b, int64_t h0) {
  const int64_t row = p.block_table[b * p.max_blocks] * p.block_size * p.n_kv_heads * p.head_dim + h0 * p.head_dim;
  return {static_cast<const T*>(p.k_cache) + row, static_cast<const T*>(p.v_cache) + row,
          std::min<int64_t>(p.block_size, p.context_lens[b])};
}

template <typename T>
void decode_item(const AttentionDecodeParams& p, int64_t b, int64_t h0, int64_t h1, BlockStart<T> following,
                 DecodeScratch& ws) {
  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);
  const int64_t d = p.head_dim, dpad = round_up(d, kW), group = p.n_heads / p.n_kv_heads;
  const int64_t bs = p.block_size, bs_pad = round_up(bs, kW), kv_stride = p.n_kv_heads * d;
  const int64_t heads = h1 - h0, rows = heads * group;  // query heads h0 * group .. h1 * group
  ws.q.assign(rows * dpad, 0.0f);
  ws.acc.assign(rows * dpad, 0.0f);
  ws.s.resize(rows * bs_pad);
  ws.m.assign(rows, -kInf);
  ws.l.assign(rows, 0.0f);
  const float q_scale = p.scale * 1.44269504088896341f;  // log2(e): weights by exp2, as in prefill
  for (int64_t g = 0; g < rows; ++g) {
    const float* q = p.q + (b * p.n_heads + h0 * group + g) * d;
    for (int64_t c = 0; c < d; ++c) ws.q[g * dpad + c] = q[c] * q_scale;
  }
  // Slot `slot` of the cache, from kv head h0.
  auto row = [&](const T* cache, int64_t slot) { return cache + slot * kv_stride + h0 * d; };
  const int64_t length = p.context_lens[b];
  const int32_t* table = p.block_table + b * p.max_blocks;
  for (int64_t blk = 0; blk * bs < length; ++blk) {
    const int64_t first = table[blk] * bs;
    const int64_t n = std::min(bs, length - blk * bs);
    // The block after this one, or the first of the next item: prefetched slot by slot and
    // head by head among this block's dot products (one burst per slot of both K and V
    // rows, or V deferred to the value pass, kept the memory idle part of the time).
    BlockStart<T> next = following;
    if ((blk + 1) * bs < length) {
      next = {row(k_cache, table[blk + 1] * bs), row(v_cache, table[blk + 1] * bs), std::min(bs, length - (blk + 1) * bs)};
    }
    for (int64_t j = 0; j < n; ++j) {
      const T* k = row(k_cache, first + j);
      for (int64_t g = 0; g < rows; ++g) {
        if (j < next.n && g % group == 0) {
          prefetch_l2(next.k + j * kv_stride + g / group * d, d * sizeof(T));
          prefetch_l2(next.v + j * kv_stride + g / group * d, d * sizeof(T));
        }
        ws.s[g * bs_pad + j] = dot(k + g / group * d, ws.q.data() + g * dpad, d);
      }
    }
    for (int64_t g = 0; g < rows; ++g) {
      float* s = ws.s.data() + g * bs_pad;
      float max = -kInf;
      for (int64_t j = 0; j < n; ++j) max = std::max(max, s[j]);
      const float m_new = std::max(ws.m[g], max);
      const float alpha = exp2_scalar(ws.m[g] - m_new);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; j += kW) {
        const int lanes = static_cast<int>(std::min<int64_t>(kW, n - j));
        const F e = simd::exp2_nonpositive(simd::sub(simd::load_partial(s + j, lanes, -kInf), simd::set1(m_new)));
        simd::store(s + j, e);
        sum += simd::reduce_add(e);
      }
      ws.l[g] = ws.l[g] * alpha + sum;
      ws.m[g] = m_new;
      if (alpha != 1.0f) {
        float* acc = ws.acc.data() + g * dpad;
        for (int64_t c = 0; c < dpad; c += kW) simd::store(acc + c, simd::mul(simd::load(acc + c), simd::set1(alpha)));
      }
    }
    for (int64_t g = 0; g < rows; ++g) {
      values(row(v_cache, first) + g / group * d, kv_stride, n, ws.s.data() + g * bs_pad, d, ws.acc.data() + g * dpad);
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
