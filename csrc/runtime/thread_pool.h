// The one pool of worker threads every CPU kernel shares. Its size is AIGC_NUM_THREADS
// (default: the hardware threads), read when the pool is first used.
// parallel_for(n, fn, grain) splits [0, n) into up to 4 contiguous ranges per thread (but
// no range under `grain` items: waking a thread costs ~5-10 µs) and runs fn(begin, end) on
// each, the threads (the calling one included) taking the next range as they come free;
// it returns when all are done and rethrows the first exception a range threw. Workers sleep on a condition variable
// between jobs, except inside a LingerScope (the decoder's step), where they first spin
// 200 µs for the next kernel.
#pragma once

#include <cstdint>
#include <functional>

namespace aigc {

int num_threads();

// While one is alive on the calling thread, the pool's workers spin for the next job.
class LingerScope {
 public:
  LingerScope();
  ~LingerScope();
  LingerScope(const LingerScope&) = delete;
  LingerScope& operator=(const LingerScope&) = delete;
};
bool lingering();  // a LingerScope is alive on the calling thread
void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain = 1);

}  // namespace aigc
