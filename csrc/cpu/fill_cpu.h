#pragma once

#include <cstdint>

#include "../fastinit/fill.h"

namespace fastinit {

// Fills every tensor of `descriptors` (already validated) on num_threads OpenMP threads
// (<= 0: OpenMP's default; one when a single chunk, or in a child forked after a parallel
// region ran). Returns the number of threads that ran the fill.
int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads);

// The instruction set the multi-versioned fill runs with on this CPU.
const char* cpu_simd_level();

}  // namespace fastinit
