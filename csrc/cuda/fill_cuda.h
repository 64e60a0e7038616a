// Host entry points of the CUDA backend (fill_cuda.cu, compiled by nvcc), declared without CUDA
// headers so the pybind11 binding compiles with the plain C++ compiler. Errors are thrown as
// std::runtime_error / std::invalid_argument carrying the CUDA error name and string.
#pragma once

#include <cstdint>
#include <string>

#include "../fastinit/fill.h"

namespace fastinit {
namespace cuda {

// Threads per block of the fill kernel.
constexpr int kThreadsPerBlock = 256;

// Launches the fused fill of one dtype on `stream` (a cudaStream_t as an integer; 0 is the
// legacy default stream) of device `device`. `table_address` is the device copy of a
// LaunchTable's bytes (launch_table.h); it must stay allocated until the kernel has run, which
// a buffer allocated on the same stream and freed after this call satisfies. Checks the launch.
void launch_fill(uint64_t table_address, int64_t num_descriptors, int64_t num_chunks,
                 int chunk_shift, int32_t dtype, uint64_t stream, int device);

// Validates up to kArgTableCapacity descriptors (launch_table.h) of one dtype and launches
// their fill with the table as the kernel's argument: nothing is staged or copied, so the
// launch can be captured in a CUDA graph. Checks the launch.
void launch_fill_by_value(const FillDescriptor* descriptors, int64_t count, int num_sms,
                          uint64_t stream, int device);

// Runs the kernel's per-thread code on the host over host memory, block by block and thread by
// thread, in launch order (the descriptors' data addresses are host addresses), with the
// block -> (tensor, chunk) mapping of the by-value table or of the uploaded one.
void emulate_fill(const FillDescriptor* descriptors, int64_t count, int chunk_shift,
                  int num_sms, bool by_value);

// Empty when the CUDA runtime can use a device here; otherwise why not (the CUDA error, the
// driver's and the runtime's CUDA versions).
std::string runtime_problem();

// Empty when the fill kernels have code this device can run; otherwise the CUDA error.
std::string device_problem(int device);

int runtime_version();  // CUDART_VERSION this module was built with, e.g. 13000
int driver_version();   // the driver's CUDA version, 0 when no driver is installed

}  // namespace cuda
}  // namespace fastinit
