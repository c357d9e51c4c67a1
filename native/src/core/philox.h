// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based generator,
// so element i of a tensor depends only on (seed, i) and any device can draw any slice without shared state. Each
// counter gives four 32-bit words, turned into four normals by two Box-Muller transforms. Shared by the CPU
// (cpu/random.cpp) and CUDA (cuda/random.cu) implementations, which draw identical bits; the normals agree to the
// last few ulps of the platforms' log/sin/cos. Not torch's generator: Tensor.randn with a Generator is that one.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FL_HOST_DEVICE inline
#endif

namespace fl::philox {

struct Words {
  uint32_t x[4];
};

FL_HOST_DEVICE uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// The four words of counter `counter` (a 64-bit index; the upper counter words are 0) under the 64-bit key `seed`.
FL_HOST_DEVICE Words block(uint64_t seed, uint64_t counter) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Words{{c0, c1, c2, c3}};
}

// A uniform float in (0, 1]: the top 24 bits plus half a step, so log() never sees 0.
FL_HOST_DEVICE float uniform(uint32_t w) { return (float(w >> 8) + 0.5f) * (1.0f / 16777216.0f); }

}  // namespace fl::philox
