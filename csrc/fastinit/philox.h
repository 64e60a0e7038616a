// Philox4x32-10 and the word-to-float maps of the fastinit random-number contract
// (docs/contract.md). Header-only and __host__ __device__,
// so the CPU fallback and the CUDA kernels compute the same numbers from one source.
#pragma once

#include <cstdint>

#include "contract_numbers.h"

#if defined(__CUDACC__)
#define FASTINIT_HD __host__ __device__ __forceinline__
#else
#define FASTINIT_HD inline __attribute__((always_inline))
#endif

namespace fastinit {

struct Words4 {
  uint32_t w[4];
};

FASTINIT_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
#endif
}

// Ten rounds on counter (c0, c1, c2, c3) with key (k0, k1).
FASTINIT_HD Words4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                 uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kPhiloxM0, c0, hi0, lo0);
    mulhilo32(kPhiloxM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Words4{{c0, c1, c2, c3}};
}

// The contract's counter for a 64-bit block index and a 64-bit stream id, and key for a seed.
FASTINIT_HD Words4 philox_block(uint64_t block, uint64_t stream, uint64_t seed) {
  return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                       static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Words to floats. 2^-24 and 2^-53 are exact, so each map is exact in its type.
FASTINIT_HD float u24(uint32_t w) { return static_cast<float>(w >> 8) * kU24Scale; }
// Midpoint map: the 24-bit integer with its lowest bit set, i.e. ((w >> 9) + 1/2) * 2^-23.
// Odd numerators keep it exact in fp32 and strictly inside (0, 1); the literal
// ((w >> 8) + 0.5) * 2^-24 needs 25 bits and rounds to 1.0 at the top of the range.
FASTINIT_HD float u24m(uint32_t w) {
  return static_cast<float>((w >> 8) | 1u) * kU24Scale;
}
FASTINIT_HD double u53(uint32_t a, uint32_t b) {
  const uint64_t bits = (static_cast<uint64_t>(a >> 5) << 26) | static_cast<uint64_t>(b >> 6);
  return static_cast<double>(bits) * kU53Scale;
}
FASTINIT_HD double u53o(uint32_t a, uint32_t b) { return u53(a, b) + kU53Scale; }

}  // namespace fastinit
