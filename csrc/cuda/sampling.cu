// The batched sampler on CUDA (cuda/sampling.h): per row, one block of kBlock threads.
// prepare_rows checks the raw logits (NaN, +inf, all -inf), applies bias and penalties to a
// copy in the CPU's order (thread 0: they are few), takes the raw log-sum-exp and the
// greedy token; rows with top_k on are sorted once (CUB's segmented radix sort, stable,
// -0 equal to +0: descending logits, ties in id order, the CPU's sampling order); draw_rows
// then draws with the CPU's arithmetic (cuda/sampling_arith.cuh) and writes the outputs.
// logits and every work array: (batch, vocab), row r at r * vocab.
#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "aigc/rng.h"
#include "cuda/device.h"
#include "cuda/sampling.h"
#include "cuda/sampling_arith.cuh"

namespace aigc::cuda {
namespace {

using namespace sampling;

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
__device__ int64_t draw(const DeviceSampleParams& p, int64_t r, const RowState& state, const Work& w,
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

// Stream-ordered device memory for one call.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) check(cudaMallocAsync(&ptr_, bytes, stream), "sample: cudaMallocAsync");
  }
  ~Scratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // The next `count` Ts, 256-byte aligned.
  template <typename T>
  T* take(int64_t count) {
    T* at = reinterpret_cast<T*>(static_cast<char*>(ptr_) + used_);
    used_ += (count * sizeof(T) + 255) / 256 * 256;
    return at;
  }
  static size_t size_of(int64_t bytes) { return (bytes + 255) / 256 * 256; }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  size_t used_ = 0;
};

}  // namespace

CpuArithmetic cpu_arithmetic(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return {16, true, true};
    case Isa::kAvx2: return {8, true, true};
    default: return {8, false, false};
  }
}

void sample(const DeviceSampleParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  const int64_t cells = p.batch * p.vocab, reds = p.batch * (p.vocab / 128 + 1);
  if (p.any_top_k && cells > std::numeric_limits<int>::max()) {
    throw std::runtime_error("sample: batch * vocab over 2**31 - 1 with top_k on (the sort's limit)");
  }
  size_t sort_bytes = 0;
  if (p.any_top_k) {
    check(cub::DeviceSegmentedRadixSort::SortPairsDescending(
              nullptr, sort_bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
              static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(cells),
              static_cast<int>(p.batch), static_cast<const int*>(nullptr), static_cast<const int*>(nullptr), 0, 32,
              stream),
          "sample: sort size");
  }
  const int64_t sorted_cells = p.any_top_k ? cells : 0;
  const size_t bytes = Scratch::size_of(cells * 4) * 8 + Scratch::size_of(sorted_cells * 4) * 3 +
                       Scratch::size_of(reds * 4) + Scratch::size_of(p.batch * sizeof(RowState)) +
                       Scratch::size_of((p.batch + 1) * 4) + Scratch::size_of(static_cast<int64_t>(sort_bytes));
  Scratch scratch(bytes, stream);
  Work w{};
  w.edited = scratch.take<float>(cells);
  w.probs = scratch.take<float>(cells);
  w.kept = {scratch.take<float>(cells), scratch.take<int32_t>(cells)};
  w.a = {scratch.take<float>(cells), scratch.take<int32_t>(cells)};
  w.b = {scratch.take<float>(cells), scratch.take<int32_t>(cells)};
  w.sorted = scratch.take<float>(sorted_cells);
  w.sorted_ids = scratch.take<int32_t>(sorted_cells);
  w.ids = scratch.take<int32_t>(sorted_cells);
  w.red = scratch.take<float>(reds);
  w.state = scratch.take<RowState>(p.batch);
  int* offsets = scratch.take<int>(p.batch + 1);
  void* sort_temp = scratch.take<char>(static_cast<int64_t>(sort_bytes));

  const int rows = static_cast<int>(p.batch);
  prepare_rows<<<rows, kBlock, 0, stream>>>(p, w);
  check(cudaGetLastError(), "sample: prepare_rows launch");
  if (p.any_top_k) {
    fill_ids<<<blocks_for(cells), kThreads, 0, stream>>>(w.ids, p.vocab, cells);
    fill_offsets<<<blocks_for(p.batch + 1), kThreads, 0, stream>>>(offsets, p.vocab, p.batch);
    check(cudaGetLastError(), "sample: sort setup launch");
    check(cub::DeviceSegmentedRadixSort::SortPairsDescending(sort_temp, sort_bytes, w.edited, w.sorted, w.ids,
                                                             w.sorted_ids, static_cast<int>(cells), rows, offsets,
                                                             offsets + 1, 0, 32, stream),
          "sample: sort");
  }
  draw_rows<<<rows, kBlock, 0, stream>>>(p, w);
  check(cudaGetLastError(), "sample: draw_rows launch");
}

}  // namespace aigc::cuda

namespace aigc {

namespace {
template <typename T>
cuda::DeviceBuffer<T> to_device(const T* data, int64_t count) {
  cuda::DeviceBuffer<T> buffer(count);
  if (count > 0) {
    cuda::check(cudaMemcpy(buffer.get(), data, count * sizeof(T), cudaMemcpyHostToDevice), "sample: copy in");
  }
  return buffer;
}
template <typename T>
void to_host(T* out, const cuda::DeviceBuffer<T>& buffer) {
  if (buffer.size() > 0) {
    cuda::check(cudaMemcpy(out, buffer.get(), buffer.size() * sizeof(T), cudaMemcpyDeviceToHost), "sample: copy out");
  }
}
}  // namespace

void cuda_synchronize() { cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

void sample_cuda(const SampleParams& p) {
  const int64_t b = p.batch;
  if (b == 0) return;
  const bool with_total = p.logprobs != nullptr || p.num_logprobs > 0;
  // The histories as CSR (TokenCounts' distinct tokens and generated counts).
  std::vector<int64_t> history_offsets;
  std::vector<int32_t> history_tokens, history_generated;
  if (p.history != nullptr) {
    history_offsets.assign(1, 0);
    for (int64_t r = 0; r < b; ++r) {
      const TokenCounts& h = p.history[r];
      history_tokens.insert(history_tokens.end(), h.tokens(), h.tokens() + h.size());
      history_generated.insert(history_generated.end(), h.generated(), h.generated() + h.size());
      history_offsets.push_back(static_cast<int64_t>(history_tokens.size()));
    }
  }
  const int64_t m = p.bias_ids != nullptr ? p.bias_offsets[b] : 0;
  auto logits = to_device(p.logits, b * p.vocab);
  auto seeds = to_device(p.seeds, b), steps = to_device(p.steps, b);
  auto temperature = to_device(p.temperature, b), top_p = to_device(p.top_p, b), min_p = to_device(p.min_p, b);
  auto repetition = to_device(p.repetition_penalty, b), presence = to_device(p.presence_penalty, b);
  auto frequency = to_device(p.frequency_penalty, b);
  auto top_k = to_device(p.top_k, b);
  auto h_offsets = to_device(history_offsets.data(), static_cast<int64_t>(history_offsets.size()));
  auto h_tokens = to_device(history_tokens.data(), static_cast<int64_t>(history_tokens.size()));
  auto h_generated = to_device(history_generated.data(), static_cast<int64_t>(history_generated.size()));
  auto bias_ids = to_device(p.bias_ids, m), bias_offsets = to_device(p.bias_offsets, p.bias_ids ? b + 1 : 0);
  auto bias_values = to_device(p.bias_values, m);
  cuda::DeviceBuffer<int64_t> tokens(b), top_ids(b * p.num_logprobs);
  cuda::DeviceBuffer<float> logprobs(p.logprobs != nullptr ? b : 0), top_logprobs(b * p.num_logprobs);
  cuda::DeviceBuffer<RowStatus> status(b);

  cuda::DeviceSampleParams d{};
  d.logits = logits.get();
  d.batch = b;
  d.vocab = p.vocab;
  d.seeds = seeds.get();
  d.steps = steps.get();
  d.temperature = temperature.get();
  d.top_k = top_k.get();
  d.top_p = top_p.get();
  d.min_p = min_p.get();
  d.repetition_penalty = repetition.get();
  d.presence_penalty = presence.get();
  d.frequency_penalty = frequency.get();
  if (p.history != nullptr) {
    d.history_tokens = h_tokens.get();
    d.history_generated = h_generated.get();
    d.history_offsets = h_offsets.get();
  }
  if (p.bias_ids != nullptr) {
    d.bias_ids = bias_ids.get();
    d.bias_values = bias_values.get();
    d.bias_offsets = bias_offsets.get();
  }
  d.edits_first = p.scratch_logits != nullptr && !with_total;
  d.any_top_k = std::any_of(p.top_k, p.top_k + b, [&](int32_t k) { return k > 0 && k < p.vocab; });
  d.arithmetic = cuda::cpu_arithmetic(active_isa());
  d.num_logprobs = p.num_logprobs;
  d.tokens = tokens.get();
  d.logprobs = p.logprobs != nullptr ? logprobs.get() : nullptr;
  d.top_ids = top_ids.get();
  d.top_logprobs = top_logprobs.get();
  d.status = status.get();
  cuda::sample(d, nullptr);
  cuda::check(cudaStreamSynchronize(nullptr), "sample");
  to_host(p.tokens, tokens);
  if (p.logprobs != nullptr) to_host(p.logprobs, logprobs);
  to_host(p.top_ids, top_ids);
  to_host(p.top_logprobs, top_logprobs);
  to_host(p.status, status);
}

}  // namespace aigc
