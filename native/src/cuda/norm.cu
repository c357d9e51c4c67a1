// Normalisations and softmax over the last dim. Layer/RMS norm rows of up to 4096 values get a block each and stay
// in registers between the statistics and the output pass (read once, written once): a warp per row re-read each
// row three times with 32 lanes in flight, ~60 µs for T5's [512, 4096] against ~4 µs of traffic on an H200
// (bench/results/profiles/2026-11-26-h200-6ff134d-profile.log).
// Longer rows, and softmax, take a warp per row. Group norm (+SiLU) is fluxk's
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

constexpr int kRowThreads = 256;

unsigned row_grid(int64_t rows);

// One block per row, PER values per thread in registers (C <= PER * kRowThreads); the same statistics as
// layer_norm_kernel (mean, then the mean of squared deviations, in fp32).
template <class T, int PER>
__global__ void __launch_bounds__(kRowThreads)
    layer_norm_row_kernel(const T* x, T* out, int64_t rows, int64_t C, const void* w, const void* b, DType pdt,
                          float eps, bool rms) {
  __shared__ float red[32];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float v[PER];
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < PER; j++) {
      const int64_t i = tid + int64_t(j) * kRowThreads;
      v[j] = i < C ? to_f(xr[i]) : 0.f;
      sum += v[j];
    }
    const float mean = rms ? 0.f : block_sum<kRowThreads>(sum, red) / float(C);
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < PER; j++) {
      const int64_t i = tid + int64_t(j) * kRowThreads;
      const float d = v[j] - mean;
      if (i < C) sq += d * d;
    }
    const float rstd = rsqrtf(block_sum<kRowThreads>(sq, red) / float(C) + eps);
    T* o = out + row * C;
#pragma unroll
    for (int j = 0; j < PER; j++) {
      const int64_t i = tid + int64_t(j) * kRowThreads;
      if (i >= C) continue;
      float r = (v[j] - mean) * rstd;
      if (w) r *= load_any(w, pdt, i);
      if (b) r += load_any(b, pdt, i);
      o[i] = from_f<T>(r);
    }
  }
}

// Layer norm (rms: RMS norm) of `rows` rows of C values, by the row-in-registers kernel where it fits.
template <class T>
void launch_layer_norm(const T* x, T* out, int64_t rows, int64_t C, const void* w, const void* b, DType pdt, float eps,
                       bool rms, cudaStream_t s) {
  const unsigned grid = unsigned(rows < 65535 * 16 ? rows : 65535 * 16);
  if (C <= 4 * kRowThreads) {
    layer_norm_row_kernel<T, 4><<<grid, kRowThreads, 0, s>>>(x, out, rows, C, w, b, pdt, eps, rms);
  } else if (C <= 16 * kRowThreads) {
    layer_norm_row_kernel<T, 16><<<grid, kRowThreads, 0, s>>>(x, out, rows, C, w, b, pdt, eps, rms);
  } else {
    layer_norm_kernel<T><<<row_grid(rows), kWarps * 32, 0, s>>>(x, out, rows, C, w, b, pdt, eps, rms);
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
    launch_layer_norm<T>(static_cast<const T*>(x), static_cast<T*>(out), rows, C, w, b, pdt, eps, false, s);
  });
}

void rms_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, DType pdt, float eps,
              cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    launch_layer_norm<T>(static_cast<const T*>(x), static_cast<T*>(out), rows, C, w, nullptr, pdt, eps, true, s);
  });
}

int64_t group_norm_workspace_floats(int64_t B, int64_t C, int64_t spatial, int64_t groups) {
  return fluxk::group_norm_workspace_floats(B, C, spatial, groups);
}

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
