// The sampler's kernels (cuda/sampling.cu launches them), one block of kBlock threads per
// row: prepare_rows (checks, bias and penalties, the raw log-sum-exp, greedy), the sort's
// setup (fill_ids, fill_offsets), draw_rows (the draw, the outputs). Apart from the host
// code so that tests/cuda_sim can run them on the CPU, a block simulated by threads.
// logits and every work array: (batch, vocab), row r at r * vocab.
#pragma once

#include <cstdint>

#include "aigc/rng.h"
#include "cuda/sampling.h"
#include "cuda/sampling_arith.cuh"

namespace aigc::cuda::sampling {

struct RowState {
  RowStatus status;
  int64_t greedy;    // the first token of the edited maximum
  float edited_max;  // after bias and penalties
  double log_total;  // the raw logits' log-sum-exp (when log-probabilities are wanted)
};

// Per-row work arrays, each (batch, vocab).
struct Work {
  float* edited;  // the logits after bias and penalties (the sort's keys)
  float* sorted;  // rows with top_k on: edited, descending
  int32_t* sorted_ids;
  int32_t* ids;   // 0 .. vocab - 1 per row (the sort's values)
  float* probs;
  Pool kept, a, b;
  float* red;     // (batch, vocab / 128 + 1) exp_scaled's chunk sums
  RowState* state;
};

__global__ void __launch_bounds__(kBlock) prepare_rows(DeviceSampleParams p, Work w) {
  __shared__ RowShared s;
  __shared__ RowStatus status;
  const int64_t r = blockIdx.x, vocab = p.vocab;
  const float* raw = p.logits + r * vocab;
  float* x = w.edited + r * vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += kBlock) x[i] = raw[i];
  __syncthreads();
  if (p.edits_first && threadIdx.x == 0) edit_row(p, r, x, false);
  __syncthreads();
  const float* scanned = p.edits_first ? x : raw;
  int64_t nan = 0;
  float max = -kInf;
  for (int64_t i = threadIdx.x; i < vocab; i += kBlock) {
    const float v = scanned[i];
    nan += isnan(v) ? 1 : 0;
    max = v > max ? v : max;
  }
  nan = block_reduce(nan, SumOp(), s.reduce_i);
  max = block_reduce(max, MaxOp(), s.reduce_f);
  if (threadIdx.x == 0) {
    status = {SampleStatus::kOk, -1};
    if (nan != 0) {
      status.code = SampleStatus::kNaN;
    } else if (max == kInf) {
      status.code = SampleStatus::kPosInf;
    } else if (max == -kInf) {
      status.code = p.edits_first && has_bias(p, r) ? SampleStatus::kAllBanned : SampleStatus::kAllNegInf;
    } else if (!p.edits_first) {
      status = edit_row(p, r, x, true);
    }
  }
  __syncthreads();
  double log_total = 0.0;
  float edited_max = -kInf;
  int64_t greedy = -1;
  const bool ok = status.code == SampleStatus::kOk;
  if (ok && (p.logprobs != nullptr || p.num_logprobs > 0)) {  // then scanned is raw, max its maximum
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += kBlock) sum += exp(static_cast<double>(raw[i]) - max);
    log_total = max + log(block_reduce(sum, SumOp(), s.reduce_d));
  }
  if (ok) {
    for (int64_t i = threadIdx.x; i < vocab; i += kBlock) edited_max = x[i] > edited_max ? x[i] : edited_max;
    edited_max = block_reduce(edited_max, MaxOp(), s.reduce_f);
    int64_t first = vocab;
    if (p.temperature[r] == 0.0f) {
      for (int64_t i = threadIdx.x; i < vocab; i += kBlock) {
        if (x[i] == edited_max && i < first) first = i;
      }
      first = block_reduce(first, MinOp(), s.reduce_i);
      greedy = first < vocab ? first : -1;
    }
  }
  if (threadIdx.x == 0) {
    RowStatus final_status = status;
    if (ok && edited_max == -kInf) final_status = {SampleStatus::kAllBanned, -1};
    w.state[r] = {final_status, greedy, edited_max, log_total};
  }
}

__global__ void fill_ids(int32_t* ids, int64_t vocab, int64_t count) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < count) ids[k] = static_cast<int32_t>(k % vocab);
}
__global__ void fill_offsets(int* offsets, int64_t vocab, int64_t batch) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k <= batch) offsets[k] = static_cast<int>(k * vocab);
}

// cpu/sampling.cc's draw for row r (temperature > 0); -1 when nothing can be drawn.
__device__ inline int64_t draw(const DeviceSampleParams& p, int64_t r, const RowState& state, const Work& w,
                               RowShared& s) {
  const int64_t vocab = p.vocab, top_k = p.top_k[r];
  const float temperature = p.temperature[r], top_p = p.top_p[r], min_p = p.min_p[r];
  const double u = uniform_from_bits(philox4x64(p.steps[r], 0, 0, 0, p.seeds[r], kSamplerStream).v[0]);
  const CpuArithmetic a = p.arithmetic;
  float* probs = w.probs + r * vocab;
  float* red = w.red + r * (vocab / 128 + 1);
  const int32_t* ids = nullptr;  // null: candidate i is token i
  int64_t m = vocab;
  if (top_k > 0 && top_k < vocab) {
    // The top_k first tokens of the sampling order that are > -inf, in that order.
    const float* sorted = w.sorted + r * vocab;
    ids = w.sorted_ids + r * vocab;
    int64_t finite = 0;
    for (int64_t i = threadIdx.x; i < top_k; i += kBlock) finite += sorted[i] > -kInf ? 1 : 0;
    m = block_reduce(finite, SumOp(), s.reduce_i);
    if (m == 0) return -1;
    for (int64_t i = threadIdx.x; i < m; i += kBlock) {
      probs[i] = probability(sorted[i], sorted[0], temperature, a.fused);
    }
    __syncthreads();
    // exp_scaled over the m packed values: chunks of 64 vectors, then the tail one by one.
    const int64_t nv = m / a.width;
    chunk_sums(probs, nv, 64, a, red, s);
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int64_t c = 0; c < (nv + 63) / 64; ++c) total += red[c];
      for (int64_t i = nv * a.width; i < m; ++i) total += probs[i];
      s.total = total;
      if (m <= kSortBelow) s.found.id = draw_sorted(probs, ids, m, total, top_p, min_p, u);
    }
    __syncthreads();
    if (m <= kSortBelow) return s.found.id;
  } else {
    const float* x = w.edited + r * vocab;
    for (int64_t i = threadIdx.x; i < vocab; i += kBlock) {
      probs[i] = probability(x[i], state.edited_max, temperature, a.fused);
    }
    __syncthreads();
    // exp_scaled block by block of 128: a block's full vectors are one chunk, the row's
    // last partial vector is the last block's tail; block sums add up in double.
    const int64_t nv = vocab / a.width, per_block = 128 / a.width, blocks = (vocab + 127) / 128;
    chunk_sums(probs, nv, per_block, a, red, s);
    if (threadIdx.x == 0) {
      const int64_t chunks = (nv + per_block - 1) / per_block;
      double total = 0.0;
      for (int64_t b = 0; b < blocks; ++b) {
        double block = 0.0;
        if (b < chunks) block += red[b];
        if (b == blocks - 1) {
          for (int64_t i = nv * a.width; i < vocab; ++i) block += probs[i];
        }
        total += block;
      }
      s.total = total;
    }
    __syncthreads();
  }
  const double total = s.total;
  auto value = [&](int64_t i) { return probs[i]; };
  auto id = [&](int64_t i) { return ids != nullptr ? ids[i] : static_cast<int32_t>(i); };
  const Pool pa{w.a.value + r * vocab, w.a.id + r * vocab}, pb{w.b.value + r * vocab, w.b.id + r * vocab};
  if (!(top_p < 1.0f) && !(min_p > 0.0f)) return mass_search(value, id, m, u * total, true, pa, pb, s).id;
  // top_p and min_p each keep a prefix of the sampling order: keep the shorter.
  Cand edge{0.0f, INT32_MAX};
  if (top_p < 1.0f) edge = mass_search(value, id, m, static_cast<double>(top_p) * total, false, pa, pb, s);
  const Pool kept{w.kept.value + r * vocab, w.kept.id + r * vocab};
  const int64_t n_kept = compact(
      m,
      [&](int64_t i) {
        const float v = probs[i];
        const int32_t t = id(i);
        return (v > edge.value || (v == edge.value && t <= edge.id)) && v >= min_p && v > 0.0f;
      },
      [&](int64_t i, int64_t at) {
        kept.value[at] = probs[i];
        kept.id[at] = id(i);
      },
      s);
  if (threadIdx.x == 0) {
    double kept_total = 0.0;
    for (int64_t i = 0; i < n_kept; ++i) kept_total += kept.value[i];
    s.total = kept_total;
  }
  __syncthreads();
  return mass_search([&](int64_t i) { return kept.value[i]; }, [&](int64_t i) { return kept.id[i]; }, n_kept,
                     u * s.total, true, pa, pb, s)
      .id;
}

__global__ void __launch_bounds__(kBlock) draw_rows(DeviceSampleParams p, Work w) {
  __shared__ RowShared s;
  const int64_t r = blockIdx.x, vocab = p.vocab;
  const int n = p.num_logprobs;
  const RowState state = w.state[r];
  RowStatus status = state.status;
  int64_t token = -1;
  if (status.code == SampleStatus::kOk) {
    token = p.temperature[r] == 0.0f ? state.greedy : draw(p, r, state, w, s);
    if (token < 0) status = {SampleStatus::kAllBanned, -1};
  }
  if (status.code != SampleStatus::kOk) {  // nothing in the outputs could pass for a sampled token
    if (threadIdx.x == 0) {
      p.status[r] = status;
      p.tokens[r] = -1;
      if (p.logprobs != nullptr) p.logprobs[r] = NAN;
      for (int j = 0; j < n; ++j) {
        p.top_ids[r * n + j] = -1;
        p.top_logprobs[r * n + j] = NAN;
      }
    }
    return;
  }
  const float* raw = p.logits + r * vocab;
  if (threadIdx.x == 0) {
    p.tokens[r] = token;
    if (p.logprobs != nullptr) p.logprobs[r] = static_cast<float>(raw[token] - state.log_total);
    p.status[r] = status;
  }
  // The n first raw logits in the sampling order (-inf ones too, lowest ids first), one a round.
  Cand previous{kInf, -1};
  for (int j = 0; j < n; ++j) {
    Cand best{0.0f, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += kBlock) {
      const Cand c{raw[i], static_cast<int32_t>(i)};
      if (j > 0 && !ahead(previous, c)) continue;
      if (best.id < 0 || ahead(c, best)) best = c;
    }
    best = block_best(best, s);
    if (threadIdx.x == 0) {
      p.top_ids[r * n + j] = best.id;
      p.top_logprobs[r * n + j] = best.value == -kInf ? -kInf : static_cast<float>(best.value - state.log_total);
    }
    previous = best;
  }
}

}  // namespace aigc::cuda::sampling
