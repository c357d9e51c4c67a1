// linear (x · Wᵀ + b) for float weights and NF4 weights.
#include "gemm.cuh"

namespace fl::cuda {

namespace {

// NF4 weight W[N,K] read as B(n, k): the code of element n*K+k times its block's absmax (decoded beforehand).
struct NF4Rows {
  static constexpr bool k_contiguous = true;
  const uint8_t* packed;
  const float* quant_map;
  const float* absmax;
  int64_t rows, K, blocksize;
  __device__ void set_batch(int64_t) {}
  __device__ float operator()(int64_t n, int64_t k) const {
    if (n >= rows || k >= K) return 0.f;
    const int64_t e = n * K + k;
    const uint8_t byte = packed[e >> 1];
    const uint8_t code = (e & 1) ? (byte & 0x0f) : (byte >> 4);
    return __fmul_rn(quant_map[code], absmax[e / blocksize]);
  }
};

}  // namespace

void linear(const void* x, DType xdt, const void* w, DType wdt, const void* bias, void* out, int64_t M, int64_t N,
            int64_t K, cudaStream_t s) {
  gemm::check_grid(M, "ops.linear");
  FL_CUDA_FLOAT_SWITCH(xdt, T, {
    FL_CUDA_FLOAT_SWITCH(wdt, W, {
      gemm::RowsK<T> a{static_cast<const T*>(x), static_cast<const T*>(x), M, K};
      gemm::RowsK<W> b{static_cast<const W*>(w), static_cast<const W*>(w), N, K};
      gemm::StoreRows<T> st{static_cast<T*>(out), static_cast<T*>(out), static_cast<const T*>(bias), N};
      gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
    });
  });
}

void linear_nf4(const void* x, DType xdt, const NF4View& w, const void* bias, void* out, int64_t M, int64_t N, int64_t K,
                cudaStream_t s) {
  gemm::check_grid(M, "ops.linear");
  NF4Rows b{w.packed, w.quant_map, w.absmax, N, K, w.blocksize};
  FL_CUDA_FLOAT_SWITCH(xdt, T, {
    gemm::RowsK<T> a{static_cast<const T*>(x), static_cast<const T*>(x), M, K};
    gemm::StoreRows<T> st{static_cast<T*>(out), static_cast<T*>(out), static_cast<const T*>(bias), N};
    gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
  });
}

}  // namespace fl::cuda
