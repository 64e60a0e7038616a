// The CUDA backend: one fused launch fills every tensor of one dtype on one device.
//
// The apex multi-tensor pattern: the host packs the FillDescriptors and a block -> (tensor,
// chunk) map into one table (launch_table.h) that is copied to the device in one stream-ordered
// upload; block b of the grid fills chunk chunks[b].chunk of tensor chunks[b].tensor (the
// per-thread code is fill_chunk.cuh). The numbers come from the same header-only Philox and
// distribution math as the CPU path; built with --fmad=false (no contraction, every fma is
// explicit), IEEE division and square root and no flush-to-zero, fp32-math values equal the CPU
// path's bit for bit.
#include "fill_cuda.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#if CUDART_VERSION < 12010
#error "the fill kernels take up to 32 KB of arguments: CUDA 12.1 or newer is needed"
#endif

#include <stdexcept>
#include <string>

#include "fill_chunk.cuh"
#include "launch_table.h"

namespace fastinit {
namespace cuda {
namespace {

template <int kDType>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_kernel(const FillDescriptor* __restrict__ descriptors,
                const ChunkRef* __restrict__ chunks, int chunk_shift) {
  const ChunkRef ref = chunks[blockIdx.x];
  fill_block<kDType>(descriptors[ref.tensor], ref.chunk, chunk_shift,
                     static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
}

// The by-value layout: the table is the kernel's argument, read in place (__grid_constant__).
template <int kDType>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_kernel_by_value(const __grid_constant__ ArgTable table, int chunk_shift) {
  const ChunkRef ref = arg_table_chunk(table, blockIdx.x);
  fill_block<kDType>(table.descriptors[ref.tensor], ref.chunk, chunk_shift,
                     static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
}

std::string error_text(cudaError_t error) {
  return std::string(cudaGetErrorName(error)) + " (" + cudaGetErrorString(error) + ")";
}

std::string version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case kFloat32: return "float32";
    case kFloat64: return "float64";
    case kFloat16: return "float16";
    case kBFloat16: return "bfloat16";
    default: return "unknown";
  }
}

void check_dtype(int32_t dtype) {
  if (dtype < kFloat32 || dtype > kBFloat16) {
    throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
  }
}

// The driver's current-context calls, reached through the runtime's entry-point query, so the
// module needs no link against libcuda.
struct ContextCalls {
  PFN_cuCtxGetCurrent_v4000 get = nullptr;
  PFN_cuCtxSetCurrent_v4000 set = nullptr;
};

template <typename Fn>
Fn driver_entry_point(const char* symbol) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  const cudaError_t error =
      cudaGetDriverEntryPointByVersion(symbol, &fn, 4000, cudaEnableDefault, &found);
#else
  const cudaError_t error = cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault, &found);
#endif
  if (error != cudaSuccess || found != cudaDriverEntryPointSuccess || fn == nullptr) {
    cudaGetLastError();
    throw std::runtime_error(std::string("fastinit CUDA: the driver has no ") + symbol + ": " +
                             error_text(error));
  }
  return reinterpret_cast<Fn>(fn);
}

const ContextCalls& context_calls() {
  static const ContextCalls calls{
      driver_entry_point<PFN_cuCtxGetCurrent_v4000>("cuCtxGetCurrent"),
      driver_entry_point<PFN_cuCtxSetCurrent_v4000>("cuCtxSetCurrent")};
  return calls;
}

// Makes `device` current for this thread and, on exit, makes current again exactly the context
// that was current before, or none. (This module links the CUDA runtime statically, so its
// current device is its own; cudaGetDevice answers 0 when no context is current, and restoring
// that device would create a context on GPU 0 that nothing asked for. torch's device guards
// likewise avoid creating a primary context.)
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    const ContextCalls& calls = context_calls();
    if (calls.get(&previous_) != CUDA_SUCCESS) {
      throw std::runtime_error("fastinit CUDA: cannot read this thread's current CUDA context");
    }
    int current = -1;
    if (previous_ != nullptr && cudaGetDevice(&current) != cudaSuccess) {
      cudaGetLastError();
      current = -1;
    }
    if (previous_ == nullptr || current != device) {
      const cudaError_t error = cudaSetDevice(device);
      if (error != cudaSuccess) {
        cudaGetLastError();
        throw std::runtime_error("fastinit CUDA: cannot select device " +
                                 std::to_string(device) + ": " + error_text(error));
      }
      switched_ = true;
    }
  }
  ~DeviceScope() {
    if (switched_) context_calls().set(previous_);
    cudaGetLastError();
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  CUcontext previous_ = nullptr;
  bool switched_ = false;
};

template <int kDType>
void launch_typed(const FillDescriptor* descriptors, const ChunkRef* chunks, int64_t num_chunks,
                  int chunk_shift, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(num_chunks));
  fill_kernel<kDType><<<grid, kThreadsPerBlock, 0, stream>>>(descriptors, chunks, chunk_shift);
}

template <int kDType>
void launch_typed_by_value(const ArgTable& table, int64_t num_chunks, int chunk_shift,
                           cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(num_chunks));
  fill_kernel_by_value<kDType><<<grid, kThreadsPerBlock, 0, stream>>>(table, chunk_shift);
}

void check_launch(int32_t dtype, int64_t num_chunks, int device) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("fastinit CUDA fill: launch of the ") +
                             dtype_name(dtype) + " fill (" + std::to_string(num_chunks) +
                             " blocks) on device " + std::to_string(device) +
                             " failed: " + error_text(error));
  }
}

template <int kDType>
cudaError_t kernel_attributes() {
  cudaFuncAttributes attributes;
  cudaError_t error = cudaFuncGetAttributes(&attributes, fill_kernel<kDType>);
  if (error == cudaSuccess) error = cudaFuncGetAttributes(&attributes, fill_kernel_by_value<kDType>);
  return error;
}

}  // namespace

void launch_fill(uint64_t table_address, int64_t num_descriptors, int64_t num_chunks,
                 int chunk_shift, int32_t dtype, uint64_t stream, int device) {
  check_dtype(dtype);
  if (num_chunks <= 0) return;
  if (num_chunks > kMaxGridBlocks || num_descriptors <= 0) {
    throw std::invalid_argument("launch of " + std::to_string(num_chunks) + " chunks over " +
                                std::to_string(num_descriptors) + " descriptors");
  }
  if (chunk_shift < kMinChunkShift || chunk_shift > kMaxChunkShift) {
    throw std::invalid_argument("chunk_shift " + std::to_string(chunk_shift) + " out of range");
  }
  if (table_address == 0 || table_address % alignof(FillDescriptor) != 0) {
    throw std::invalid_argument("descriptor table address " + std::to_string(table_address) +
                                " is null or misaligned");
  }
  const DeviceScope scope(device);
  const auto* descriptors = reinterpret_cast<const FillDescriptor*>(table_address);
  const auto* chunks = reinterpret_cast<const ChunkRef*>(
      table_address + static_cast<uint64_t>(num_descriptors) * sizeof(FillDescriptor));
  const auto s = reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(stream));
  switch (dtype) {
    case kFloat32: launch_typed<kFloat32>(descriptors, chunks, num_chunks, chunk_shift, s); break;
    case kFloat64: launch_typed<kFloat64>(descriptors, chunks, num_chunks, chunk_shift, s); break;
    case kFloat16: launch_typed<kFloat16>(descriptors, chunks, num_chunks, chunk_shift, s); break;
    default: launch_typed<kBFloat16>(descriptors, chunks, num_chunks, chunk_shift, s); break;
  }
  check_launch(dtype, num_chunks, device);
}

void launch_fill_by_value(const FillDescriptor* descriptors, int64_t count, int num_sms,
                          uint64_t stream, int device) {
  const LaunchPlan plan = plan_launch(descriptors, count, num_sms);
  const ArgTable table = build_arg_table(descriptors, count, plan);
  if (plan.num_chunks == 0) return;
  const DeviceScope scope(device);
  const auto s = reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(stream));
  const int64_t n = plan.num_chunks;
  const int shift = plan.chunk_shift;
  switch (plan.dtype) {
    case kFloat32: launch_typed_by_value<kFloat32>(table, n, shift, s); break;
    case kFloat64: launch_typed_by_value<kFloat64>(table, n, shift, s); break;
    case kFloat16: launch_typed_by_value<kFloat16>(table, n, shift, s); break;
    default: launch_typed_by_value<kBFloat16>(table, n, shift, s); break;
  }
  check_launch(plan.dtype, n, device);
}

namespace {

template <int kDType>
void emulate_block(const FillDescriptor& d, uint32_t chunk, int chunk_shift) {
  for (int tid = 0; tid < kThreadsPerBlock; ++tid) {
    fill_block<kDType>(d, chunk, chunk_shift, tid, kThreadsPerBlock);
  }
}

void emulate_block(int32_t dtype, const FillDescriptor& d, uint32_t chunk, int chunk_shift) {
  switch (dtype) {
    case kFloat32: return emulate_block<kFloat32>(d, chunk, chunk_shift);
    case kFloat64: return emulate_block<kFloat64>(d, chunk, chunk_shift);
    case kFloat16: return emulate_block<kFloat16>(d, chunk, chunk_shift);
    default: return emulate_block<kBFloat16>(d, chunk, chunk_shift);
  }
}

}  // namespace

void emulate_fill(const FillDescriptor* descriptors, int64_t count, int chunk_shift,
                  int num_sms, bool by_value) {
  const LaunchPlan plan = plan_launch(descriptors, count, num_sms, chunk_shift);
  if (by_value) {
    const ArgTable table = build_arg_table(descriptors, count, plan);
    for (int64_t block = 0; block < plan.num_chunks; ++block) {
      const ChunkRef ref = arg_table_chunk(table, static_cast<uint32_t>(block));
      emulate_block(plan.dtype, table.descriptors[ref.tensor], ref.chunk, plan.chunk_shift);
    }
    return;
  }
  const LaunchTable table = build_launch_table(descriptors, count, num_sms, chunk_shift);
  const auto* d = reinterpret_cast<const FillDescriptor*>(table.bytes.data());
  const auto* chunks = reinterpret_cast<const ChunkRef*>(
      table.bytes.data() + static_cast<size_t>(count) * sizeof(FillDescriptor));
  for (int64_t block = 0; block < table.num_chunks; ++block) {
    emulate_block(table.dtype, d[chunks[block].tensor], chunks[block].chunk, table.chunk_shift);
  }
}

int runtime_version() { return CUDART_VERSION; }

int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

std::string runtime_problem() {
  const int driver = driver_version();
  const std::string versions =
      (driver == 0 ? std::string("no CUDA driver found")
                   : "the driver supports CUDA " + version_text(driver)) +
      "; fastinit._cuda was built with CUDA runtime " + version_text(CUDART_VERSION);
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return "cudaGetDeviceCount failed: " + error_text(error) + "; " + versions;
  }
  if (count == 0) return "no CUDA device is visible; " + versions;
  return "";
}

std::string device_problem(int device) {
  const DeviceScope scope(device);
  cudaError_t error = kernel_attributes<kFloat32>();
  if (error == cudaSuccess) error = kernel_attributes<kFloat64>();
  if (error == cudaSuccess) error = kernel_attributes<kFloat16>();
  if (error == cudaSuccess) error = kernel_attributes<kBFloat16>();
  if (error == cudaSuccess) return "";
  cudaGetLastError();
  cudaDeviceProp prop;
  std::string name = "device " + std::to_string(device);
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    name += " (" + std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
            std::to_string(prop.minor) + ")";
  }
  cudaGetLastError();
  return "the fill kernels cannot run on " + name + ": " + error_text(error) +
         "; rebuild with TORCH_CUDA_ARCH_LIST covering it";
}

}  // namespace cuda
}  // namespace fastinit
