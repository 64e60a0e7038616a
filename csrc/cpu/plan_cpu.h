// Native planning of whole dense tensors: from a tensor's raw metadata (data address, storage
// address and size, storage offset, sizes, strides) to a checked FillDescriptor. The storage
// bounds are checked with torch's words, the dims collapsed as fastinit/plan.py's `collapse`
// does (drop size-1 dims, merge neighbours whose memory and contract-index steps nest), and the
// descriptor built for the contract's row-major indices from first_index 0. Header-only: the
// pybind11 module (bindings.cpp) converts Python values into TensorPlan and calls plan_tensor.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../descriptor_check.h"
#include "../fastinit/fill.h"

namespace fastinit {

// One whole tensor to fill: its memory as torch describes it, and the fill's parameters.
struct TensorPlan {
  uint64_t data;             // address of element 0 (tensor.data_ptr())
  uint64_t storage_data;     // address of the storage (0: freed)
  uint64_t storage_nbytes;   // bytes the storage holds
  int64_t storage_offset;    // elements from the storage's start to element 0
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  int32_t dtype;
  int32_t dist;
  std::vector<double> params;
  uint64_t seed;
  uint64_t stream;
};

namespace plan_detail {

inline std::string join(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

}  // namespace plan_detail

// The tensor's elements lie inside its allocated storage, else std::out_of_range with torch's
// message (fastinit raises it as InitValueError, a RuntimeError).
inline void check_storage_bounds(const TensorPlan& t, int64_t numel) {
  if (numel == 0) return;
  const uint64_t item = element_size(t.dtype);
  if (t.storage_data == 0) {
    throw std::out_of_range(
        "The tensor has a non-zero number of elements, but its data is not allocated yet: "
        "tensor of shape " + plan_detail::join(t.sizes) + " with a storage of " +
        std::to_string(t.storage_nbytes) + " bytes (freed, e.g. by FSDP); allocate it "
        "(untyped_storage().resize_) before initialising");
  }
  uint64_t extent = static_cast<uint64_t>(t.storage_offset) + 1;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    extent += static_cast<uint64_t>(t.sizes[d] - 1) * static_cast<uint64_t>(t.strides[d]);
  }
  if (t.storage_offset < 0 || extent * item > t.storage_nbytes ||
      t.data != t.storage_data + static_cast<uint64_t>(t.storage_offset) * item) {
    throw std::out_of_range(
        "sizes " + plan_detail::join(t.sizes) + ", strides " + plan_detail::join(t.strides) +
        ", storage offset " + std::to_string(t.storage_offset) + ", and itemsize " +
        std::to_string(item) + " requiring a storage size of " + std::to_string(extent * item) +
        " are out of bounds for storage of size " + std::to_string(t.storage_nbytes));
  }
}

// The descriptor of a whole dense tensor, its dims collapsed; std::invalid_argument where the
// sizes and strides do not match, a stride is negative, the parameters are too many, or more
// than kMaxDims dims remain (the caller plans those in Python, one descriptor per leading index).
inline FillDescriptor plan_tensor(const TensorPlan& t) {
  const size_t ndim = t.sizes.size();
  if (t.strides.size() != ndim) {
    throw std::invalid_argument("plan: " + std::to_string(ndim) + " sizes but " +
                                std::to_string(t.strides.size()) + " strides");
  }
  if (t.params.size() > static_cast<size_t>(kNumParams)) {
    throw std::invalid_argument("plan: " + std::to_string(t.params.size()) +
                                " parameters, at most " + std::to_string(kNumParams));
  }
  int64_t numel = 1;
  for (size_t d = 0; d < ndim; ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) {
      throw std::invalid_argument("plan: sizes " + plan_detail::join(t.sizes) + " and strides " +
                                  plan_detail::join(t.strides) + " must be >= 0");
    }
    numel *= t.sizes[d];
  }
  check_storage_bounds(t, numel);
  FillDescriptor d{};
  d.data = t.data;
  d.numel = numel;
  d.first_index = 0;
  d.seed = t.seed;
  d.stream = t.stream;
  d.dist = t.dist;
  d.dtype = t.dtype;
  // Row-major contract-index steps, then collapse (as plan.py's collapse).
  int64_t n[64], s[64], g[64];
  if (ndim > 64) throw std::invalid_argument("plan: more than 64 dims");
  int64_t step = 1;
  int count = 0;
  for (size_t k = ndim; k-- > 0;) {  // innermost first, merged outward
    const int64_t size = t.sizes[k], stride = t.strides[k], gstep = step;
    step *= size;
    if (size == 1) continue;
    if (count > 0 && stride == n[count - 1] * s[count - 1] &&
        gstep == n[count - 1] * g[count - 1]) {
      n[count - 1] *= size;
      continue;
    }
    n[count] = size;
    s[count] = stride;
    g[count] = gstep;
    ++count;
  }
  if (count == 0) {
    n[0] = 1;
    s[0] = 1;
    g[0] = 1;
    count = 1;
  }
  if (count > kMaxDims) {
    throw std::invalid_argument("plan: " + std::to_string(count) + " dims after collapsing, at most " +
                                std::to_string(kMaxDims));
  }
  d.ndim = count;
  for (int k = 0; k < kMaxDims; ++k) {
    const bool used = k < count;
    d.size[k] = used ? n[count - 1 - k] : 1;
    d.stride[k] = used ? s[count - 1 - k] : 0;
    d.global_stride[k] = used ? g[count - 1 - k] : 0;
  }
  for (int k = 0; k < kNumParams; ++k) {
    d.param[k] = k < static_cast<int>(t.params.size()) ? t.params[k] : 0.0;
  }
  return d;
}

}  // namespace fastinit
