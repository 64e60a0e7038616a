// The order of a batch whose tensors may share memory. One call fills its descriptors on many
// threads (or GPU blocks) at once, so two descriptors whose memory overlaps (distinct tensors
// that are views of one storage) would race in the overlap, where filling them one after
// another, as torch's loop does, leaves the later one's values. overlap_phases gives each
// descriptor a phase: the descriptors of one phase touch disjoint memory, and of two that
// overlap the later one has the later phase; filling phase after phase gives the values of the
// one-after-another order. Host code shared by fastinit._C (fill_cpu) and the GPU backends.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastinit/fill.h"

namespace fastinit {

// One past the last byte a checked descriptor (strides >= 0) can write; its data if empty.
inline uint64_t end_address(const FillDescriptor& d) {
  if (d.numel == 0) return d.data;
  uint64_t extent = 1;
  for (int k = 0; k < d.ndim; ++k) {
    extent += static_cast<uint64_t>(d.size[k] - 1) * static_cast<uint64_t>(d.stride[k]);
  }
  return d.data + extent * element_size(d.dtype);
}

// The phase of each of `count` checked descriptors, or an empty vector when no two of them
// overlap (the common case: then the whole batch is one phase). Two descriptors overlap when
// the address ranges they span, [data, end_address), share a byte; descriptors linked by a
// chain of overlaps (a cluster) take phases 0, 1, 2, ... in their order in the batch, and a
// descriptor that overlaps nothing takes phase 0. Sorting the ranges makes it O(n log n).
inline std::vector<int32_t> overlap_phases(const FillDescriptor* descriptors, int64_t count) {
  struct Range {
    uint64_t lo, hi;
    int64_t index;
  };
  std::vector<Range> ranges;
  ranges.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const FillDescriptor& d = descriptors[i];
    if (d.numel > 0) ranges.push_back(Range{d.data, end_address(d), i});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.lo < b.lo; });
  std::vector<int32_t> phases;
  std::vector<int64_t> cluster;  // descriptor indices of the cluster being swept
  auto close_cluster = [&]() {
    if (cluster.size() > 1) {
      if (phases.empty()) phases.assign(static_cast<size_t>(count), 0);
      std::sort(cluster.begin(), cluster.end());
      for (size_t k = 0; k < cluster.size(); ++k) {
        phases[static_cast<size_t>(cluster[k])] = static_cast<int32_t>(k);
      }
    }
    cluster.clear();
  };
  uint64_t cluster_end = 0;
  for (const Range& r : ranges) {
    if (cluster.empty() || r.lo >= cluster_end) {
      close_cluster();
      cluster_end = r.hi;
    } else {
      cluster_end = std::max(cluster_end, r.hi);
    }
    cluster.push_back(r.index);
  }
  close_cluster();
  return phases;
}

}  // namespace fastinit
