// The C++ CPU backend: fills a list of tensors (one FillDescriptor each) in one call.
//
// Work is cut into fixed chunks of kChunkElements contract indices per tensor and the chunks are
// spread over OpenMP threads; since every value is a pure function of (seed, stream, index),
// the output never depends on the thread count. Inside a chunk, batches of Philox blocks are
// computed in a loop the compiler vectorises across counters (AVX-512 or AVX2+FMA lanes, chosen
// at run time by function multi-versioning, with a portable baseline).
#include "fill_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../fastinit/fill.h"

namespace fastinit {
namespace {

constexpr int64_t kChunkElements = 65536;
constexpr int kBatchBlocks = 64;  // Philox blocks per vectorised batch

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTINIT_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTINIT_MULTIVERSION
#endif

// Rounds `count` fp32 values into the output dtype at `out`.
inline __attribute__((always_inline)) void store_f32(const float* v, int64_t count, int32_t dtype,
                                                     void* out) {
  switch (dtype) {
    case kFloat32:
      std::memcpy(out, v, static_cast<size_t>(count) * sizeof(float));
      break;
    case kFloat16: {
      uint16_t* o = static_cast<uint16_t*>(out);
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) o[i] = half_bits_rne(v[i]);
      break;
    }
    default: {
      uint16_t* o = static_cast<uint16_t*>(out);
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) o[i] = bf16_bits_rne(v[i]);
      break;
    }
  }
}

inline __attribute__((always_inline)) size_t element_size(int32_t dtype) {
  return dtype == kFloat64 ? 8 : (dtype == kFloat32 ? 4 : 2);
}

// Values of Philox blocks [block0, block0 + nblocks) for the fp32-math distributions, into
// v[4 * i + t]. Words go through structure-of-arrays buffers so each loop vectorises.
inline __attribute__((always_inline)) void batch_values_f32(const FillDescriptor& d,
                                                            const ParamsF32& q, uint64_t block0,
                                                            int nblocks, float* v) {
  alignas(64) uint32_t w0[kBatchBlocks], w1[kBatchBlocks], w2[kBatchBlocks], w3[kBatchBlocks];
  const uint32_t s0 = static_cast<uint32_t>(d.stream), s1 = static_cast<uint32_t>(d.stream >> 32);
  const uint32_t k0 = static_cast<uint32_t>(d.seed), k1 = static_cast<uint32_t>(d.seed >> 32);
#pragma omp simd
  for (int i = 0; i < nblocks; ++i) {
    const uint64_t block = block0 + static_cast<uint64_t>(i);
    const Words4 w = philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                   s0, s1, k0, k1);
    w0[i] = w.w[0];
    w1[i] = w.w[1];
    w2[i] = w.w[2];
    w3[i] = w.w[3];
  }
  switch (d.dist) {
    case kUniform: {
      const float scale = q.p[0], shift = q.p[1];
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        v[4 * i + 0] = uniform_value_f32(w0[i], scale, shift);
        v[4 * i + 1] = uniform_value_f32(w1[i], scale, shift);
        v[4 * i + 2] = uniform_value_f32(w2[i], scale, shift);
        v[4 * i + 3] = uniform_value_f32(w3[i], scale, shift);
      }
      break;
    }
    case kNormal: {
      const float mean = q.p[0], std_ = q.p[1];
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        float a, b, c, e;
        normal_pair_f32(w0[i], w1[i], mean, std_, a, b);
        normal_pair_f32(w2[i], w3[i], mean, std_, c, e);
        v[4 * i + 0] = a;
        v[4 * i + 1] = b;
        v[4 * i + 2] = c;
        v[4 * i + 3] = e;
      }
      break;
    }
    default: {  // kTruncNormal
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        v[4 * i + 0] = trunc_normal_value_f32(w0[i], q);
        v[4 * i + 1] = trunc_normal_value_f32(w1[i], q);
        v[4 * i + 2] = trunc_normal_value_f32(w2[i], q);
        v[4 * i + 3] = trunc_normal_value_f32(w3[i], q);
      }
      break;
    }
  }
}

// Elements [begin, end) (local indices) of one tensor.
FASTINIT_MULTIVERSION void fill_range(const FillDescriptor& d, int64_t begin, int64_t end) {
  char* const base = reinterpret_cast<char*>(d.data);
  const size_t esize = element_size(d.dtype);
  if (d.dist == kConstant) {
    alignas(64) float v[4 * kBatchBlocks];
    if (d.dtype == kFloat64) {
      double* o = reinterpret_cast<double*>(base);
      std::fill(o + begin, o + end, d.param[0]);
      return;
    }
    std::fill(v, v + 4 * kBatchBlocks, static_cast<float>(d.param[0]));
    for (int64_t i = begin; i < end; i += 4 * kBatchBlocks) {
      const int64_t count = std::min<int64_t>(4 * kBatchBlocks, end - i);
      store_f32(v, count, d.dtype, base + i * esize);
    }
    return;
  }
  const int per_block = elements_per_block(d.dist, d.dtype);
  const uint64_t first = static_cast<uint64_t>(d.first_index) + static_cast<uint64_t>(begin);
  uint64_t block = first / per_block;
  int64_t skip = static_cast<int64_t>(first % per_block);
  int64_t pos = begin;
  if (per_block == 2) {
    // fp64 math: scalar, used for fp64 outputs and for trunc_normal far in the tails.
    for (; pos < end; ++block) {
      const Words4 w = philox_block(block, d.stream, d.seed);
      for (int t = static_cast<int>(skip); t < 2 && pos < end; ++t, ++pos) {
        const double x = element_value_f64(d.dist, d.param, w, t);
        if (d.dtype == kFloat64) {
          reinterpret_cast<double*>(base)[pos] = x;
        } else {
          const float xf = static_cast<float>(x);
          store_f32(&xf, 1, d.dtype, base + pos * esize);
        }
      }
      skip = 0;
    }
    return;
  }
  const ParamsF32 q = params_f32(d);
  alignas(64) float v[4 * kBatchBlocks];
  while (pos < end) {
    const int64_t wanted_blocks = (skip + (end - pos) + 3) / 4;
    const int nblocks = static_cast<int>(std::min<int64_t>(kBatchBlocks, wanted_blocks));
    batch_values_f32(d, q, block, nblocks, v);
    const int64_t count = std::min<int64_t>(4 * nblocks - skip, end - pos);
    store_f32(v + skip, count, d.dtype, base + pos * esize);
    pos += count;
    block += static_cast<uint64_t>(nblocks);
    skip = 0;
  }
}

}  // namespace

void fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads) {
  struct Chunk {
    int64_t descriptor;
    int64_t begin;
  };
  std::vector<Chunk> chunks;
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t begin = 0; begin < descriptors[i].numel; begin += kChunkElements) {
      chunks.push_back(Chunk{i, begin});
    }
  }
  const int64_t n = static_cast<int64_t>(chunks.size());
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (n > 1)
  for (int64_t c = 0; c < n; ++c) {
    const FillDescriptor& d = descriptors[chunks[c].descriptor];
    fill_range(d, chunks[c].begin, std::min(chunks[c].begin + kChunkElements, d.numel));
  }
}

const char* cpu_simd_level() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512 (x86-64-v4)";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2+fma (x86-64-v3)";
  return "baseline x86-64";
#else
  return "portable (compiler auto-vectorised)";
#endif
}

}  // namespace fastinit
