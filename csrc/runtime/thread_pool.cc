// See thread_pool.h. A call from inside a worker (a kernel calling a kernel) runs serially
// rather than waiting on the pool it occupies; concurrent callers take turns. Threads
// spin briefly for the next job, then sleep on a condition variable.
#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace aigc {
namespace {

int threads_from_env() {
  const char* value = std::getenv("AIGC_NUM_THREADS");
  if (value == nullptr || *value == '\0') {
    const unsigned hardware = std::thread::hardware_concurrency();
    return hardware > 0 ? static_cast<int>(hardware) : 1;
  }
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  if (*end != '\0' || parsed < 1 || parsed > 1024) {
    throw std::invalid_argument(std::string("AIGC_NUM_THREADS: expected a positive integer, got '") + value + "'");
  }
  return static_cast<int>(parsed);
}

thread_local bool in_worker = false;
thread_local int linger_depth = 0;  // LingerScopes alive on this thread

// Inside a LingerScope, workers spin this long for the next job before sleeping: a decode
// step calls ~35 kernels in a row, and waking a sleeping thread costs 10-60 µs (more on a
// busy machine), as much as a small kernel itself. Outside one they sleep at once: a
// spinning worker would take a core from the onnxruntime run that follows a latent draw
// (digits-gan at batch 64: 0.70× plain onnxruntime with spinning, 1.0× without).
constexpr auto kSpin = std::chrono::microseconds(200);

// A job is cut into this many chunks per thread, and every thread takes the next chunk
// until none is left: when another process or the server's event loop holds a core for a
// few milliseconds, the other threads take over its share instead of waiting for it (with
// one fixed range per thread, a kernel lasts as long as its most delayed thread).
constexpr int kChunksPerThread = 4;

template <typename Done>
bool spin_until(const Done& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 0 && std::chrono::steady_clock::now() > deadline) return false;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

class ThreadPool {
 public:
  explicit ThreadPool(int size) : size_(size) {
    for (int i = 1; i < size; ++i) workers_.emplace_back([this] { work(); });
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  int size() const { return size_; }

  void run(int64_t n, int chunks, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> turn(caller_mutex_);
    uint64_t generation;
    {
      // Under the mutex: a worker claims chunks under it, and deciding to sleep cannot miss the news.
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      n_ = n;
      chunks_ = chunks;
      next_chunk_ = 0;
      completed_.store(0, std::memory_order_relaxed);
      error_ = nullptr;
      linger_ = linger_depth > 0;
      generation = generation_.fetch_add(1, std::memory_order_release) + 1;
    }
    wake_.notify_all();
    run_chunks(generation);
    auto finished = [this, chunks] { return completed_.load(std::memory_order_acquire) == chunks; };
    if (!spin_until(finished)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, finished);
    }
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Runs chunks of job `generation` until none is left to claim (the job may be over already).
  void run_chunks(uint64_t generation) {
    for (;;) {
      int64_t begin, end;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (generation_.load(std::memory_order_relaxed) != generation || next_chunk_ == chunks_) return;
        const int chunk = next_chunk_++;
        begin = n_ * chunk / chunks_;
        end = n_ * (chunk + 1) / chunks_;
      }
      // The job stays alive until this chunk completes: its caller waits for every chunk.
      try {
        if (begin < end) (*job_)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (completed_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks_) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  void work() {
    in_worker = true;
    uint64_t seen = 0;
    for (;;) {
      auto has_news = [&] { return stopping_.load() || generation_.load(std::memory_order_acquire) != seen; };
      if (!(linger_ && spin_until(has_news))) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, has_news);
      }
      if (stopping_) return;
      seen = generation_.load(std::memory_order_acquire);
      run_chunks(seen);
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex caller_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // The job: written under mutex_ by the caller as generation_ moves on; chunks are claimed under it.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0;
  int chunks_ = 0;
  int next_chunk_ = 0;
  std::atomic<int> completed_{0};
  bool linger_ = false;  // spin for the next job after this one
  std::exception_ptr error_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
};

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at interpreter exit can
  // deadlock; the process ends them.
  static ThreadPool* instance = new ThreadPool(threads_from_env());
  return *instance;
}

}  // namespace

int num_threads() { return pool().size(); }

LingerScope::LingerScope() { ++linger_depth; }
LingerScope::~LingerScope() { --linger_depth; }
bool lingering() { return linger_depth > 0; }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(int64_t{pool().size()} * kChunksPerThread, (n + grain - 1) / grain);
  if (in_worker || pool().size() == 1 || chunks <= 1) return fn(0, n);
  pool().run(n, static_cast<int>(chunks), fn);
}

}  // namespace aigc
