// Host-side validation shared by the pybind11 modules (fastinit._C and fastinit._cuda): every
// descriptor of a call is checked before any of them is written, and a bad one raises a Python
// ValueError (std::invalid_argument) naming its index and field instead of reaching a kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "fastinit/fill.h"

namespace fastinit {

// The byte count of a descriptor buffer holds whole descriptors; returns how many.
inline int64_t descriptor_count(size_t bytes) {
  if (bytes % sizeof(FillDescriptor) != 0) {
    throw std::invalid_argument("descriptor buffer of " + std::to_string(bytes) +
                                " bytes is not a whole number of " +
                                std::to_string(sizeof(FillDescriptor)) + "-byte descriptors");
  }
  return static_cast<int64_t>(bytes / sizeof(FillDescriptor));
}

// Descriptor `index` can be written: known distribution and dtype codes, numel >= 0,
// first_index >= 0, ndim in [1, kMaxDims], sizes and strides >= 0 with numel their sizes'
// product, and for numel > 0 a non-null data address aligned for the dtype whose strided extent
// (1 + sum((size - 1) * stride) elements) fits the address space. Throws std::invalid_argument
// otherwise.
inline void check_descriptor(const FillDescriptor& d, int64_t index) {
  const std::string where = "descriptor " + std::to_string(index) + ": ";
  if (d.dist < kConstant || d.dist > kTruncNormalFp64) {
    throw std::invalid_argument(where + "dist: unknown distribution code " +
                                std::to_string(d.dist));
  }
  if (d.dtype < kFloat32 || d.dtype > kBFloat16) {
    throw std::invalid_argument(where + "dtype: unknown dtype code " + std::to_string(d.dtype));
  }
  if (d.numel < 0) {
    throw std::invalid_argument(where + "numel: " + std::to_string(d.numel) + " is negative");
  }
  if (d.first_index < 0) {
    throw std::invalid_argument(where + "first_index: " + std::to_string(d.first_index) +
                                " is negative");
  }
  if (d.ndim < 1 || d.ndim > kMaxDims) {
    throw std::invalid_argument(where + "ndim: " + std::to_string(d.ndim) + " is outside [1, " +
                                std::to_string(kMaxDims) + "]");
  }
  int64_t numel = 1;
  uint64_t extent = 1;  // elements from data to the last one written, inclusive
  for (int k = 0; k < d.ndim; ++k) {
    if (d.size[k] < 0 || d.stride[k] < 0 || d.global_stride[k] < 0) {
      throw std::invalid_argument(where + "dim " + std::to_string(k) + ": size " +
                                  std::to_string(d.size[k]) + ", stride " +
                                  std::to_string(d.stride[k]) + " and global stride " +
                                  std::to_string(d.global_stride[k]) + " must be >= 0");
    }
    numel *= d.size[k];
    if (d.size[k] > 0) extent += static_cast<uint64_t>(d.size[k] - 1) * d.stride[k];
  }
  if (numel != d.numel) {
    throw std::invalid_argument(where + "numel: " + std::to_string(d.numel) +
                                " differs from the product of its sizes, " + std::to_string(numel));
  }
  if (d.numel == 0) return;
  if (d.data == 0) {
    throw std::invalid_argument(where + "data: null address for " + std::to_string(d.numel) +
                                " elements (a tensor without storage)");
  }
  const uint64_t size = element_size(d.dtype);
  if (d.data % size != 0) {
    throw std::invalid_argument(where + "data: address " + std::to_string(d.data) +
                                " is not aligned to the " + std::to_string(size) +
                                "-byte elements of its dtype");
  }
  if (extent > (std::numeric_limits<uint64_t>::max() - d.data) / size) {
    throw std::invalid_argument(where + "numel: " + std::to_string(d.numel) + " elements over " +
                                std::to_string(extent) + " from address " +
                                std::to_string(d.data) + " pass the end of the address space");
  }
}

// Checks every descriptor of a buffer, in order, before the caller writes any.
inline void check_descriptors(const FillDescriptor* d, int64_t count) {
  for (int64_t i = 0; i < count; ++i) check_descriptor(d[i], i);
}

}  // namespace fastinit
