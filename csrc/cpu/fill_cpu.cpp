// The C++ CPU backend: fills a list of tensors (one FillDescriptor each) in one call.
//
// Work is cut into chunks of at most kChunkElements contract indices (fill_range.h), filled by
// per-instruction-set code (fill_range.cpp) that vectorises Philox across counters. A small fill
// runs on the calling thread; a large one is spread over the threads of thread_pool.h, which
// never wait for a thread that is not running. Every value is a pure function of (seed, stream,
// index), so the output never depends on the thread count or on which thread filled a chunk.
// Descriptors whose memory overlaps are filled in their order (overlap_phases.h).
#include "fill_cpu.h"

#include <algorithm>
#include <vector>

#include "../overlap_phases.h"
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
  std::vector<cpu::Chunk> chunks = cpu::chunk_list(descriptors, count);
  int64_t elements = 0;
  for (const cpu::Chunk& chunk : chunks) elements += chunk.end - chunk.begin;
  const int threads = elements < kParallelMinElements ? 1
                      : num_threads > 0             ? num_threads
                                                    : cpu::available_cpus();
  const std::vector<int32_t> phases =
      count > 1 ? overlap_phases(descriptors, count) : std::vector<int32_t>();
  if (phases.empty()) {  // disjoint memory: one parallel pass
    Work work{descriptors, chunks.data()};
    return cpu::parallel_for(static_cast<int64_t>(chunks.size()), threads, fill_one_chunk, &work);
  }
  // Phase after phase; chunk_list keeps each descriptor's chunks in order, and so does this sort.
  std::stable_sort(chunks.begin(), chunks.end(), [&](const cpu::Chunk& a, const cpu::Chunk& b) {
    return phases[static_cast<size_t>(a.descriptor)] < phases[static_cast<size_t>(b.descriptor)];
  });
  int offered = 1;
  for (size_t begin = 0; begin < chunks.size();) {
    const int32_t phase = phases[static_cast<size_t>(chunks[begin].descriptor)];
    size_t end = begin;
    while (end < chunks.size() && phases[static_cast<size_t>(chunks[end].descriptor)] == phase) {
      ++end;
    }
    Work work{descriptors, chunks.data() + begin};
    offered = std::max(offered, cpu::parallel_for(static_cast<int64_t>(end - begin), threads,
                                                  fill_one_chunk, &work));
    begin = end;
  }
  return offered;
}

}  // namespace fastinit
