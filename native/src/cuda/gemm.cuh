// The portable tiled GEMM (float32 FMA on CUDA cores) that every matrix product of this issue uses: a 64x64
// output tile per 256-thread block, 4x4 outputs per thread, K in steps of 16 through shared memory. Operands are
// read through loader functors, so layout (row/column access), dtype conversion, NF4 decoding and im2col
// addressing happen while a tile is staged, and the result goes through a store functor (bias, dtype, layout).
// Napkin math: 2 FLOPs per FMA, 16 FMAs per shared-memory load pair: about 20-25 TFLOP/s on an H100's CUDA
// cores at best, a tenth of what wgmma reaches; the Hopper kernels of issue 5 replace it where shapes allow.
#pragma once
#include "common.cuh"

namespace fl::cuda::gemm {

constexpr int BM = 64, BN = 64, BK = 16, kThreads = 256;

// Loaders: `static constexpr bool k_contiguous` (consecutive k are adjacent in memory, so threads stage a tile
// k-fastest for coalescing), `set_batch(b)`, and `operator()(row, k)` returning 0 outside the matrix (row is m
// for A and n for B).
template <class LA, class LB, class ST>
__global__ void __launch_bounds__(kThreads) gemm_kernel(int64_t M, int64_t N, int64_t K, int64_t batches, LA la, LB lb,
                                                        ST st) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  for (int64_t batch = blockIdx.z; batch < batches; batch += gridDim.z) {
    la.set_batch(batch);
    lb.set_batch(batch);
    st.set_batch(batch);
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
      for (int i = 0; i < (BM * BK) / kThreads; i++) {
        const int idx = tid + i * kThreads;
        int r, k;
        if constexpr (LA::k_contiguous) {
          r = idx / BK;
          k = idx % BK;
        } else {
          k = idx / BM;
          r = idx % BM;
        }
        As[k][r] = la(m0 + r, k0 + k);
      }
#pragma unroll
      for (int i = 0; i < (BN * BK) / kThreads; i++) {
        const int idx = tid + i * kThreads;
        int r, k;
        if constexpr (LB::k_contiguous) {
          r = idx / BK;
          k = idx % BK;
        } else {
          k = idx / BN;
          r = idx % BN;
        }
        Bs[k][r] = lb(n0 + r, k0 + k);
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < BK; k++) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = As[k][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; j++) b[j] = Bs[k][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
          for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
        if (m < M && n < N) st(m, n, acc[i][j]);
      }
    }
  }
}

// Row-major [rows, K] operand (x of linear, weight [N,K] of linear, A of matmul): element (r, k) at r*K + k.
template <class T>
struct RowsK {
  static constexpr bool k_contiguous = true;
  const T* base;
  const T* p;
  int64_t rows, K;
  int64_t batch_stride = 0;
  __device__ void set_batch(int64_t b) { p = base + b * batch_stride; }
  __device__ float operator()(int64_t r, int64_t k) const { return (r < rows && k < K) ? to_f(p[r * K + k]) : 0.f; }
};

// [K, cols] operand read by column (B of matmul): element (c, k) at k*cols + c.
template <class T>
struct KCols {
  static constexpr bool k_contiguous = false;
  const T* base;
  const T* p;
  int64_t cols, K;
  int64_t batch_stride = 0;
  __device__ void set_batch(int64_t b) { p = base + b * batch_stride; }
  __device__ float operator()(int64_t c, int64_t k) const { return (c < cols && k < K) ? to_f(p[k * cols + c]) : 0.f; }
};

// Stores out[m*N + n] = acc (+ bias[n]) in T.
template <class T>
struct StoreRows {
  T* base;
  T* p;
  const T* bias;
  int64_t N;
  int64_t batch_stride = 0;
  __device__ void set_batch(int64_t b) { p = base + b * batch_stride; }
  __device__ void operator()(int64_t m, int64_t n, float acc) const {
    if (bias) acc += to_f(bias[n]);
    p[m * N + n] = from_f<T>(acc);
  }
};

inline dim3 grid(int64_t M, int64_t N, int64_t batches) {
  const int64_t gz = batches < 65535 ? batches : 65535;
  return dim3(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM), unsigned(gz));
}

inline void check_grid(int64_t M, const char* what) {
  FL_CHECK((M + BM - 1) / BM <= 65535, what, ": ", M, " rows exceed the CUDA grid of the portable GEMM");
}

}  // namespace fl::cuda::gemm
