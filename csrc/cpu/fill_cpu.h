#pragma once

#include <cstdint>

#include "../fastinit/fill.h"

namespace fastinit {

// Fills every tensor of `descriptors` (already validated) on num_threads threads (<= 0:
// OpenMP's default; never more than there are 65,536-element chunks): an OpenMP team, or in a
// forked child, which must not enter OpenMP, new threads of its own. Returns the number of
// threads that ran the fill.
int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads);

// The instruction set the multi-versioned fill runs with on this CPU.
const char* cpu_simd_level();

}  // namespace fastinit
