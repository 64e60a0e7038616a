// The metadata of one fused CUDA launch (the apex multi-tensor pattern): the packed
// FillDescriptors followed by a block -> (tensor, chunk) map, built on the host, copied to the
// device in one stream-ordered upload, and read by fill_cuda.cu's kernel (one thread block per
// chunk). Plain C++, so the pybind11 binding builds it without CUDA headers.
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

inline void check_descriptor(const FillDescriptor& d, int64_t i, int32_t dtype) {
  const std::string where = "descriptor " + std::to_string(i) + ": ";
  if (d.dtype != dtype) {
    throw std::invalid_argument(where + "dtype code " + std::to_string(d.dtype) +
                                " differs from the launch's dtype code " + std::to_string(dtype) +
                                " (one launch fills one dtype)");
  }
  if (d.dtype < kFloat32 || d.dtype > kBFloat16) {
    throw std::invalid_argument(where + "unknown dtype code " + std::to_string(d.dtype));
  }
  if (d.dist < kConstant || d.dist > kTruncNormalFp64) {
    throw std::invalid_argument(where + "unknown distribution code " + std::to_string(d.dist));
  }
  if (d.numel < 0 || d.first_index < 0) {
    throw std::invalid_argument(where + "numel " + std::to_string(d.numel) + " and first_index " +
                                std::to_string(d.first_index) + " must be >= 0");
  }
  if (d.numel > 0 && d.data == 0) throw std::invalid_argument(where + "null data address");
  if (d.ndim < 1 || d.ndim > kMaxDims) {
    throw std::invalid_argument(where + "ndim " + std::to_string(d.ndim) + " is outside [1, " +
                                std::to_string(kMaxDims) + "]");
  }
  int64_t numel = 1;
  for (int k = 0; k < d.ndim; ++k) {
    if (d.size[k] < 0 || d.stride[k] < 0 || d.global_stride[k] < 0) {
      throw std::invalid_argument(where + "dim " + std::to_string(k) + ": size " +
                                  std::to_string(d.size[k]) + ", stride " +
                                  std::to_string(d.stride[k]) + " and global stride " +
                                  std::to_string(d.global_stride[k]) + " must be >= 0");
    }
    numel *= d.size[k];
  }
  if (numel != d.numel) {
    throw std::invalid_argument(where + "numel " + std::to_string(d.numel) +
                                " differs from the product of its sizes, " + std::to_string(numel));
  }
}

struct LaunchTable {
  std::vector<uint8_t> bytes;  // descriptors, then num_chunks ChunkRefs
  int64_t num_descriptors = 0;
  int64_t num_chunks = 0;
  int chunk_shift = kMaxChunkShift;
  int32_t dtype = kFloat32;
};

// Validates `count` descriptors of one dtype and lays out their launch table. chunk_shift 0
// picks the chunk size for a device with num_sms multiprocessors; otherwise it is used as given.
inline LaunchTable build_launch_table(const FillDescriptor* d, int64_t count, int num_sms,
                                      int chunk_shift = 0) {
  LaunchTable t;
  if (chunk_shift != 0 && (chunk_shift < kMinChunkShift || chunk_shift > kMaxChunkShift)) {
    throw std::invalid_argument("chunk_shift " + std::to_string(chunk_shift) + " is outside [" +
                                std::to_string(kMinChunkShift) + ", " +
                                std::to_string(kMaxChunkShift) + "]");
  }
  if (count > static_cast<int64_t>(UINT32_MAX)) {
    throw std::invalid_argument("too many descriptors for one launch: " + std::to_string(count));
  }
  t.num_descriptors = count;
  t.dtype = count > 0 ? d[0].dtype : kFloat32;
  for (int64_t i = 0; i < count; ++i) check_descriptor(d[i], i, t.dtype);
  t.chunk_shift = chunk_shift != 0 ? chunk_shift : choose_chunk_shift(d, count, num_sms);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t chunks = chunk_count(d[i], t.chunk_shift);
    if (chunks > static_cast<int64_t>(UINT32_MAX)) {
      throw std::invalid_argument("descriptor " + std::to_string(i) + ": " +
                                  std::to_string(d[i].numel) + " elements is too many chunks");
    }
    t.num_chunks += chunks;
  }
  if (t.num_chunks > kMaxGridBlocks) {
    throw std::invalid_argument("one launch of " + std::to_string(t.num_chunks) +
                                " chunks exceeds the grid limit");
  }
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
