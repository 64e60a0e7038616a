#pragma once

#include <cstdint>

#include "../fastinit/fill.h"

namespace fastinit {

// Fills every tensor of `descriptors` (already validated) on up to num_threads threads (<= 0: one
// per CPU this process may run on; never more than there are 65,536-element chunks): the calling
// thread alone for a small fill, else the caller and threads of a pool that never make it wait
// for a thread that is not running (thread_pool.h). Fork-safe: a forked child fills on a pool of
// its own. Descriptors whose memory overlaps are filled one after another in their order
// (overlap_phases.h), so the overlap holds the later one's values. Returns the most threads any
// pass of the fill was offered to (1 for a small fill).
int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads);

// The instruction set the multi-versioned fill runs with on this CPU.
const char* cpu_simd_level();

}  // namespace fastinit
