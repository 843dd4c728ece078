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

#include "cuda/device.h"
#include "cuda/sampling.h"
#include "cuda/sampling_kernels.cuh"

namespace aigc::cuda {
namespace {

using namespace sampling;

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
