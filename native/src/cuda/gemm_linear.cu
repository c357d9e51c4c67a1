// linear (x · Wᵀ + b, optionally with the fused epilogue) for float and NF4 weights: the portable path. The bf16
// tensor-core kernels (fluxk_routes.cpp) take the shapes they support first.
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

// Stores out[m*N + n] = residual + gate * act(acc + bias) in T (LinearEpilogue), computed in float32.
template <class T>
struct StoreEpilogue {
  T* out;
  const T* bias;
  int64_t N;
  LinearEpilogue e;
  __device__ void set_batch(int64_t) {}
  __device__ void operator()(int64_t m, int64_t n, float acc) const {
    float v = bias ? acc + to_f(bias[n]) : acc;
    if (e.gelu_tanh) v = 0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    if (e.gate) v *= to_f(static_cast<const T*>(e.gate)[(m / e.gate_rows_per_batch) * e.gate_ld + n]);
    if (e.residual) v += to_f(static_cast<const T*>(e.residual)[m * e.residual_ld + n]);
    out[m * N + n] = from_f<T>(v);
  }
};

template <class T, class LB>
void launch_linear(const void* x, const LB& b, const void* bias, void* out, int64_t M, int64_t N, int64_t K,
                   const LinearEpilogue& epi, cudaStream_t s) {
  gemm::RowsK<T> a{static_cast<const T*>(x), static_cast<const T*>(x), M, K};
  if (epi.any()) {
    StoreEpilogue<T> st{static_cast<T*>(out), static_cast<const T*>(bias), N, epi};
    gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
  } else {
    gemm::StoreRows<T> st{static_cast<T*>(out), static_cast<T*>(out), static_cast<const T*>(bias), N};
    gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
  }
}

}  // namespace

void linear(const void* x, DType xdt, const void* w, DType wdt, const void* bias, void* out, int64_t M, int64_t N,
            int64_t K, const LinearEpilogue& epi, cudaStream_t s) {
  gemm::check_grid(M, "ops.linear");
  FL_CUDA_FLOAT_SWITCH(xdt, T, {
    FL_CUDA_FLOAT_SWITCH(wdt, W, {
      gemm::RowsK<W> b{static_cast<const W*>(w), static_cast<const W*>(w), N, K};
      launch_linear<T>(x, b, bias, out, M, N, K, epi, s);
    });
  });
}

void linear_nf4(const void* x, DType xdt, const NF4View& w, const void* bias, void* out, int64_t M, int64_t N, int64_t K,
                const LinearEpilogue& epi, cudaStream_t s) {
  gemm::check_grid(M, "ops.linear");
  NF4Rows b{w.packed, w.quant_map, w.absmax, N, K, w.blocksize};
  FL_CUDA_FLOAT_SWITCH(xdt, T, launch_linear<T>(x, b, bias, out, M, N, K, epi, s));
}

}  // namespace fl::cuda
