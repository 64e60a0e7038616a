// A Python buffer of packed FillDescriptors as the pybind11 modules (fastinit._C and
// fastinit._cuda) read it: its first descriptor and how many it holds.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>

#include "descriptor_check.h"
#include "fastinit/fill.h"

namespace fastinit {

struct DescriptorSpan {
  const FillDescriptor* data;
  int64_t count;
};

// The descriptors of `info` (a request() of the buffer, which must outlive the span);
// std::invalid_argument (ValueError) when its bytes are not a whole number of descriptors.
inline DescriptorSpan descriptor_span(const pybind11::buffer_info& info) {
  return {static_cast<const FillDescriptor*>(info.ptr),
          descriptor_count(static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize))};
}

}  // namespace fastinit
