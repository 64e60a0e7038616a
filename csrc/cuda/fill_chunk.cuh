// What one thread of the fused fill kernel does for one chunk (see launch_table.h). Written
// __host__ __device__ and without shared memory or barriers, so the same code also runs on the
// host, thread by thread, as an emulation of the kernel (fill_cuda.cu, emulate_fill) that the
// tests check on machines without a GPU.
//
// Two routes, chosen per tensor by one predicate (as apex's can_use_fast_route):
// - aligned: the element at every global index that is a multiple of V = 16 / sizeof(T) sits on
//   a 16-byte boundary, i.e. (data - first_index * sizeof(T)) % 16 == 0. A thread computes the
//   V / per_block Philox blocks of one such group and writes it with one 16-byte store; only the
//   groups cut by the tensor's ends take the masked per-element stores.
// - general: anything else (a view at an odd offset, a shard whose first_index is out of phase
//   with its address): one Philox block per thread, masked per-element stores.
// Those two serve contiguous descriptors. A strided one (channels_last, transposed, a shard
// on an inner dim) is cut in its local row-major order instead, one element per thread step,
// each at its strided address (fill_chunk_strided).
// Either way each Philox block is computed once, and the values are those of the contract.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "../fastinit/fill.h"

#define FASTINIT_CHUNK_HD __host__ __device__ __forceinline__

namespace fastinit {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// Output types: the stored element and its rounding from the fp32 or fp64 math result (the same
// rounding as the CPU path: fp64 math rounds to fp32 first, then to a 16-bit type).
template <int kDType>
struct Output;

template <>
struct Output<kFloat32> {
  using T = float;
  static FASTINIT_CHUNK_HD T from(float x) { return x; }
  static FASTINIT_CHUNK_HD T from(double x) { return static_cast<float>(x); }
};
template <>
struct Output<kFloat64> {
  using T = double;
  static FASTINIT_CHUNK_HD T from(float x) { return static_cast<double>(x); }
  static FASTINIT_CHUNK_HD T from(double x) { return x; }
};
template <>
struct Output<kFloat16> {
  using T = uint16_t;
  static FASTINIT_CHUNK_HD T from(float x) { return half_bits_rne(x); }
  static FASTINIT_CHUNK_HD T from(double x) { return half_bits_rne(static_cast<float>(x)); }
};
template <>
struct Output<kBFloat16> {
  using T = uint16_t;
  static FASTINIT_CHUNK_HD T from(float x) { return bf16_bits_rne(x); }
  static FASTINIT_CHUNK_HD T from(double x) { return bf16_bits_rne(static_cast<float>(x)); }
};

// ---------------------------------------------------------------------------------------------
// Value generators: the kPerBlock values of one Philox block, given the block index split into
// its low and high words. The distribution is a template argument, so each instantiation is
// one straight-line path with no switch in the inner loop.
struct PhiloxKey {
  uint32_t s0, s1, k0, k1;
  FASTINIT_CHUNK_HD static PhiloxKey of(const FillDescriptor& d) {
    return PhiloxKey{static_cast<uint32_t>(d.stream), static_cast<uint32_t>(d.stream >> 32),
                     static_cast<uint32_t>(d.seed), static_cast<uint32_t>(d.seed >> 32)};
  }
  FASTINIT_CHUNK_HD Words4 words(uint32_t block_lo, uint32_t block_hi) const {
    return philox4x32_10(block_lo, block_hi, s0, s1, k0, k1);
  }
};

template <int kDist>
struct F32Math {
  static constexpr int kPerBlock = 4;
  using V = float;
  PhiloxKey key;
  ParamsF32 q;
  FASTINIT_CHUNK_HD explicit F32Math(const FillDescriptor& d)
      : key(PhiloxKey::of(d)), q(params_f32(d)) {}
  FASTINIT_CHUNK_HD void operator()(uint32_t block_lo, uint32_t block_hi, float* v) const {
    block_values_f32(kDist, q, key.words(block_lo, block_hi), v);
  }
};

// Truncated normal in fp32 math; kWithTail = false drops Giles' tail polynomial for a tensor
// whose every p is central (distributions.h, central_quantile_range): same values, less work.
// A wide interval (fill.h, trunc_normal_is_wide) takes Box-Muller values and second draws.
template <bool kWithTail>
struct F32TruncNormal {
  static constexpr int kPerBlock = 4;
  using V = float;
  PhiloxKey key;
  ParamsF32 q;
  bool wide;
  FASTINIT_CHUNK_HD explicit F32TruncNormal(const FillDescriptor& d)
      : key(PhiloxKey::of(d)), q(params_f32(d)), wide(trunc_normal_is_wide(q)) {}
  FASTINIT_CHUNK_HD void operator()(uint32_t block_lo, uint32_t block_hi, float* v) const {
    const Words4 w = key.words(block_lo, block_hi);
    if (wide) {
      const auto second = [&] { return key.words(block_lo, block_hi | kSecondDrawBit); };
      trunc_normal_wide_block_f32(w, q, second, v);
      return;
    }
    for (int t = 0; t < 4; ++t) v[t] = trunc_normal_value_f32<kWithTail>(w.w[t], q);
  }
};

template <int kDist>
struct F64Math {
  static constexpr int kPerBlock = 2;
  using V = double;
  PhiloxKey key;
  double param[8];
  FASTINIT_CHUNK_HD explicit F64Math(const FillDescriptor& d) : key(PhiloxKey::of(d)) {
    for (int i = 0; i < 8; ++i) param[i] = d.param[i];
  }
  FASTINIT_CHUNK_HD void operator()(uint32_t block_lo, uint32_t block_hi, double* v) const {
    const Words4 w = key.words(block_lo, block_hi);
    v[0] = element_value_f64(kDist, param, w, 0);
    v[1] = element_value_f64(kDist, param, w, 1);
  }
};

// A constant needs no Philox call; kPerBlock is the contract's for its dtype.
template <typename Value, int kBlock>
struct Constant {
  static constexpr int kPerBlock = kBlock;
  using V = Value;
  V value;
  FASTINIT_CHUNK_HD explicit Constant(const FillDescriptor& d)
      : value(static_cast<V>(d.param[0])) {}
  FASTINIT_CHUNK_HD void operator()(uint32_t, uint32_t, V* v) const {
    for (int t = 0; t < kPerBlock; ++t) v[t] = value;
  }
};

// ---------------------------------------------------------------------------------------------
// Where a chunk lies. Everything 64-bit is computed here, once per chunk.
struct ChunkGeometry {
  uint64_t start;    // global contract index of the chunk's first slot
  uintptr_t base;    // address slot 0 would have (before data in a tensor's first chunk:
                     // only the slots in [begin, end) are ever written)
  int begin, end;    // the slots of the chunk that are elements of the tensor
  bool aligned;      // the 16-byte route applies (see the top of this file)
};

FASTINIT_CHUNK_HD ChunkGeometry chunk_geometry(const FillDescriptor& d, uint32_t chunk, int shift,
                                               uint32_t element_size) {
  const uint64_t first = static_cast<uint64_t>(d.first_index);
  const uint64_t stop = first + static_cast<uint64_t>(d.numel);
  const uint64_t size = uint64_t{1} << shift;
  ChunkGeometry g;
  g.start = ((first >> shift) + chunk) << shift;
  g.begin = g.start < first ? static_cast<int>(first - g.start) : 0;
  g.end = static_cast<int>(stop - g.start < size ? stop - g.start : size);
  // Unsigned wrap-around is intended: base may point below data by up to one chunk.
  g.base = static_cast<uintptr_t>(d.data) - static_cast<uintptr_t>(first - g.start) * element_size;
  g.aligned = ((static_cast<uintptr_t>(d.data) - static_cast<uintptr_t>(first) * element_size) &
               15u) == 0;
  return g;
}

// Stores through integer addresses; on the device as st.global (__stwb: the default
// write-back policy), which the compiler cannot infer from an integer.
template <typename T>
FASTINIT_CHUNK_HD void store_element(uintptr_t address, T value) {
#if defined(__CUDA_ARCH__)
  __stwb(reinterpret_cast<T*>(address), value);
#else
  std::memcpy(reinterpret_cast<void*>(address), &value, sizeof(T));
#endif
}

template <typename T, int kCount>
union Vec16 {
  uint4 u;
  T e[kCount];
};

template <typename T, int kCount>
FASTINIT_CHUNK_HD void store16(uintptr_t address, const Vec16<T, kCount>& v) {
#if defined(__CUDA_ARCH__)
  __stwb(reinterpret_cast<uint4*>(address), v.u);
#else
  std::memcpy(reinterpret_cast<void*>(address), &v, 16);
#endif
}

// One thread's share (thread `tid` of `nthreads`) of one chunk.
template <int kDType, typename Gen>
FASTINIT_CHUNK_HD void fill_chunk(const Gen& gen, const ChunkGeometry& g, int tid, int nthreads) {
  using Out = Output<kDType>;
  using T = typename Out::T;
  using V = typename Gen::V;
  constexpr int kPerBlock = Gen::kPerBlock;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte store
  constexpr int kBlocksPerVec = kVec / kPerBlock;
  static_assert(kVec % kPerBlock == 0, "a store group is whole Philox blocks");

  // g.start is a multiple of the chunk size, so these block indices never carry into hi.
  const uint64_t block0 = g.start / kPerBlock;
  const uint32_t lo = static_cast<uint32_t>(block0);
  const uint32_t hi = static_cast<uint32_t>(block0 >> 32);

  if (g.aligned) {
    const int first_group = g.begin / kVec;
    const int end_group = (g.end + kVec - 1) / kVec;
    for (int group = first_group + tid; group < end_group; group += nthreads) {
      // Each block's values are rounded into the output type as they come, so only the
      // group's output elements stay live (not kVec fp64 values: that spilled for 16-bit types).
      Vec16<T, kVec> pack;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int b = 0; b < kBlocksPerVec; ++b) {
        V v[kPerBlock];
        gen(lo + static_cast<uint32_t>(group * kBlocksPerVec + b), hi, v);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int t = 0; t < kPerBlock; ++t) pack.e[b * kPerBlock + t] = Out::from(v[t]);
      }
      const int slot = group * kVec;
      const uintptr_t address = g.base + static_cast<uintptr_t>(slot) * sizeof(T);
      if (slot >= g.begin && slot + kVec <= g.end) {
        store16(address, pack);
      } else {  // masked: a group cut by the tensor's first or last element
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int e = 0; e < kVec; ++e) {
          if (slot + e >= g.begin && slot + e < g.end) {
            store_element(address + e * sizeof(T), pack.e[e]);
          }
        }
      }
    }
    return;
  }
  const int first_block = g.begin / kPerBlock;
  const int end_block = (g.end + kPerBlock - 1) / kPerBlock;
  for (int b = first_block + tid; b < end_block; b += nthreads) {
    V v[kPerBlock];
    gen(lo + static_cast<uint32_t>(b), hi, v);
    const int slot = b * kPerBlock;
    const uintptr_t address = g.base + static_cast<uintptr_t>(slot) * sizeof(T);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int t = 0; t < kPerBlock; ++t) {
      if (slot + t >= g.begin && slot + t < g.end) {
        store_element(address + t * sizeof(T), Out::from(v[t]));
      }
    }
  }
}

// One thread's share of chunk `chunk` of a strided descriptor: local elements
// [chunk * C, (chunk + 1) * C) of its row-major order, one element per step, each at its
// strided address with the value of its contract index.
template <int kDType, typename Gen>
FASTINIT_CHUNK_HD void fill_chunk_strided(const Gen& gen, const FillDescriptor& d,
                                          uint32_t chunk, int shift, int tid, int nthreads) {
  using Out = Output<kDType>;
  using T = typename Out::T;
  using V = typename Gen::V;
  constexpr int kPerBlock = Gen::kPerBlock;
  const int64_t begin = static_cast<int64_t>(chunk) << shift;
  const int64_t size = int64_t{1} << shift;
  const int64_t end = d.numel - begin < size ? d.numel : begin + size;
  for (int64_t e = begin + tid; e < end; e += nthreads) {
    int64_t rest = e, offset = 0;
    uint64_t index = static_cast<uint64_t>(d.first_index);
    for (int k = d.ndim - 1; k >= 0; --k) {
      const int64_t i = rest % d.size[k];
      rest /= d.size[k];
      offset += i * d.stride[k];
      index += static_cast<uint64_t>(i) * static_cast<uint64_t>(d.global_stride[k]);
    }
    const uint64_t block = index / kPerBlock;
    V v[kPerBlock];
    gen(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), v);
    store_element(static_cast<uintptr_t>(d.data) + static_cast<uintptr_t>(offset) * sizeof(T),
                  Out::from(v[index % kPerBlock]));
  }
}

// One thread's share of chunk `chunk` of the tensor `d`, contiguous or strided. Not inlined on
// the device: each generator's loop is then allocated registers on its own, instead of the
// kernel holding every distribution's at once (which spilled); one call per chunk and thread.
template <int kDType, typename Gen>
__host__ __device__ __noinline__ void fill_any(const Gen& gen, const FillDescriptor& d, uint32_t chunk,
                                int shift, int tid, int nthreads) {
  using T = typename Output<kDType>::T;
  if (is_contiguous(d)) {
    fill_chunk<kDType>(gen, chunk_geometry(d, chunk, shift, sizeof(T)), tid, nthreads);
  } else {
    fill_chunk_strided<kDType>(gen, d, chunk, shift, tid, nthreads);
  }
}

// One thread's share of chunk `chunk` of the tensor `d` of dtype kDType: picks the generator
// (distribution and math precision) once, then runs the chunk loop.
template <int kDType>
FASTINIT_CHUNK_HD void fill_block(const FillDescriptor& d, uint32_t chunk, int shift, int tid,
                                  int nthreads) {
  if constexpr (kDType == kFloat64) {
    switch (d.dist) {
      case kConstant:
        return fill_any<kDType>(Constant<double, 2>(d), d, chunk, shift, tid, nthreads);
      case kUniform:
        return fill_any<kDType>(F64Math<kUniform>(d), d, chunk, shift, tid, nthreads);
      case kNormal:
        return fill_any<kDType>(F64Math<kNormal>(d), d, chunk, shift, tid, nthreads);
      default:  // kTruncNormal, kTruncNormalFp64: both AS241 in fp64
        return fill_any<kDType>(F64Math<kTruncNormalFp64>(d), d, chunk, shift, tid, nthreads);
    }
  } else {
    switch (d.dist) {
      case kConstant:
        return fill_any<kDType>(Constant<float, 4>(d), d, chunk, shift, tid, nthreads);
      case kUniform:
        return fill_any<kDType>(F32Math<kUniform>(d), d, chunk, shift, tid, nthreads);
      case kNormal:
        return fill_any<kDType>(F32Math<kNormal>(d), d, chunk, shift, tid, nthreads);
      case kTruncNormal:
        // The same test as the CPU path, so both take the same branch.
        if (central_quantile_range(d.param[2], d.param[2] + d.param[3])) {
          return fill_any<kDType>(F32TruncNormal<false>(d), d, chunk, shift, tid, nthreads);
        }
        return fill_any<kDType>(F32TruncNormal<true>(d), d, chunk, shift, tid, nthreads);
      default:  // kTruncNormalFp64
        return fill_any<kDType>(F64Math<kTruncNormalFp64>(d), d, chunk, shift, tid, nthreads);
    }
  }
}

}  // namespace cuda
}  // namespace fastinit
