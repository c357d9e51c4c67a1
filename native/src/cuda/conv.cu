// 2-D convolution as an implicit GEMM: out[co, (b,oy,ox)] = Σ_(ci,ky,kx) w[co, ci,ky,kx] · x[b, ci, oy·s−p+ky,
// ox·s−p+kx]; the B loader computes the im2col address of each element, so no column buffer is materialised.
#include "gemm.cuh"

namespace fl::cuda {

namespace {

template <class T>
struct ConvInput {
  static constexpr bool k_contiguous = false;  // consecutive output pixels read neighbouring input pixels
  const T* x;
  ConvShape c;
  __device__ void set_batch(int64_t) {}
  __device__ float operator()(int64_t n, int64_t k) const {
    const int64_t P = c.OH * c.OW;
    if (n >= c.B * P || k >= c.Cin * c.KH * c.KW) return 0.f;
    const int64_t b = n / P, p = n % P, oy = p / c.OW, ox = p % c.OW;
    const int64_t ci = k / (c.KH * c.KW), ky = (k / c.KW) % c.KH, kx = k % c.KW;
    const int64_t iy = oy * c.stride - c.padding + ky, ix = ox * c.stride - c.padding + kx;
    if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) return 0.f;
    return to_f(x[((b * c.Cin + ci) * c.H + iy) * c.W + ix]);
  }
};

template <class T>
struct ConvStore {
  T* out;
  const T* bias;
  ConvShape c;
  __device__ void set_batch(int64_t) {}
  __device__ void operator()(int64_t co, int64_t n, float acc) const {
    const int64_t P = c.OH * c.OW, b = n / P, p = n % P;
    if (bias) acc += to_f(bias[co]);
    out[(b * c.Cout + co) * P + p] = from_f<T>(acc);
  }
};

}  // namespace

void conv2d(const void* x, const void* w, const void* bias, void* out, DType dt, const ConvShape& c, cudaStream_t s) {
  const int64_t M = c.Cout, N = c.B * c.OH * c.OW, K = c.Cin * c.KH * c.KW;
  gemm::check_grid(M, "ops.conv2d");
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    gemm::RowsK<T> a{static_cast<const T*>(w), static_cast<const T*>(w), M, K};
    ConvInput<T> b{static_cast<const T*>(x), c};
    ConvStore<T> st{static_cast<T*>(out), static_cast<const T*>(bias), c};
    gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
  });
}

}  // namespace fl::cuda
