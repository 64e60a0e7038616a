// Threads for the CPU fill that never make a call wait for a thread that is not running.
#pragma once

#include <cstdint>

namespace fastinit {
namespace cpu {

// Runs work(context, c) once for every c in [0, n), on the calling thread and on up to
// threads - 1 threads of a pool kept between calls. Chunks are claimed one at a time from a
// shared counter: the caller claims too, so a pool thread that is slow to start (descheduled by
// another process) only takes fewer chunks, and the caller waits only for the chunks that pool
// threads have claimed and not finished. Pool threads sleep in the kernel between calls.
//
// When another call is already using the pool (from another thread), this one runs on its
// caller alone. A forked child starts a pool of its own. Returns the number of threads the work
// was offered to: the caller and the pool threads woken for it (1 when n <= 1 or threads <= 1).
int parallel_for(int64_t n, int threads, void (*work)(void* context, int64_t c), void* context);

// The number of CPUs this process may run on (the default thread count).
int available_cpus();

}  // namespace cpu
}  // namespace fastinit
