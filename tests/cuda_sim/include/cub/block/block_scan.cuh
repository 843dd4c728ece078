// cub::BlockScan's ExclusiveSum for the simulated block (tests/cuda_sim): every thread
// posts its value, then reads the sum of those before it and of all.
#pragma once

#include "simt.h"

namespace cub {

template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[kThreads];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {}
  void ExclusiveSum(T input, T& output, T& total) {
    storage_.values[threadIdx.x] = input;
    __syncthreads();
    T before = 0, all = 0;
    for (int i = 0; i < kThreads; ++i) {
      if (i == static_cast<int>(threadIdx.x)) before = all;
      all += storage_.values[i];
    }
    output = before;
    total = all;
    __syncthreads();
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
