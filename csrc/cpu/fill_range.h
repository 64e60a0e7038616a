// The work of a CPU fill as chunks, and the fill of one chunk: the interface between the threads
// of fill_cpu.cpp and the per-instruction-set code of fill_range.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "../fastinit/fill.h"

namespace fastinit {
namespace cpu {

// Contract indices per chunk (of a contiguous tensor) or at most per box (of a strided one).
constexpr int64_t kChunkElements = kMaxChunkElements;

// Local elements [begin, end) of descriptors[descriptor]: a run of a contiguous tensor or a box
// of a strided one (strided.h).
struct Chunk {
  int64_t descriptor;
  int64_t begin, end;
};

// The chunks of `count` descriptors, in order; each is filled independently of the others.
std::vector<Chunk> chunk_list(const FillDescriptor* descriptors, int64_t count);

// Fills one chunk with the code of the best instruction set this CPU has.
void fill_chunk(const FillDescriptor* descriptors, const Chunk& chunk);

}  // namespace cpu
}  // namespace fastinit
