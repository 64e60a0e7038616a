#pragma once

#include <cstdint>

#include "../fastinit/fill.h"

namespace fastinit {

// Fills every tensor of `descriptors`; num_threads <= 0 uses OpenMP's default.
void fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads);

// The instruction set the multi-versioned fill runs with on this CPU.
const char* cpu_simd_level();

}  // namespace fastinit
