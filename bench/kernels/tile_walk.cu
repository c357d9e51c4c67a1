// The tile walk of the sm90 GEMMs (rows of tiles walked together: kPpGroupM in the bf16 ping-pong kernel, kGroupM in
// the NF4 kernel) against speed on the Flux shapes, bf16 and NF4 weights (random values; NF4 codes are random bytes).
// Built and run by tile_walk.sh, once per group size: the argument labels the output lines.
#include <cstdio>
#include <cstdint>
#include <cuda_bf16.h>
#include "kernels.h"
using namespace fluxk;
__global__ void fill(__nv_bfloat16* p, long n, unsigned seed, float scale) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u ^ seed; x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
    p[i] = __float2bfloat16(((x & 0xffff) / 65536.f - 0.5f) * scale);
  }
}
__global__ void fill_bytes(uint8_t* p, long n, unsigned seed) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u ^ seed; x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15; p[i] = x & 0xff;
  }
}
__global__ void fill_f(float* p, long n, float v) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) p[i] = v;
}
template <class F> float time_it(F f) {
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  float best = 1e9;
  for (int rep = 0; rep < 3; rep++) {
    for (int i = 0; i < 3; i++) f();
    cudaEventRecord(e0);
    for (int i = 0; i < 20; i++) f();
    cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1); ms /= 20; if (ms < best) best = ms;
  }
  return best;
}
int main(int argc, char** argv) {
  const int shapes[][4] = {{4608, 12288, 3072, 1}, {4608, 9216, 3072, 0}, {4608, 3072, 12288, 2}, {4608, 3072, 15360, 2},
                           {4608, 3072, 3072, 2}, {4096, 12288, 3072, 1}, {4096, 9216, 3072, 0}, {1536, 12288, 3072, 1},
                           {1536, 9216, 3072, 0}, {1536, 3072, 12288, 2}, {1024, 12288, 3072, 1}, {512, 12288, 3072, 1}};
  __nv_bfloat16 *a, *w, *c, *bias, *res, *gate;
  uint8_t* packed; float* absmax;
  cudaMalloc(&a, 4608L * 15360 * 2); cudaMalloc(&w, 12288L * 15360 * 2); cudaMalloc(&c, 4608L * 12288 * 2);
  cudaMalloc(&bias, 12288 * 2); cudaMalloc(&res, 4608L * 12288 * 2); cudaMalloc(&gate, 12288 * 2);
  cudaMalloc(&packed, 12288L * 15360 / 2); cudaMalloc(&absmax, 12288L * 15360 / 64 * 4);
  fill<<<1024, 256>>>(a, 4608L * 15360, 1, 2.f); fill<<<1024, 256>>>(w, 12288L * 15360, 2, 0.05f);
  fill<<<64, 256>>>(bias, 12288, 3, 0.2f); fill<<<1024, 256>>>(res, 4608L * 12288, 4, 1.f); fill<<<64, 256>>>(gate, 12288, 5, 1.f);
  fill_bytes<<<1024, 256>>>(packed, 12288L * 15360 / 2, 6); fill_f<<<1024, 256>>>(absmax, 12288L * 15360 / 64, 0.05f);
  for (auto& s : shapes) {
    EpilogueArgs e; e.kind = (Epilogue)s[3]; e.bias = bias;
    if (s[3] == 2) { e.residual = res; e.ldr = s[1]; e.gate = gate; e.ldg = 0; e.gate_rows_per_batch = s[0]; }
    GemmArgs g; g.a = a; g.lda = s[2]; g.w = w; g.ldw = s[2]; g.c = c; g.ldc = s[1]; g.m = s[0]; g.n = s[1]; g.k = s[2]; g.epi = e;
    Nf4GemmArgs q; q.a = a; q.lda = s[2]; q.w.packed = packed; q.w.n = s[1]; q.w.k = s[2]; q.w.absmax = absmax; q.c = c; q.ldc = s[1]; q.m = s[0]; q.epi = e;
    const double flop = 2.0 * s[0] * s[1] * s[2];
    const float tb = time_it([&] { gemm_bf16_sm90(g, 0); });
    const float tq = time_it([&] { gemm_nf4_sm90(q, 0); });
    printf("M%d N%d K%d epi%d: %s bf16 %.1f nf4 %.1f TFLOP/s (%s)\n", s[0], s[1], s[2], s[3], argv[1], flop / (tb * 1e9),
           flop / (tq * 1e9), cudaGetErrorString(cudaGetLastError()));
  }
  return 0;
}
