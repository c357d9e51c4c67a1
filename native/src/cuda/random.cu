// Normal samples on the device from Philox4x32-10 (core/philox.h): one thread per counter, four values each, so a
// tensor of any size is filled in one memory-bound pass with no generator state (graph-capture safe).
#include "../core/philox.h"
#include "common.cuh"

namespace fl::cuda {

namespace {

template <class T>
__global__ void randn_kernel(T* out, int64_t n, uint64_t seed, float mean, float std) {
  const int64_t counters = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < counters; c += int64_t(gridDim.x) * blockDim.x) {
    const philox::Words w = philox::block(seed, uint64_t(c));
#pragma unroll
    for (int pair = 0; pair < 2; pair++) {
      const float r = sqrtf(-2.f * logf(philox::uniform(w.x[2 * pair])));
      float s, co;
      sincosf(6.2831853071795865f * philox::uniform(w.x[2 * pair + 1]), &s, &co);
      const int64_t i = 4 * c + 2 * pair;
      if (i < n) out[i] = from_f<T>(mean + std * (r * co));
      if (i + 1 < n) out[i + 1] = from_f<T>(mean + std * (r * s));
    }
  }
}

}  // namespace

void randn_philox(void* out, DType dt, int64_t n, uint64_t seed, float mean, float std, cudaStream_t s) {
  if (n == 0) return;
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    randn_kernel<T><<<grid_for((n + 3) / 4, 256), 256, 0, s>>>(static_cast<T*>(out), n, seed, mean, std);
  });
}

}  // namespace fl::cuda
