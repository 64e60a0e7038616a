// The metadata of one fused CUDA launch (the apex multi-tensor pattern), built on the host and
// read by fill_cuda.cu's kernels (one thread block per chunk): up to kArgTableCapacity
// descriptors travel by value as the kernel's argument (ArgTable); more go as the packed
// FillDescriptors followed by a block -> (tensor, chunk) map, copied to the device in one
// stream-ordered upload (LaunchTable). Plain C++, so the pybind11 binding builds it without
// CUDA headers.
//
// A contiguous descriptor's chunks are cut in contract-index space, not in memory: chunk k covers the global
// indices [(floor(first_index / C) + k) * C, ... + C) clipped to the tensor, C = 2^chunk_shift.
// So a chunk always starts on a Philox block and on a 16-byte store group whatever first_index
// is, and its Philox block indices share their high word (C / 4 divides 2^32), which keeps
// 64-bit index math out of the kernel's inner loop.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../descriptor_check.h"
#include "../fastinit/fill.h"

namespace fastinit {
namespace cuda {

// One entry of the block -> (tensor, chunk) map.
struct ChunkRef {
  uint32_t tensor;  // index into the descriptor table
  uint32_t chunk;   // chunk of that tensor, counted from the chunk holding first_index
};
static_assert(sizeof(ChunkRef) == 8, "ChunkRef is read by the kernel as two 32-bit words");
static_assert(sizeof(FillDescriptor) % alignof(FillDescriptor) == 0 &&
                  alignof(FillDescriptor) % alignof(ChunkRef) == 0,
              "the descriptors and the map after them stay aligned");

constexpr int shift_of(int64_t power_of_two) {
  return power_of_two > 1 ? 1 + shift_of(power_of_two / 2) : 0;
}
constexpr int kMaxChunkShift = shift_of(kMaxChunkElements);  // 65,536 (apex, PyTorch foreach)
constexpr int kMinChunkShift = shift_of(kCudaMinChunkElements);  // 256 threads x 8 halves
static_assert((int64_t{1} << kMaxChunkShift) == kMaxChunkElements &&
                  (int64_t{1} << kMinChunkShift) == kCudaMinChunkElements,
              "chunk sizes are powers of two");
constexpr int64_t kMaxGridBlocks = 2147483647;  // gridDim.x limit

// Chunks of one tensor under a chunk size of 2^shift (0 for an empty tensor). A strided
// descriptor is cut in its local row-major order instead: chunk k covers local elements
// [k * C, (k + 1) * C).
inline int64_t chunk_count(const FillDescriptor& d, int shift) {
  if (d.numel <= 0) return 0;
  if (!is_contiguous(d)) return ((d.numel - 1) >> shift) + 1;
  const uint64_t first = static_cast<uint64_t>(d.first_index);
  const uint64_t last = first + static_cast<uint64_t>(d.numel) - 1;
  return static_cast<int64_t>((last >> shift) - (first >> shift) + 1);
}

// Largest chunk that still gives every SM a few blocks: small fills get small chunks so that a
// few-MB tensor does not run on a handful of SMs; big fills keep 64K-element chunks.
inline int choose_chunk_shift(const FillDescriptor* d, int64_t count, int num_sms) {
  const int64_t wanted = 4 * static_cast<int64_t>(num_sms > 0 ? num_sms : 1);
  int shift = kMaxChunkShift;
  for (; shift > kMinChunkShift; --shift) {
    int64_t chunks = 0;
    for (int64_t i = 0; i < count && chunks < wanted; ++i) chunks += chunk_count(d[i], shift);
    if (chunks >= wanted) break;
  }
  return shift;
}

// Descriptor i can be written (descriptor_check.h) and has the launch's dtype.
inline void check_descriptor(const FillDescriptor& d, int64_t i, int32_t dtype) {
  fastinit::check_descriptor(d, i);
  if (d.dtype != dtype) {
    throw std::invalid_argument("descriptor " + std::to_string(i) + ": dtype: code " +
                                std::to_string(d.dtype) + " differs from the launch's dtype code " +
                                std::to_string(dtype) + " (one launch fills one dtype)");
  }
}

// What every launch layout needs: the validated descriptors' dtype, chunk size and chunk count.
struct LaunchPlan {
  int64_t num_chunks = 0;
  int chunk_shift = kMaxChunkShift;
  int32_t dtype = kFloat32;
};

// Validates `count` descriptors of one dtype and plans their launch. chunk_shift 0 picks the
// chunk size for a device with num_sms multiprocessors; otherwise it is used as given.
inline LaunchPlan plan_launch(const FillDescriptor* d, int64_t count, int num_sms,
                              int chunk_shift = 0) {
  LaunchPlan plan;
  if (chunk_shift != 0 && (chunk_shift < kMinChunkShift || chunk_shift > kMaxChunkShift)) {
    throw std::invalid_argument("chunk_shift " + std::to_string(chunk_shift) + " is outside [" +
                                std::to_string(kMinChunkShift) + ", " +
                                std::to_string(kMaxChunkShift) + "]");
  }
  if (count > static_cast<int64_t>(UINT32_MAX)) {
    throw std::invalid_argument("too many descriptors for one launch: " + std::to_string(count));
  }
  plan.dtype = count > 0 ? d[0].dtype : kFloat32;
  for (int64_t i = 0; i < count; ++i) check_descriptor(d[i], i, plan.dtype);
  plan.chunk_shift = chunk_shift != 0 ? chunk_shift : choose_chunk_shift(d, count, num_sms);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t chunks = chunk_count(d[i], plan.chunk_shift);
    if (chunks > static_cast<int64_t>(UINT32_MAX)) {
      throw std::invalid_argument("descriptor " + std::to_string(i) + ": " +
                                  std::to_string(d[i].numel) + " elements is too many chunks");
    }
    plan.num_chunks += chunks;
  }
  if (plan.num_chunks > kMaxGridBlocks) {
    throw std::invalid_argument("one launch of " + std::to_string(plan.num_chunks) +
                                " chunks exceeds the grid limit");
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Layout 1, up to kArgTableCapacity descriptors: the table is the kernel's argument, by value
// (PyTorch's MultiTensorApply pattern). No host staging, copy or device allocation, and a CUDA
// graph captures the launch with its table.

// Kernel parameter space: 32,764 bytes on Volta and later with CUDA 12.1 or newer.
constexpr size_t kMaxKernelParamBytes = 32764;
// Descriptors one by-value table holds (room is left for the kernel's other argument).
constexpr int64_t kArgTableCapacity =
    (kMaxKernelParamBytes - 64) / (sizeof(FillDescriptor) + sizeof(uint32_t)) - 1;

// The non-empty descriptors of a launch, and where each one's blocks start in the grid.
struct ArgTable {
  FillDescriptor descriptors[kArgTableCapacity];
  uint32_t first_block[kArgTableCapacity + 1];  // first_block[count] = the grid size
  int32_t count;
};
static_assert(sizeof(ArgTable) + 64 <= kMaxKernelParamBytes, "the table fits a kernel argument");

// Descriptors with no chunk are left out, so block b belongs to the descriptor whose
// [first_block[i], first_block[i + 1]) holds it: the last i with first_block[i] <= b.
inline ArgTable build_arg_table(const FillDescriptor* d, int64_t count, const LaunchPlan& plan) {
  if (count > kArgTableCapacity) {
    throw std::invalid_argument(std::to_string(count) + " descriptors exceed the " +
                                std::to_string(kArgTableCapacity) +
                                " a launch passes as its argument");
  }
  ArgTable t{};
  uint32_t blocks = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t chunks = chunk_count(d[i], plan.chunk_shift);
    if (chunks == 0) continue;
    t.descriptors[t.count] = d[i];
    t.first_block[t.count] = blocks;
    blocks += static_cast<uint32_t>(chunks);
    ++t.count;
  }
  t.first_block[t.count] = blocks;
  return t;
}

// (descriptor, chunk) of grid block `block` of a by-value launch.
FASTINIT_HD ChunkRef arg_table_chunk(const ArgTable& t, uint32_t block) {
  int lo = 0, hi = t.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (t.first_block[mid] <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return ChunkRef{static_cast<uint32_t>(lo), block - t.first_block[lo]};
}

// ---------------------------------------------------------------------------------------------
// Layout 2, more descriptors: bytes copied to the device before the launch (descriptors, then
// one ChunkRef per grid block).

struct LaunchTable {
  std::vector<uint8_t> bytes;  // descriptors, then num_chunks ChunkRefs
  int64_t num_descriptors = 0;
  int64_t num_chunks = 0;
  int chunk_shift = kMaxChunkShift;
  int32_t dtype = kFloat32;
};

// Validates `count` descriptors of one dtype and lays out their uploaded launch table
// (chunk_shift: see plan_launch).
inline LaunchTable build_launch_table(const FillDescriptor* d, int64_t count, int num_sms,
                                      int chunk_shift = 0) {
  const LaunchPlan plan = plan_launch(d, count, num_sms, chunk_shift);
  LaunchTable t;
  t.num_descriptors = count;
  t.num_chunks = plan.num_chunks;
  t.chunk_shift = plan.chunk_shift;
  t.dtype = plan.dtype;
  const size_t descriptor_bytes = static_cast<size_t>(count) * sizeof(FillDescriptor);
  t.bytes.resize(descriptor_bytes + static_cast<size_t>(t.num_chunks) * sizeof(ChunkRef));
  if (descriptor_bytes) std::memcpy(t.bytes.data(), d, descriptor_bytes);
  ChunkRef* refs = reinterpret_cast<ChunkRef*>(t.bytes.data() + descriptor_bytes);
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t chunks = static_cast<uint32_t>(chunk_count(d[i], t.chunk_shift));
    for (uint32_t c = 0; c < chunks; ++c) *refs++ = ChunkRef{static_cast<uint32_t>(i), c};
  }
  return t;
}

}  // namespace cuda
}  // namespace fastinit
