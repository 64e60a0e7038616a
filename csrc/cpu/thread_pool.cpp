// The pool behind parallel_for (thread_pool.h).
//
// One job at a time: (work, context, n) and a claim counter that carries the job's generation
// in its high bits, so a pool thread that wakes late and still holds an older job's generation
// can never claim a chunk of a newer job: its compare-and-swap fails. A chunk, once claimed, is
// counted as done by whoever claimed it; the caller returns when all n are done. A claim of job
// G therefore happens only while G's caller is still waiting, so `work` and `context` (the
// caller's) are never used after the call returned.
#include "thread_pool.h"

#if defined(__linux__)
#include <sched.h>
#endif
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

namespace fastinit {
namespace cpu {
namespace {

constexpr int kIndexBits = 32;  // chunk indices per job: up to 2^32 (2^48 elements)
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;

class Pool {
 public:
  // The calling thread's part of parallel_for when it owns the pool (see `busy`).
  int run(int64_t n, int helpers, void (*work)(void*, int64_t), void* context) {
    uint64_t generation;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      while (started_ < helpers) {  // a new thread joins from the job published below on
        try {
          std::thread(&Pool::serve, this, generation_).detach();
        } catch (const std::system_error&) {
          break;  // no more threads to be had (a limit of the process): fill with those there are
        }
        ++started_;
      }
      helpers = std::min(helpers, started_);
      generation = ++generation_ & (~kIndexMask >> kIndexBits);
      work_ = work;
      context_ = context;
      n_ = n;
      done_.store(0, std::memory_order_relaxed);
      claim_.store(generation << kIndexBits, std::memory_order_release);
      wanted_ = helpers;
    }
    for (int h = 0; h < helpers; ++h) wake_.notify_one();
    const int64_t mine = drain(generation, n, work, context);
    if (done_.fetch_add(mine, std::memory_order_acq_rel) + mine != n) {
      std::unique_lock<std::mutex> lock(mutex_);
      finished_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == n; });
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      wanted_ = 0;  // a pool thread not yet awake goes back to sleep
    }
    return helpers + 1;
  }

  // Whether a call owns the pool: one job at a time.
  std::atomic<bool> busy{false};

 private:
  // Claims and runs chunks of job `generation` until none is left; returns how many it ran.
  int64_t drain(uint64_t generation, int64_t n, void (*work)(void*, int64_t), void* context) {
    int64_t ran = 0;
    uint64_t seen = claim_.load(std::memory_order_acquire);
    while (true) {
      if ((seen >> kIndexBits) != generation) return ran;
      const int64_t c = static_cast<int64_t>(seen & kIndexMask);
      if (c >= n) return ran;
      if (!claim_.compare_exchange_weak(seen, seen + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;
      }
      work(context, c);
      ++ran;
      seen = claim_.load(std::memory_order_acquire);
    }
  }

  // A pool thread: sleeps until woken for a job, takes its chunks, reports them done.
  void serve(uint64_t served) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return wanted_ > 0 && generation_ != served; });
      served = generation_;
      --wanted_;
      const uint64_t generation = generation_ & (~kIndexMask >> kIndexBits);
      void (*const work)(void*, int64_t) = work_;
      void* const context = context_;
      const int64_t n = n_;
      lock.unlock();
      const int64_t ran = drain(generation, n, work, context);
      lock.lock();
      // A chunk claimed in this job keeps its caller waiting until counted here.
      if (ran > 0 && done_.fetch_add(ran, std::memory_order_acq_rel) + ran == n) {
        finished_.notify_one();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;      // pool threads wait here for a job
  std::condition_variable finished_;  // the caller waits here for the chunks pool threads took
  // Guarded by mutex_:
  uint64_t generation_ = 0;
  int wanted_ = 0;   // pool threads still to join the current job
  int started_ = 0;  // pool threads started
  void (*work_)(void*, int64_t) = nullptr;
  void* context_ = nullptr;
  int64_t n_ = 0;
  // Claims: generation << kIndexBits | next chunk. done_: chunks finished.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
};

// The pool of this process, made on first use (null when no memory for it). Never destroyed: its
// threads sleep until exit.
std::atomic<Pool*> g_pool{nullptr};

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return p;
  Pool* fresh = new (std::nothrow) Pool();
  if (fresh == nullptr) return nullptr;
  if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;  // another thread made one first
  return p;
}

// A forked child has only the thread that called fork: the parent's pool threads (and whatever
// they held locked) are not there. The child leaves that pool unused and makes its own.
void forget_pool_in_child() { g_pool.store(nullptr, std::memory_order_relaxed); }

// Registered when the module loads, so any later fork is seen.
[[maybe_unused]] const int g_fork_handler = pthread_atfork(nullptr, nullptr, forget_pool_in_child);

}  // namespace

int parallel_for(int64_t n, int threads, void (*work)(void* context, int64_t c), void* context) {
  const int helpers =
      n <= static_cast<int64_t>(kIndexMask) ? static_cast<int>(std::min<int64_t>(threads, n)) - 1
                                             : 0;
  Pool* p = helpers > 0 ? pool() : nullptr;
  if (p == nullptr || p->busy.exchange(true, std::memory_order_acquire)) {
    for (int64_t c = 0; c < n; ++c) work(context, c);
    return 1;
  }
  const int team = p->run(n, helpers, work, context);
  p->busy.store(false, std::memory_order_release);
  return team;
}

int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace cpu
}  // namespace fastinit
