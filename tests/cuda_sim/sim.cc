// The CUDA sampler's kernels (csrc/cuda/sampling_kernels.cuh) built for the CPU with a
// simulated block (include/simt.h), behind one C function that tests call through ctypes:
// the same launches as cuda/sampling.cu, blocks one after another, and CUB's stable
// descending segmented sort done by std::stable_sort (which keeps -0 and +0 equal too).
#include <algorithm>
#include <numeric>
#include <thread>
#include <vector>

#include "cuda/sampling_kernels.cuh"

namespace {

using namespace aigc;
using namespace aigc::cuda;
using namespace aigc::cuda::sampling;

template <typename Kernel>
void launch(int64_t blocks, const Kernel& kernel) {
  for (int64_t b = 0; b < blocks; ++b) {
    std::barrier<> block(kBlock);
    std::vector<std::barrier<>*> warps;
    for (int w = 0; w < kWarps; ++w) sim_warp_barrier[w] = new std::barrier<>(32);
    sim_block_barrier = &block;
    std::vector<std::thread> threads;
    for (int t = 0; t < kBlock; ++t) {
      threads.emplace_back([&, t] {
        threadIdx.x = t;
        blockIdx.x = static_cast<unsigned>(b);
        kernel();
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int w = 0; w < kWarps; ++w) delete sim_warp_barrier[w];
  }
}

}  // namespace

// DeviceSampleParams' fields, host memory; arithmetic = (width, fused, halving_sum).
extern "C" void sim_sample(const float* logits, int64_t batch, int64_t vocab, const uint64_t* seeds,
                           const uint64_t* steps, const float* temperature, const int32_t* top_k, const float* top_p,
                           const float* min_p, const float* repetition, const float* presence,
                           const float* frequency, const int32_t* history_tokens, const int32_t* history_generated,
                           const int64_t* history_offsets, const int64_t* bias_ids, const float* bias_values,
                           const int64_t* bias_offsets, int edits_first, int width, int fused, int halving_sum,
                           int num_logprobs, int64_t* tokens, float* logprobs, int64_t* top_ids, float* top_logprobs,
                           int32_t* status) {
  DeviceSampleParams p{};
  p.logits = logits;
  p.batch = batch;
  p.vocab = vocab;
  p.seeds = seeds;
  p.steps = steps;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.repetition_penalty = repetition;
  p.presence_penalty = presence;
  p.frequency_penalty = frequency;
  p.history_tokens = history_tokens;
  p.history_generated = history_generated;
  p.history_offsets = history_offsets;
  p.bias_ids = bias_ids;
  p.bias_values = bias_values;
  p.bias_offsets = bias_offsets;
  p.edits_first = edits_first != 0;
  p.any_top_k = true;
  p.arithmetic = {width, fused != 0, halving_sum != 0};
  p.num_logprobs = num_logprobs;
  p.tokens = tokens;
  p.logprobs = logprobs;
  p.top_ids = top_ids;
  p.top_logprobs = top_logprobs;
  p.status = reinterpret_cast<RowStatus*>(status);
  const int64_t cells = batch * vocab;
  std::vector<float> edited(cells), sorted(cells), probs(cells), kept(cells), a(cells), b(cells);
  std::vector<float> red(batch * (vocab / 128 + 1));
  std::vector<int32_t> sorted_ids(cells), kept_ids(cells), a_ids(cells), b_ids(cells);
  std::vector<RowState> state(batch);
  Work w{};
  w.edited = edited.data();
  w.sorted = sorted.data();
  w.sorted_ids = sorted_ids.data();
  w.probs = probs.data();
  w.kept = {kept.data(), kept_ids.data()};
  w.a = {a.data(), a_ids.data()};
  w.b = {b.data(), b_ids.data()};
  w.red = red.data();
  w.state = state.data();
  launch(batch, [&] { prepare_rows(p, w); });
  std::vector<int32_t> order(vocab);
  for (int64_t r = 0; r < batch; ++r) {
    if (state[r].status.code != SampleStatus::kOk) continue;  // NaN would break the comparison
    const float* x = w.edited + r * vocab;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t i, int32_t j) { return x[i] > x[j]; });
    for (int64_t i = 0; i < vocab; ++i) {
      sorted[r * vocab + i] = x[order[i]];
      sorted_ids[r * vocab + i] = order[i];
    }
  }
  launch(batch, [&] { draw_rows(p, w); });
}
