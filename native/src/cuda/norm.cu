// Normalisations and softmax: a warp per row for the last-dim ops (rows of a few thousand values at most in
// Flux: a warp keeps each row's loads coalesced without block-wide barriers); group norm (+SiLU) is fluxk's
// (src/sm80/group_norm.cu: two passes over chunks, so that a handful of very large groups, the VAE's 32 groups
// of 8M values at 1024², still fill the GPU).
#include "common.cuh"
#include "fluxk_bridge.h"

namespace fl::cuda {

namespace {

constexpr int kWarps = 8;

template <class T>
__global__ void layer_norm_kernel(const T* x, T* out, int64_t rows, int64_t C, const void* w, const void* b, DType pdt,
                                  float eps, bool rms) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const T* xr = x + row * C;
    float mean = 0.f;
    if (!rms) {
      float s = 0.f;
      for (int64_t i = lane; i < C; i += 32) s += to_f(xr[i]);
      mean = warp_sum(s) / float(C);
    }
    float sq = 0.f;
    for (int64_t i = lane; i < C; i += 32) {
      float d = to_f(xr[i]) - mean;
      sq += d * d;
    }
    const float rstd = rsqrtf(warp_sum(sq) / float(C) + eps);
    for (int64_t i = lane; i < C; i += 32) {
      float v = (to_f(xr[i]) - mean) * rstd;
      if (w) v *= load_any(w, pdt, i);
      if (b) v += load_any(b, pdt, i);
      out[row * C + i] = from_f<T>(v);
    }
  }
}

template <class T>
__global__ void softmax_kernel(const T* x, T* out, int64_t rows, int64_t L, int64_t inner) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; r < rows; r += int64_t(gridDim.x) * kWarps) {
    const int64_t base = (r / inner) * L * inner + r % inner;
    float m = -INFINITY;
    for (int64_t i = lane; i < L; i += 32) m = fmaxf(m, to_f(x[base + i * inner]));
    m = warp_max(m);
    float s = 0.f;
    for (int64_t i = lane; i < L; i += 32) s += expf(to_f(x[base + i * inner]) - m);
    const float inv = 1.f / warp_sum(s);
    for (int64_t i = lane; i < L; i += 32) out[base + i * inner] = from_f<T>(expf(to_f(x[base + i * inner]) - m) * inv);
  }
}

unsigned row_grid(int64_t rows) {
  int64_t blocks = (rows + kWarps - 1) / kWarps;
  return unsigned(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

}  // namespace

void layer_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, const void* b, DType pdt,
                float eps, cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    layer_norm_kernel<T><<<row_grid(rows), kWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, C,
                                                                 w, b, pdt, eps, false);
  });
}

void rms_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, DType pdt, float eps,
              cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    layer_norm_kernel<T><<<row_grid(rows), kWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, C,
                                                                 w, nullptr, pdt, eps, true);
  });
}

int64_t group_norm_chunks(int64_t group_elems) { return fluxk::group_norm_chunks(group_elems); }

void group_norm(const void* x, void* out, DType dt, int64_t B, int64_t C, int64_t spatial, int64_t groups,
                const void* w, const void* b, DType pdt, float eps, bool silu, float* workspace, cudaStream_t s) {
  FL_CHECK(B * groups <= 65535, "ops.groupNorm: more than 65535 (batch x group) pairs on CUDA");
  fluxk::GroupNormArgs a;
  a.x = x;
  a.out = out;
  a.dtype = elem_type(dt);
  a.batch = B;
  a.channels = C;
  a.spatial = spatial;
  a.groups = groups;
  a.weight = w;
  a.bias = b;
  a.param_dtype = elem_type(pdt);
  a.eps = eps;
  a.silu = silu;
  a.workspace = workspace;
  check(fluxk::group_norm(a, s), "ops.groupNorm");
}

void softmax(const void* x, void* out, DType dt, int64_t outer, int64_t L, int64_t inner, cudaStream_t s) {
  const int64_t rows = outer * inner;
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    softmax_kernel<T><<<row_grid(rows), kWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, L,
                                                              inner);
  });
}

}  // namespace fl::cuda
