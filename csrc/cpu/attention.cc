// Causal attention (aigc/attention.h), compiled once per ISA with the wrappers of simd/vec.h.
// prefill, per (head, tile of 64 queries): queries scaled and transposed once, qt (d, 64);
// for each tile of 64 keys up to the diagonal, scores s (64 keys, 64 queries) = K qt, a
// broadcast of one key element times a vector of 16 queries (4 x 4 vectors in registers),
// then the online softmax, vectorised across queries, and o (64, d) += p^T V (4 x 4
// vectors). Key-major scores make the per-query max and sum plain vector ops.
// decode, per (sequence, range of kv heads): one pass over the sequence's blocks, scores
// then values, with the online softmax per block: the cache is read once, in order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "aigc/attention.h"
#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

using simd::F;
constexpr int kW = simd::kWidth;
constexpr int kQ = kAttentionTile;  // queries per tile
constexpr int kK = 64;              // keys per tile: 4 KiB of (64 x 64) scores stay in L1
constexpr int kRowVectors = kQ / kW;
constexpr float kInf = std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Element `index` onwards of a K or V array, d values as float32 into dst.
inline void load_row(const void* base, bool bf16, int64_t index, int64_t d, float* dst) {
  if (!bf16) {
    std::memcpy(dst, static_cast<const float*>(base) + index, d * sizeof(float));
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(base) + index;
  int64_t c = 0;
  for (; c + kW <= d; c += kW) simd::store(dst + c, simd::load_bf16(src + c));
  if (c < d) {
    alignas(64) float tail[kW];
    simd::store(tail, simd::load_bf16_partial(src + c, static_cast<int>(d - c)));
    std::memcpy(dst + c, tail, (d - c) * sizeof(float));
  }
}

// K and V of one (sequence, kv head) are staged once, as float32 rows of dpad, for every
// query tile of the head: in place, rows 12 heads x 64 dims apart (3 KiB) fall into 16 of
// the 64 L1 sets and the 64-key tile (256 lines) thrashed them; staging per tile pair
// cost 10% in memcpy. A 2048-token head is 1 MiB of the 2 MiB L2.
struct PrefillScratch {
  std::vector<float> qt;     // (d, kQ) scaled queries, transposed; rows past the sequence 0
  std::vector<float> s;      // (kK, kQ) scores, then probabilities
  std::vector<float> kh, vh; // (staged, dpad) keys and values of the head as float32
  std::vector<float> o;      // (kQ, dpad) output accumulators
  std::vector<float> zero;   // (dpad,) the row padded keys point at
  int64_t staged_start = -1, staged_head = -1, staged = 0;
  float m[kQ], l[kQ], alpha[kQ];
};

// Makes rows [0, keys) of the kv head `kv_head` of the sequence starting at `start` staged.
void stage_kv(const AttentionPrefillParams& p, int64_t start, int64_t kv_head, int64_t keys, PrefillScratch& ws) {
  const int64_t d = p.head_dim, dpad = round_up(d, kW);
  if (ws.staged_start != start || ws.staged_head != kv_head) {
    ws.staged_start = start;
    ws.staged_head = kv_head;
    ws.staged = 0;
  }
  if (keys <= ws.staged) return;
  if (static_cast<int64_t>(ws.kh.size()) < keys * dpad) {
    const int64_t size = std::max<int64_t>(keys, 2 * ws.kh.size() / dpad) * dpad;
    ws.kh.resize(size, 0.0f);
    ws.vh.resize(size, 0.0f);
  }
  for (int64_t j = ws.staged; j < keys; ++j) {
    const int64_t index = ((start + j) * p.n_kv_heads + kv_head) * d;
    load_row(p.k, p.kv_bf16, index, d, ws.kh.data() + j * dpad);
    load_row(p.v, p.kv_bf16, index, d, ws.vh.data() + j * dpad);
    std::fill(ws.kh.data() + j * dpad + d, ws.kh.data() + (j + 1) * dpad, 0.0f);
    std::fill(ws.vh.data() + j * dpad + d, ws.vh.data() + (j + 1) * dpad, 0.0f);
  }
  ws.staged = keys;
}

// s[j][r] = sum_c krow[j][c] * qt[c][r] for j < n_keys (a multiple of 4), all kQ queries.
template <int kBlockVectors>
void scores(const float* qt, const float* const* krow, int n_keys, int64_t d, float* s) {
  for (int j0 = 0; j0 < n_keys; j0 += 4) {
    for (int v0 = 0; v0 < kRowVectors; v0 += kBlockVectors) {
      F acc[4][kBlockVectors];
      for (auto& row : acc) {
        for (F& a : row) a = simd::set1(0.0f);
      }
      for (int64_t c = 0; c < d; ++c) {
        F q[kBlockVectors];
        for (int i = 0; i < kBlockVectors; ++i) q[i] = simd::load(qt + c * kQ + (v0 + i) * kW);
        for (int jj = 0; jj < 4; ++jj) {
          const F k = simd::set1(krow[j0 + jj][c]);
          for (int i = 0; i < kBlockVectors; ++i) acc[jj][i] = simd::fmadd(k, q[i], acc[jj][i]);
        }
      }
      for (int jj = 0; jj < 4; ++jj) {
        for (int i = 0; i < kBlockVectors; ++i) simd::store(s + (j0 + jj) * kQ + (v0 + i) * kW, acc[jj][i]);
      }
    }
  }
}

// o[r][c0 ..] += sum_j p[j][r] * vrow[j][c0 ..] for rows r < n_rows (a multiple of 4),
// kVectors vectors of columns from c0.
template <int kVectors>
void accumulate(const float* p, const float* const* vrow, int n_keys, int n_rows, int64_t dpad, int64_t c0,
                float* o) {
  for (int r0 = 0; r0 < n_rows; r0 += 4) {
    F acc[4][kVectors];
    for (int rr = 0; rr < 4; ++rr) {
      for (int i = 0; i < kVectors; ++i) acc[rr][i] = simd::load(o + (r0 + rr) * dpad + c0 + i * kW);
    }
    for (int j = 0; j < n_keys; ++j) {
      F v[kVectors];
      for (int i = 0; i < kVectors; ++i) v[i] = simd::load(vrow[j] + c0 + i * kW);
      for (int rr = 0; rr < 4; ++rr) {
        const F w = simd::set1(p[j * kQ + r0 + rr]);
        for (int i = 0; i < kVectors; ++i) acc[rr][i] = simd::fmadd(w, v[i], acc[rr][i]);
      }
    }
    for (int rr = 0; rr < 4; ++rr) {
      for (int i = 0; i < kVectors; ++i) simd::store(o + (r0 + rr) * dpad + c0 + i * kW, acc[rr][i]);
    }
  }
}

// One (head, query tile): queries [q0, q0 + nq) of the sequence starting at token `start`.
// Scores carry log2(e), so the weights are 2^(s - m): exp2_nonpositive is 10 instructions.
void prefill_tile(const AttentionPrefillParams& p, int64_t start, int64_t q0, int64_t nq, int64_t head,
                  PrefillScratch& ws) {
  const int64_t d = p.head_dim, dpad = round_up(d, kW);
  const int64_t kv_head = head / (p.n_heads / p.n_kv_heads);
  stage_kv(p, start, kv_head, q0 + nq, ws);
  ws.qt.assign(d * kQ, 0.0f);
  ws.s.resize(kK * kQ);
  ws.o.assign(kQ * dpad, 0.0f);
  ws.zero.assign(dpad, 0.0f);
  const float q_scale = p.scale * 1.44269504088896341f;  // log2(e)
  for (int64_t r = 0; r < nq; ++r) {
    const float* q = p.q + ((start + q0 + r) * p.n_heads + head) * d;
    for (int64_t c = 0; c < d; ++c) ws.qt[c * kQ + r] = q[c] * q_scale;
  }
  std::fill(ws.m, ws.m + kQ, -kInf);
  std::fill(ws.l, ws.l + kQ, 0.0f);
  const int n_rows = static_cast<int>(round_up(nq, 4));
  const int64_t key_end = q0 + nq;  // causal: the last query sees keys up to itself
  const float* krow[kK];
  const float* vrow[kK];
  for (int64_t k0 = 0; k0 < key_end; k0 += kK) {
    const int nk = static_cast<int>(std::min<int64_t>(kK, key_end - k0));
    const int nk4 = static_cast<int>(round_up(nk, 4));
    for (int j = 0; j < nk4; ++j) {
      krow[j] = j < nk ? ws.kh.data() + (k0 + j) * dpad : ws.zero.data();
      vrow[j] = j < nk ? ws.vh.data() + (k0 + j) * dpad : ws.zero.data();
    }
    float* s = ws.s.data();
    scores<(kRowVectors < 4 ? kRowVectors : 4)>(ws.qt.data(), krow, nk4, d, s);
    // Mask keys past the tile's end or after the query (only tiles that reach the diagonal).
    if (k0 + nk4 - 1 > q0 || nk < nk4) {
      for (int j = 0; j < nk4; ++j) {
        for (int r = 0; r < kQ; ++r) {
          if (j >= nk || k0 + j > q0 + r) s[j * kQ + r] = -kInf;
        }
      }
    }
    // Online softmax, kW queries at a time. Key 0 is visible to every query (padded
    // rows included), so the running max is finite after the first tile.
    for (int v = 0; v < kRowVectors; ++v) {
      F max = simd::set1(-kInf);
      for (int j = 0; j < nk4; ++j) max = simd::max(max, simd::load(s + j * kQ + v * kW));
      const F m_old = simd::load(ws.m + v * kW);
      const F m_new = simd::max(m_old, max);
      const F alpha = simd::exp2_nonpositive(simd::sub(m_old, m_new));
      F sum = simd::set1(0.0f);
      for (int j = 0; j < nk4; ++j) {
        const F e = simd::exp2_nonpositive(simd::sub(simd::load(s + j * kQ + v * kW), m_new));
        simd::store(s + j * kQ + v * kW, e);
        sum = simd::add(sum, e);
      }
      simd::store(ws.l + v * kW, simd::fmadd(simd::load(ws.l + v * kW), alpha, sum));
      simd::store(ws.m + v * kW, m_new);
      simd::store(ws.alpha + v * kW, alpha);
    }
    if (k0 > 0) {
      for (int r = 0; r < n_rows; ++r) {
        if (ws.alpha[r] == 1.0f) continue;  // the max held, as for most rows after a few tiles
        const F a = simd::set1(ws.alpha[r]);
        float* o = ws.o.data() + r * dpad;
        for (int64_t c = 0; c < dpad; c += kW) simd::store(o + c, simd::mul(simd::load(o + c), a));
      }
    }
    for (int64_t c0 = 0; c0 < dpad; c0 += 4 * kW) {
      switch (std::min<int64_t>(4, (dpad - c0) / kW)) {
        case 4: accumulate<4>(s, vrow, nk4, n_rows, dpad, c0, ws.o.data()); break;
        case 3: accumulate<3>(s, vrow, nk4, n_rows, dpad, c0, ws.o.data()); break;
        case 2: accumulate<2>(s, vrow, nk4, n_rows, dpad, c0, ws.o.data()); break;
        default: accumulate<1>(s, vrow, nk4, n_rows, dpad, c0, ws.o.data()); break;
      }
    }
  }
  for (int64_t r = 0; r < nq; ++r) {
    float* out = p.out + ((start + q0 + r) * p.n_heads + head) * d;
    const float inv = 1.0f / ws.l[r];
    for (int64_t c = 0; c < d; ++c) out[c] = ws.o[r * dpad + c] * inv;
  }
}

struct DecodeScratch {
  std::vector<float> q;       // (group, dpad) scaled queries, zero-padded
  std::vector<float> acc;     // (group, dpad)
  std::vector<float> s;       // (group, block_size rounded to vectors)
  std::vector<float> m, l;    // (group,)
};

inline F load_vector(const void* base, bool bf16, int64_t index, int64_t remaining) {
  if (bf16) {
    const uint16_t* src = static_cast<const uint16_t*>(base) + index;
    return remaining >= kW ? simd::load_bf16(src) : simd::load_bf16_partial(src, static_cast<int>(remaining));
  }
  const float* src = static_cast<const float*>(base) + index;
  return remaining >= kW ? simd::load(src) : simd::load_partial(src, static_cast<int>(remaining), 0.0f);
}

// Every cache line of `bytes` from `row` into L2 (prefetcht1). Slot j of the next block is
// fetched while slot j of this one is used, a whole block (48 KiB of K and of V at 12 heads
// x 64 dims) ahead: the hardware prefetcher does not follow the jump to the next block,
// and 2 slots ahead into L1 kept decode at 41% of the bandwidth bound in bf16.
inline void prefetch_l2(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 0, 2);
}

// acc[c0 .. c0 + kVectors * kW) += sum_j s[j] * V[j] over the n slots of a block, the
// accumulators in registers across the slots.
template <int kVectors>
void value_pass(const AttentionDecodeParams& p, int64_t first_row, int64_t n, const float* s, int64_t c0,
                float* acc) {
  const int64_t d = p.head_dim, kv_stride = p.n_kv_heads * d;
  F a[kVectors];
  for (int i = 0; i < kVectors; ++i) a[i] = simd::load(acc + c0 + i * kW);
  for (int64_t j = 0; j < n; ++j) {
    const F w = simd::set1(s[j]);
    const int64_t row = first_row + j * kv_stride + c0;
    for (int i = 0; i < kVectors; ++i) {
      a[i] = simd::fmadd(w, load_vector(p.v_cache, p.kv_bf16, row + i * kW, d - c0 - i * kW), a[i]);
    }
  }
  for (int i = 0; i < kVectors; ++i) simd::store(acc + c0 + i * kW, a[i]);
}

float exp2_scalar(float x) {
  alignas(64) float lanes[kW];
  simd::store(lanes, simd::exp2_nonpositive(simd::set1(x)));
  return lanes[0];
}

// Sequence b, kv heads [h0, h1): block by block, slot by slot, every head of the range in
// turn, so the cache is read in address order (a block of 16 slots x 12 heads x 64 dims is
// 48 KiB in one piece; one kv head at a time read 256 B of every 3 KiB and ran at 2.6 GB/s).
void decode_item(const AttentionDecodeParams& p, int64_t b, int64_t h0, int64_t h1, DecodeScratch& ws) {
  const int64_t d = p.head_dim, dpad = round_up(d, kW), group = p.n_heads / p.n_kv_heads;
  const int64_t bs = p.block_size, bs_pad = round_up(bs, kW), kv_stride = p.n_kv_heads * d;
  const int64_t rows = (h1 - h0) * group;  // query heads h0 * group .. h1 * group
  const int64_t elt = p.kv_bf16 ? 2 : 4, range_bytes = (h1 - h0) * d * elt;
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
  auto row_address = [&](const void* base, int64_t slot) {
    return static_cast<const char*>(base) + (slot * kv_stride + h0 * d) * elt;
  };
  const int64_t length = p.context_lens[b];
  const int32_t* table = p.block_table + b * p.max_blocks;
  for (int64_t j = 0; j < std::min(bs, length); ++j) {
    prefetch_l2(row_address(p.k_cache, table[0] * bs + j), range_bytes);
    prefetch_l2(row_address(p.v_cache, table[0] * bs + j), range_bytes);
  }
  for (int64_t blk = 0; blk * bs < length; ++blk) {
    const int64_t block = table[blk];
    const int64_t n = std::min(bs, length - blk * bs);
    const int64_t next_n = std::min(bs, length - (blk + 1) * bs);  // <= 0: no next block
    for (int64_t j = 0; j < n; ++j) {
      if (j < next_n) {
        prefetch_l2(row_address(p.k_cache, table[blk + 1] * bs + j), range_bytes);
        prefetch_l2(row_address(p.v_cache, table[blk + 1] * bs + j), range_bytes);
      }
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t row = (block * bs + j) * kv_stride + h * d;
        for (int64_t g = (h - h0) * group; g < (h - h0 + 1) * group; ++g) {
          F dot = simd::set1(0.0f);
          for (int64_t c = 0; c < dpad; c += kW) {
            dot = simd::fmadd(load_vector(p.k_cache, p.kv_bf16, row + c, d - c),
                              simd::load(ws.q.data() + g * dpad + c), dot);
          }
          ws.s[g * bs_pad + j] = simd::reduce_add(dot);
        }
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
    // Values head by head, the accumulators in registers over the block's slots (the block
    // is in L2 by now: loading and storing them per slot and head was 8 of 20 instructions).
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t first_row = block * bs * kv_stride + h * d;
      for (int64_t g = (h - h0) * group; g < (h - h0 + 1) * group; ++g) {
        const float* s = ws.s.data() + g * bs_pad;
        float* acc = ws.acc.data() + g * dpad;
        for (int64_t c0 = 0; c0 < dpad; c0 += 4 * kW) {
          switch (std::min<int64_t>(4, (dpad - c0) / kW)) {
            case 4: value_pass<4>(p, first_row, n, s, c0, acc); break;
            case 3: value_pass<3>(p, first_row, n, s, c0, acc); break;
            case 2: value_pass<2>(p, first_row, n, s, c0, acc); break;
            default: value_pass<1>(p, first_row, n, s, c0, acc); break;
          }
        }
      }
    }
  }
  for (int64_t g = 0; g < rows; ++g) {
    float* out = p.out + (b * p.n_heads + h0 * group + g) * d;
    const float inv = 1.0f / ws.l[g];
    for (int64_t c = 0; c < d; ++c) out[c] = ws.acc[g * dpad + c] * inv;
  }
}

}  // namespace

void attention_prefill_items(const AttentionPrefillParams& p, const int32_t* tile_seq, const int32_t* tile_start,
                             int64_t n_tiles, int64_t first, int64_t last) {
  thread_local PrefillScratch ws;
  ws.staged_start = -1;  // another call: other arrays
  for (int64_t i = first; i < last; ++i) {
    const int64_t head = i / n_tiles, t = i % n_tiles;
    const int64_t start = p.cu_seqlens[tile_seq[t]], length = p.cu_seqlens[tile_seq[t] + 1] - start;
    prefill_tile(p, start, tile_start[t], std::min<int64_t>(kQ, length - tile_start[t]), head, ws);
  }
}

void attention_decode_items(const AttentionDecodeParams& p, int64_t first, int64_t last) {
  thread_local DecodeScratch ws;
  const int64_t chunks = (p.n_kv_heads + p.kv_heads_per_item - 1) / p.kv_heads_per_item;
  for (int64_t i = first; i < last; ++i) {
    const int64_t h0 = i % chunks * p.kv_heads_per_item;
    decode_item(p, i / chunks, h0, std::min(p.n_kv_heads, h0 + p.kv_heads_per_item), ws);
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
