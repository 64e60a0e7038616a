// The C++ CPU backend: fills a list of tensors (one FillDescriptor each) in one call.
//
// Work is cut into chunks of at most kChunkElements contract indices (fill_range.h), filled by
// per-instruction-set code (fill_range.cpp) that vectorises Philox across counters. A small fill
// runs on the calling thread; a large one is spread over the threads of thread_pool.h, which
// never wait for a thread that is not running. Every value is a pure function of (seed, stream,
// index), so the output never depends on the thread count or on which thread filled a chunk.
#include "fill_cpu.h"

#include <vector>

#include "fill_range.h"
#include "thread_pool.h"

namespace fastinit {
namespace {

// Elements below which a fill runs on the calling thread: waking pool threads and sharing the
// chunks costs more than it saves below this (measured on fp32 uniform, the cheapest random
// fill per element, on a 2-core machine idle and with one core taken by another process).
constexpr int64_t kParallelMinElements = 4 * cpu::kChunkElements;

struct Work {
  const FillDescriptor* descriptors;
  const cpu::Chunk* chunks;
};

void fill_one_chunk(void* context, int64_t c) {
  const Work& work = *static_cast<const Work*>(context);
  cpu::fill_chunk(work.descriptors, work.chunks[c]);
}

}  // namespace

int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads) {
  const std::vector<cpu::Chunk> chunks = cpu::chunk_list(descriptors, count);
  const int64_t n = static_cast<int64_t>(chunks.size());
  int64_t elements = 0;
  for (const cpu::Chunk& chunk : chunks) elements += chunk.end - chunk.begin;
  Work work{descriptors, chunks.data()};
  const int threads = elements < kParallelMinElements ? 1
                      : num_threads > 0             ? num_threads
                                                    : cpu::available_cpus();
  return cpu::parallel_for(n, threads, fill_one_chunk, &work);
}

}  // namespace fastinit
