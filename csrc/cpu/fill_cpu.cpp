// The C++ CPU backend: fills a list of tensors (one FillDescriptor each) in one call.
//
// Work is cut into chunks of at most kChunkElements contract indices (fill_range.h) and the
// chunks are spread over OpenMP threads; since every value is a pure function of (seed, stream,
// index), the output never depends on the thread count. The chunks themselves are filled by
// per-instruction-set code (fill_range.cpp) that vectorises Philox across counters.
#include "fill_cpu.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "fill_range.h"

namespace fastinit {
namespace {

// libgomp keeps its worker threads between parallel regions and has no fork handler: in a child
// forked after a parallel region ran on the forking thread (one of fastinit's, or one of
// torch's, which shares the library), the next region waits forever for workers that were not
// copied. So a forked child never enters OpenMP: it fills on fresh threads of its own, started
// per call (the values never depend on the thread count).
std::atomic<bool> g_forked_child{false};

void mark_forked_child() { g_forked_child.store(true, std::memory_order_relaxed); }

// Registered when the module loads, so any later fork is seen.
[[maybe_unused]] const int g_fork_handler = pthread_atfork(nullptr, nullptr, mark_forked_child);

// Runs fill_chunk(c) for every c in [0, n) on `threads` new threads (the caller waits), taking
// chunks in order from a shared counter as schedule(dynamic, 1) does.
template <typename FillChunk>
void fill_on_fresh_threads(int threads, int64_t n, const FillChunk& fill_chunk) {
  std::atomic<int64_t> next{0};
  const auto work = [&] {
    for (int64_t c = next.fetch_add(1); c < n; c = next.fetch_add(1)) fill_chunk(c);
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) workers.emplace_back(work);
  for (std::thread& worker : workers) worker.join();
}

}  // namespace

int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads) {
  const std::vector<cpu::Chunk> chunks = cpu::chunk_list(descriptors, count);
  const int64_t n = static_cast<int64_t>(chunks.size());
  const auto fill_chunk = [&](int64_t c) { cpu::fill_chunk(descriptors, chunks[c]); };
  const int threads = static_cast<int>(
      std::min<int64_t>(num_threads > 0 ? num_threads : omp_get_max_threads(), n));
  if (threads <= 1) {
    for (int64_t c = 0; c < n; ++c) fill_chunk(c);
    return 1;
  }
  if (g_forked_child.load(std::memory_order_relaxed)) {
    fill_on_fresh_threads(threads, n, fill_chunk);
    return threads;
  }
  int team = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < n; ++c) {
    if (c == 0) team = omp_get_num_threads();
    fill_chunk(c);
  }
  return team;
}

}  // namespace fastinit
