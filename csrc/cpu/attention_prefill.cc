// Causal attention prefill (aigc/attention.h), compiled once per ISA with the wrappers of
// simd/vec.h. q (tokens, n_heads, d), K/V (tokens, n_kv_heads, d) float32 or bf16, packed
// sequences. Per (head, tile of 64 queries): queries scaled and transposed once, qt (d, 64);
// for each tile of 64 keys up to the diagonal, scores s (64 keys, 64 queries) = K qt, a
// broadcast of one key element times vectors of queries, then the online softmax, vectorised
// across queries, and o (64, d) += p^T V. Key-major scores make the per-query max and sum
// plain vector ops.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "aigc/attention.h"
#include "cpu/counts.h"
#include "cpu/simd/vec.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {
namespace {

using simd::F;
constexpr int kW = simd::kWidth;
constexpr int kQ = kAttentionTile;  // queries per tile
constexpr int kK = 64;              // keys per tile: 16 KiB of (64 x 64) scores stay in L1
constexpr int kRowVectors = kQ / kW;
constexpr float kInf = std::numeric_limits<float>::infinity();

// Register blocks: accumulators for 4 keys (scores) or 4 query rows (accumulate) times
// kBlockVectors vectors, plus kBlockVectors loaded vectors and one broadcast. AVX-512 (32
// zmm): 4 x 4 = 16 + 4 + 1. AVX2 (16 ymm): 4 x 4 spilled 2 (scores) and 5 (accumulate)
// accumulators to the stack every iteration; 4 x 3 = 12 + 3 + 1 fits and ran the prefill
// 1.45x faster (64 queries = 8 vectors: passes of 3, 3 and 2). 6 keys x 2 vectors (15
// registers) measured the same.
constexpr int kBlockVectors = kW == 16 ? 4 : 3;

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
// cost 10% in memcpy. A 2048-token head is 1 MiB: it streams from L3 on a core with 512 KiB
// of L2.
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
  // Rows 8 ahead prefetched as well: the rows fetched during the previous item still left
  // 4% of the prefill in the first load of each row's copy (seq 512).
  const int64_t bytes = p.kv_bf16 ? 2 : 4, row_stride = p.kv_row_stride * bytes;
  for (int64_t j = ws.staged; j < keys; ++j) {
    const int64_t index = (start + j) * p.kv_row_stride + kv_head * d;
    if (j + 8 < keys) {
      for (int64_t offset = 0; offset < d * bytes; offset += 64) {
        __builtin_prefetch(static_cast<const char*>(p.k) + index * bytes + 8 * row_stride + offset);
        __builtin_prefetch(static_cast<const char*>(p.v) + index * bytes + 8 * row_stride + offset);
      }
    }
    load_row(p.k, p.kv_bf16, index, d, ws.kh.data() + j * dpad);
    load_row(p.v, p.kv_bf16, index, d, ws.vh.data() + j * dpad);
    std::fill(ws.kh.data() + j * dpad + d, ws.kh.data() + (j + 1) * dpad, 0.0f);
    std::fill(ws.vh.data() + j * dpad + d, ws.vh.data() + (j + 1) * dpad, 0.0f);
  }
  ws.staged = keys;
}

// s[jj][i * kW ..] = sum_c krow[jj][c] * qt[c][i * kW ..] for 4 keys, kVectors vectors of
// queries (qt and s offset to the first of them).
template <int kVectors>
void score_block(const float* qt, const float* const* krow, int64_t d, float* s) {
  F acc[4][kVectors];
  for (auto& row : acc) {
    for (F& a : row) a = simd::set1(0.0f);
  }
  for (int64_t c = 0; c < d; ++c) {
    F q[kVectors];
    for (int i = 0; i < kVectors; ++i) q[i] = simd::load(qt + c * kQ + i * kW);
    for (int jj = 0; jj < 4; ++jj) {
      const F k = simd::set1(krow[jj][c]);
      for (int i = 0; i < kVectors; ++i) acc[jj][i] = simd::fmadd(k, q[i], acc[jj][i]);
    }
  }
  for (int jj = 0; jj < 4; ++jj) {
    for (int i = 0; i < kVectors; ++i) simd::store(s + jj * kQ + i * kW, acc[jj][i]);
  }
}

// s[j][r] = sum_c krow[j][c] * qt[c][r] for j < n_keys (a multiple of 4), all kQ queries,
// except blocks of 4 keys x kBlockVectors vectors where every key comes after every query
// (key j is visible to query r when j <= r + diagonal): the mask overwrites those.
void scores(const float* qt, const float* const* krow, int n_keys, int64_t d, int64_t diagonal, float* s) {
  constexpr int kTail = kRowVectors % kBlockVectors;
  for (int j0 = 0; j0 < n_keys; j0 += 4) {
    int v0 = 0;
    for (; v0 + kBlockVectors <= kRowVectors; v0 += kBlockVectors) {
      if (j0 > (v0 + kBlockVectors) * kW - 1 + diagonal) continue;
      score_block<kBlockVectors>(qt + v0 * kW, krow + j0, d, s + j0 * kQ + v0 * kW);
    }
    if constexpr (kTail > 0) {
      if (j0 <= kQ - 1 + diagonal) score_block<kTail>(qt + v0 * kW, krow + j0, d, s + j0 * kQ + v0 * kW);
    }
  }
}

// o[rr][i * kW ..] += sum_j p[j][rr] * vrow[j][i * kW ..] for 4 query rows, kVectors vectors
// of columns (p, vrow's columns and o offset to the first of them).
template <int kVectors>
void accumulate_block(const float* p, const float* const* vrow, int64_t column, int n_keys, int64_t dpad, float* o) {
  F acc[4][kVectors];
  for (int rr = 0; rr < 4; ++rr) {
    for (int i = 0; i < kVectors; ++i) acc[rr][i] = simd::load(o + rr * dpad + i * kW);
  }
  for (int j = 0; j < n_keys; ++j) {
    F v[kVectors];
    for (int i = 0; i < kVectors; ++i) v[i] = simd::load(vrow[j] + column + i * kW);
    for (int rr = 0; rr < 4; ++rr) {
      const F w = simd::set1(p[j * kQ + rr]);
      for (int i = 0; i < kVectors; ++i) acc[rr][i] = simd::fmadd(w, v[i], acc[rr][i]);
    }
  }
  for (int rr = 0; rr < 4; ++rr) {
    for (int i = 0; i < kVectors; ++i) simd::store(o + rr * dpad + i * kW, acc[rr][i]);
  }
}

// o[r][c] += sum_j p[j][r] * vrow[j][c] for rows r < n_rows (a multiple of 4), all dpad
// columns. Keys after the last of 4 rows (j > r0 + 3 + diagonal) have p = 0 for all of them
// and are left out: on the diagonal tile, half the work.
void accumulate(const float* p, const float* const* vrow, int n_keys, int n_rows, int64_t dpad, int64_t diagonal,
                float* o) {
  for (int r0 = 0; r0 < n_rows; r0 += 4) {
    const int keys = static_cast<int>(std::clamp<int64_t>(r0 + 4 + diagonal, 0, n_keys));
    float* orow = o + r0 * dpad;
    int64_t c0 = 0;
    for (; c0 + kBlockVectors * kW <= dpad; c0 += kBlockVectors * kW) {
      accumulate_block<kBlockVectors>(p + r0, vrow, c0, keys, dpad, orow + c0);
    }
    const int64_t rest = (dpad - c0) / kW;  // fewer than kBlockVectors
    if constexpr (kBlockVectors > 3) {
      if (rest == 3) accumulate_block<3>(p + r0, vrow, c0, keys, dpad, orow + c0);
    }
    if (rest == 2) accumulate_block<2>(p + r0, vrow, c0, keys, dpad, orow + c0);
    if (rest == 1) accumulate_block<1>(p + r0, vrow, c0, keys, dpad, orow + c0);
  }
}

// The rows the next work item reads or writes (queries, outputs, keys, values: rows 3 KiB
// apart at 12 heads x 64 dims), prefetched a share per key tile of this item: its 64
// queries missed in the cache one row at a time (10% of the samples at seq 512), and all
// 1024 lines at once stalled on the miss buffers (8% of the samples).
struct NextRows {
  struct Array {
    const char* first;
    int64_t stride, bytes;  // between rows, in a row
    bool write;
  };
  Array arrays[4];
  int64_t rows = 0, issued = 0;

  // Rows [issued, upto) of every array.
  void issue(int64_t upto) {
    for (; issued < std::min(upto, rows); ++issued) {
      for (const Array& a : arrays) {
        const char* row = a.first + issued * a.stride;
        for (int64_t offset = 0; offset < a.bytes; offset += 64) {
          if (a.write) {
            __builtin_prefetch(row + offset, 1, 2);
          } else {
            __builtin_prefetch(row + offset, 0, 2);
          }
        }
      }
    }
  }
};

// One (head, query tile): queries [q0, q0 + nq) of the sequence starting at token `start`.
// Scores carry log2(e), so the weights are 2^(s - m): exp2_nonpositive is 10 instructions.
void prefill_tile(const AttentionPrefillParams& p, int64_t start, int64_t q0, int64_t nq, int64_t head,
                  NextRows& next, PrefillScratch& ws) {
  const int64_t d = p.head_dim, dpad = round_up(d, kW);
  const int64_t kv_head = head / (p.n_heads / p.n_kv_heads);
  stage_kv(p, start, kv_head, q0 + nq, ws);
  ws.qt.assign(d * kQ, 0.0f);
  ws.s.resize(kK * kQ);
  ws.o.assign(kQ * dpad, 0.0f);
  ws.zero.assign(dpad, 0.0f);
  const float q_scale = p.scale * 1.44269504088896341f;  // log2(e)
  // Whole kW x kW blocks in registers (one scalar store per element was 4% of the prefill).
  const float* q = p.q + (start + q0) * p.q_row_stride + head * d;
  const int64_t q_stride = p.q_row_stride;
  for (int64_t r0 = 0; r0 < nq; r0 += kW) {
    int64_t c0 = 0;
    if (r0 + kW <= nq) {
      for (; c0 + kW <= d; c0 += kW) {
        simd::transpose(q + r0 * q_stride + c0, q_stride, q_scale, ws.qt.data() + c0 * kQ + r0, kQ);
      }
    }
    for (int64_t r = r0; r < std::min<int64_t>(nq, r0 + kW); ++r) {
      for (int64_t c = c0; c < d; ++c) ws.qt[c * kQ + r] = q[r * q_stride + c] * q_scale;
    }
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
    next.issue(next.rows * (k0 + kK) / key_end);
    float* s = ws.s.data();
    scores(ws.qt.data(), krow, nk4, d, q0 - k0, s);
    // Mask keys past the tile's end, and key j for the queries before it (r < k0 + j - q0);
    // only tiles that reach the diagonal.
    if (k0 + nk4 - 1 > q0 || nk < nk4) {
      for (int j = 0; j < nk4; ++j) {
        const int64_t hidden = j >= nk ? kQ : std::clamp<int64_t>(k0 + j - q0, 0, kQ);
        std::fill(s + j * kQ, s + j * kQ + hidden, -kInf);
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
    accumulate(s, vrow, nk4, n_rows, dpad, q0 - k0, ws.o.data());
  }
  for (int64_t r = 0; r < nq; ++r) {
    float* out = p.out + ((start + q0 + r) * p.n_heads + head) * d;
    const float inv = 1.0f / ws.l[r];
    for (int64_t c = 0; c < d; ++c) out[c] = ws.o[r * dpad + c] * inv;
  }
}

}  // namespace

void attention_prefill_items(const AttentionPrefillParams& p, const int32_t* tile_seq, const int32_t* tile_start,
                             int64_t n_tiles, int64_t first, int64_t last) {
  thread_local PrefillScratch ws;
  ws.staged_start = -1;  // another call: other arrays
  const int64_t d = p.head_dim, group = p.n_heads / p.n_kv_heads, kv_bytes = p.kv_bf16 ? 2 : 4;
  for (int64_t i = first; i < last; ++i) {
    const int64_t head = i / n_tiles, t = i % n_tiles;
    const int64_t start = p.cu_seqlens[tile_seq[t]], length = p.cu_seqlens[tile_seq[t] + 1] - start;
    NextRows next;
    if (i + 1 < last) {
      const int64_t next_head = (i + 1) / n_tiles, next_t = (i + 1) % n_tiles;
      const int64_t token = p.cu_seqlens[tile_seq[next_t]] + tile_start[next_t];
      const int64_t q_index = token * p.q_row_stride + next_head * d;
      const int64_t out_index = (token * p.n_heads + next_head) * d;
      const int64_t kv_index = token * p.kv_row_stride + next_head / group * d;
      next.rows = std::min<int64_t>(kQ, p.cu_seqlens[tile_seq[next_t] + 1] - token);
      next.arrays[0] = {reinterpret_cast<const char*>(p.q + q_index), p.q_row_stride * 4, d * 4, false};
      next.arrays[1] = {reinterpret_cast<const char*>(p.out + out_index), p.n_heads * d * 4, d * 4, true};
      const int64_t kv_stride = p.kv_row_stride * kv_bytes;
      next.arrays[2] = {static_cast<const char*>(p.k) + kv_index * kv_bytes, kv_stride, d * kv_bytes, false};
      next.arrays[3] = {static_cast<const char*>(p.v) + kv_index * kv_bytes, kv_stride, d * kv_bytes, false};
    }
    prefill_tile(p, start, tile_start[t], std::min<int64_t>(kQ, length - tile_start[t]), head, next, ws);
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
