// Normalisations and softmax over the last dim. Layer norm, RMS norm and layer norm + modulation (the Flux
// blocks' AdaLayerNorm) share one kernel: a block per row, rows of up to 4096 values kept in registers between the
// statistics and the output pass (read once, written once; longer rows are read again from memory). A warp per
// row re-read each row three times with 32 lanes in flight: ~60 µs for T5's [512, 4096] against ~4 µs of traffic
// on an H200 (bench/results/profiles/2026-11-26-h200-6ff134d-profile.log). Napkin math for the modulated norm at
// 1024²: [4608, 3072] bf16, 28 MB in + 28 MB out ≈ 20 µs at 3 TB/s. Softmax takes a warp per row. Group norm
// (+SiLU) is fluxk's (src/sm80/group_norm.cu: two passes over chunks, so that a handful of very large groups, the
// VAE's 32 groups of 8M values at 1024², still fill the GPU).
#include "common.cuh"
#include "fluxk_bridge.h"

namespace fl::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kRowThreads = 256;

// out = norm(x) · w + b (each optional, of param dtype pdt), or norm(x) · (1 + scale) + shift with scale/shift
// rows of x's dtype shared by rows_per_group consecutive rows; norm(x) = (x − mean)·rstd (mean 0 for RMS), fp32.
template <class T>
struct RowNorm {
  const T* x;
  T* out;
  int64_t rows, C;
  float eps;
  bool rms;
  const void* w;
  const void* b;
  DType pdt;
  const T* shift;
  const T* scale;
  int64_t rows_per_group;

  __device__ __forceinline__ float apply(float n, int64_t row, int64_t i) const {
    if (w) n *= load_any(w, pdt, i);
    if (b) n += load_any(b, pdt, i);
    if (scale) {
      const int64_t m = (row / rows_per_group) * C + i;
      n = n * (1.f + to_f(scale[m])) + to_f(shift[m]);
    }
    return n;
  }
};

// PER > 0: each thread keeps PER values of the row in registers (C <= PER * kRowThreads); PER == 0 re-reads x.
template <class T, int PER>
__global__ void __launch_bounds__(kRowThreads) row_norm_kernel(const RowNorm<T> p) {
  __shared__ float red[32];
  const int tid = threadIdx.x;
  const int64_t C = p.C;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const T* xr = p.x + row * C;
    float v[PER > 0 ? PER : 1];
    float sum = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kRowThreads;
        v[j] = i < C ? to_f(xr[i]) : 0.f;
        sum += v[j];
      }
    } else {
      for (int64_t i = tid; i < C; i += kRowThreads) sum += to_f(xr[i]);
    }
    const float mean = p.rms ? 0.f : block_sum<kRowThreads>(sum, red) / float(C);
    float sq = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kRowThreads;
        const float d = v[j] - mean;
        if (i < C) sq += d * d;
      }
    } else {
      for (int64_t i = tid; i < C; i += kRowThreads) {
        const float d = to_f(xr[i]) - mean;
        sq += d * d;
      }
    }
    const float rstd = rsqrtf(block_sum<kRowThreads>(sq, red) / float(C) + p.eps);
    T* o = p.out + row * C;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kRowThreads;
        if (i < C) o[i] = from_f<T>(p.apply((v[j] - mean) * rstd, row, i));
      }
    } else {
      for (int64_t i = tid; i < C; i += kRowThreads) o[i] = from_f<T>(p.apply((to_f(xr[i]) - mean) * rstd, row, i));
    }
  }
}

template <class T>
void launch_row_norm(const RowNorm<T>& p, cudaStream_t s) {
  const unsigned grid = unsigned(p.rows < 65535 * 16 ? p.rows : 65535 * 16);
  if (p.C <= 4 * kRowThreads) {
    row_norm_kernel<T, 4><<<grid, kRowThreads, 0, s>>>(p);
  } else if (p.C <= 8 * kRowThreads) {
    row_norm_kernel<T, 8><<<grid, kRowThreads, 0, s>>>(p);
  } else if (p.C <= 16 * kRowThreads) {
    row_norm_kernel<T, 16><<<grid, kRowThreads, 0, s>>>(p);
  } else {
    row_norm_kernel<T, 0><<<grid, kRowThreads, 0, s>>>(p);
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
    launch_row_norm<T>(
        {static_cast<const T*>(x), static_cast<T*>(out), rows, C, eps, false, w, b, pdt, nullptr, nullptr, 1}, s);
  });
}

void rms_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, DType pdt, float eps,
              cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    launch_row_norm<T>(
        {static_cast<const T*>(x), static_cast<T*>(out), rows, C, eps, true, w, nullptr, pdt, nullptr, nullptr, 1}, s);
  });
}

void layer_norm_modulate(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* shift,
                         const void* scale, int64_t rows_per_group, float eps, cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    launch_row_norm<T>({static_cast<const T*>(x), static_cast<T*>(out), rows, C, eps, false, nullptr, nullptr,
                        DType::F32, static_cast<const T*>(shift), static_cast<const T*>(scale), rows_per_group},
                       s);
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
