// Tensors that are not one contiguous run (channels_last, transposed, shards of a global
// order): their cut into boxes of at most kChunkElements elements, the contract index and memory
// offset of an element, and the fill of one box.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../fastinit/fill.h"
#include "fill_range.h"
#include "values.h"

namespace fastinit {
namespace cpu {

// A strided descriptor is cut into boxes: the dims from `whole_from` on are whole in every box,
// and a box holds up to `per_box` indices of dim whole_from - 1 (whole_from == 0: the whole
// descriptor is one box). Every box is a range [begin, end) of the local row-major order, of
// at most kChunkElements elements.
struct BoxShape {
  int whole_from;
  int64_t inner;    // elements of one index of dim whole_from - 1: product of the whole dims
  int64_t per_box;  // indices of dim whole_from - 1 per box
};

inline BoxShape box_shape(const FillDescriptor& d) {
  BoxShape b{d.ndim, 1, 1};
  while (b.whole_from > 0 && b.inner * d.size[b.whole_from - 1] <= kChunkElements) {
    b.inner *= d.size[--b.whole_from];
  }
  if (b.whole_from > 0) b.per_box = std::max<int64_t>(1, kChunkElements / b.inner);
  return b;
}

// Local element `local` of a strided descriptor: its memory offset (elements from data) and
// contract index.
inline void locate(const FillDescriptor& d, int64_t local, int64_t& offset, uint64_t& index) {
  offset = 0;
  index = static_cast<uint64_t>(d.first_index);
  for (int k = d.ndim - 1; k >= 0; --k) {
    const int64_t i = local % d.size[k];
    local /= d.size[k];
    offset += i * d.stride[k];
    index += static_cast<uint64_t>(i) * static_cast<uint64_t>(d.global_stride[k]);
  }
}

// Elements from local element `local` on (at most `limit`) that take consecutive contract
// indices: the rest of its last-dim row, and the following rows while the global steps nest.
inline int64_t run_length(const FillDescriptor& d, int64_t local, int64_t limit) {
  const int last = d.ndim - 1;
  if (d.global_stride[last] != 1) return 1;
  int64_t run = d.size[last] - local % d.size[last];
  int64_t inner = d.size[last];  // elements of one index of dim k - 1, while the steps nest
  for (int k = last; k > 0 && run < limit && d.global_stride[k - 1] == inner; --k) {
    const int64_t index = (local / inner) % d.size[k - 1];
    run += (d.size[k - 1] - index - 1) * inner;
    inner *= d.size[k - 1];
  }
  return std::min(run, limit);
}

// Copies a box from `values` (its row-major order, elements of type T) to memory at `out`
// (elements of type T), iterating the box's dims in the order of their memory strides, so the
// innermost loop writes with the smallest stride (contiguously for channels_last or a
// transposed tensor) and successive writes stay close in memory.
template <typename T>
void store_box(const T* values, int ndim, const int64_t* size, const int64_t* stride, T* out) {
  int64_t value_stride[kMaxDims];
  int order[kMaxDims];
  int64_t step = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    value_stride[k] = step;
    step *= size[k];
    order[k] = k;
  }
  // order[0] the dim with the largest memory stride, order[ndim - 1] the smallest.
  std::stable_sort(order, order + ndim, [&](int a, int b) { return stride[a] > stride[b]; });
  const int inner = order[ndim - 1];
  const int64_t n = size[inner], out_step = stride[inner], value_step = value_stride[inner];
  int64_t index[kMaxDims] = {};
  int64_t out_offset = 0, value_offset = 0;
  while (true) {
    T* o = out + out_offset;
    const T* v = values + value_offset;
    for (int64_t i = 0; i < n; ++i) o[i * out_step] = v[i * value_step];
    int level = ndim - 2;  // odometer over the other dims, innermost first
    for (; level >= 0; --level) {
      const int k = order[level];
      ++index[k];
      out_offset += stride[k];
      value_offset += value_stride[k];
      if (index[k] < size[k]) break;
      out_offset -= index[k] * stride[k];
      value_offset -= index[k] * value_stride[k];
      index[k] = 0;
    }
    if (level < 0) return;
  }
}

// One box [begin, end) of a strided descriptor: its values are generated in row-major order,
// run by run of consecutive contract indices as for a contiguous tensor, into a buffer of the
// output type, then stored in memory order.
template <typename Philox>
inline __attribute__((always_inline)) void fill_strided(const FillDescriptor& d, int64_t begin,
                                                        int64_t end) {
  const size_t esize = element_size(d.dtype);
  thread_local std::vector<uint64_t> buffer(kChunkElements);  // 8-byte aligned, fp64 or less
  char* const values = reinterpret_cast<char*>(buffer.data());
  float* const direct = d.dtype == kFloat32 ? reinterpret_cast<float*>(values) : nullptr;
  for (int64_t pos = begin; pos < end;) {
    const int64_t run = run_length(d, pos, end - pos);
    int64_t offset;
    uint64_t index;
    locate(d, pos, offset, index);
    char* const out = values + (pos - begin) * esize;
    generate<Philox>(d, index, run, direct ? direct + (pos - begin) : nullptr,
                     [&](const auto* v, int64_t at, int64_t n) {
                       if constexpr (sizeof(*v) == sizeof(float)) {
                         store_f32(v, n, d.dtype, out + at * esize);
                       } else {
                         store_f64(v, n, d.dtype, out + at * esize);
                       }
                     });
    pos += run;
  }
  // The box's dims: [per-box part of dim whole_from - 1], whole dims.
  const BoxShape b = box_shape(d);
  int64_t size[kMaxDims], stride[kMaxDims];
  int ndim = 0;
  if (b.whole_from > 0) {
    size[ndim] = (end - begin) / b.inner;
    stride[ndim++] = d.stride[b.whole_from - 1];
  }
  for (int k = b.whole_from; k < d.ndim; ++k) {
    size[ndim] = d.size[k];
    stride[ndim++] = d.stride[k];
  }
  int64_t offset;
  uint64_t index;
  locate(d, begin, offset, index);
  char* const base = reinterpret_cast<char*>(d.data) + offset * static_cast<int64_t>(esize);
  int64_t span = 1;  // elements from base to the box's last element, plus one
  for (int k = 0; k < ndim; ++k) span += (size[k] - 1) * stride[k];
  if (span == end - begin) {  // a dense box (channels_last, transposed): one memory range
    prefault(base, base + span * static_cast<int64_t>(esize));
  }
  switch (esize) {
    case 8:
      store_box(reinterpret_cast<const uint64_t*>(values), ndim, size, stride,
                reinterpret_cast<uint64_t*>(base));
      break;
    case 4:
      store_box(reinterpret_cast<const uint32_t*>(values), ndim, size, stride,
                reinterpret_cast<uint32_t*>(base));
      break;
    default:
      store_box(reinterpret_cast<const uint16_t*>(values), ndim, size, stride,
                reinterpret_cast<uint16_t*>(base));
      break;
  }
}

}  // namespace cpu
}  // namespace fastinit
