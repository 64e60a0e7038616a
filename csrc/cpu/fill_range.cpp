// The per-instruction-set entry points of the CPU fill (portable, AVX2+FMA, AVX-512), each the
// value transforms of values.h and strided.h over one Philox struct of philox_simd.h; the
// run-time choice among them; and the cut of a fill into chunks.
#include "fill_range.h"

#include "fill_cpu.h"
#include "philox_simd.h"
#include "strided.h"
#include "values.h"

namespace fastinit {
namespace cpu {
namespace {

// Each path of each instruction set is a function of its own: sharing one would change the
// contiguous path's code (measured 12% slower for fp32 uniform when both were inlined together).
__attribute__((flatten)) void fill_contiguous_portable(const FillDescriptor& d, int64_t begin,
                                                       int64_t end) {
  fill_contiguous<PhiloxPortable>(d, begin, end);
}
__attribute__((flatten)) void fill_strided_portable(const FillDescriptor& d, int64_t begin,
                                                    int64_t end) {
  fill_strided<PhiloxPortable>(d, begin, end);
}

#if defined(FASTINIT_HAVE_X86_KERNELS)
FASTINIT_V4 __attribute__((flatten)) void fill_contiguous_avx512(const FillDescriptor& d,
                                                                 int64_t begin, int64_t end) {
  fill_contiguous<PhiloxAvx512>(d, begin, end);
}
FASTINIT_V4 __attribute__((flatten)) void fill_strided_avx512(const FillDescriptor& d,
                                                              int64_t begin, int64_t end) {
  fill_strided<PhiloxAvx512>(d, begin, end);
}
FASTINIT_V3 __attribute__((flatten)) void fill_contiguous_avx2(const FillDescriptor& d,
                                                               int64_t begin, int64_t end) {
  fill_contiguous<PhiloxAvx2>(d, begin, end);
}
FASTINIT_V3 __attribute__((flatten)) void fill_strided_avx2(const FillDescriptor& d,
                                                            int64_t begin, int64_t end) {
  fill_strided<PhiloxAvx2>(d, begin, end);
}
#endif

using FillRangeFn = void (*)(const FillDescriptor&, int64_t, int64_t);

// The fill of local elements [begin, end) of a contiguous and of a strided descriptor.
struct FillRangeFns {
  FillRangeFn contiguous, strided;
};

enum class SimdLevel { kPortable, kAvx2, kAvx512 };

SimdLevel detect_simd_level() {
#if defined(FASTINIT_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return SimdLevel::kAvx512;
  }
  if (v3) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kPortable;
}

FillRangeFns select_fill_range() {
  switch (detect_simd_level()) {
#if defined(FASTINIT_HAVE_X86_KERNELS)
    case SimdLevel::kAvx512:
      return {fill_contiguous_avx512, fill_strided_avx512};
    case SimdLevel::kAvx2:
      return {fill_contiguous_avx2, fill_strided_avx2};
#endif
    default:
      return {fill_contiguous_portable, fill_strided_portable};
  }
}

}  // namespace

std::vector<Chunk> chunk_list(const FillDescriptor* descriptors, int64_t count) {
  std::vector<Chunk> chunks;
  for (int64_t i = 0; i < count; ++i) {
    const FillDescriptor& d = descriptors[i];
    if (is_contiguous(d)) {
      for (int64_t begin = 0; begin < d.numel; begin += kChunkElements) {
        chunks.push_back(Chunk{i, begin, std::min(begin + kChunkElements, d.numel)});
      }
      continue;
    }
    const BoxShape b = box_shape(d);
    if (b.whole_from == 0) {
      if (d.numel > 0) chunks.push_back(Chunk{i, 0, d.numel});
      continue;
    }
    const int64_t split = d.size[b.whole_from - 1];
    for (int64_t row = 0; row < d.numel; row += split * b.inner) {  // each index of the outer dims
      for (int64_t j = 0; j < split; j += b.per_box) {
        const int64_t begin = row + j * b.inner;
        chunks.push_back(Chunk{i, begin, begin + std::min(b.per_box, split - j) * b.inner});
      }
    }
  }
  return chunks;
}

void fill_chunk(const FillDescriptor* descriptors, const Chunk& chunk) {
  static const FillRangeFns fill_range = select_fill_range();
  const FillDescriptor& d = descriptors[chunk.descriptor];
  (is_contiguous(d) ? fill_range.contiguous : fill_range.strided)(d, chunk.begin, chunk.end);
}

}  // namespace cpu

const char* cpu_simd_level() {
  switch (cpu::detect_simd_level()) {
    case cpu::SimdLevel::kAvx512:
      return "avx512 (avx512f/bw/dq/vl, x86-64-v4 class)";
    case cpu::SimdLevel::kAvx2:
      return "avx2+fma (x86-64-v3 class)";
    default:
      return "portable (compiler auto-vectorised)";
  }
}

}  // namespace fastinit
