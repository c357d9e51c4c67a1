// Normalisations and softmax: a warp per row for the last-dim ops (rows of a few thousand values at most in
// Flux: a warp keeps each row's loads coalesced without block-wide barriers); group norm in two passes over
// chunks so that a handful of very large groups (the VAE at 1024²: 32 groups of 4M values) still fill the GPU.
#include "common.cuh"

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

// Chan et al.'s parallel combination of (count, mean, M2) statistics.
struct Stats {
  float n, mean, m2;
};

__device__ __forceinline__ Stats combine(Stats a, Stats b) {
  if (a.n == 0.f) return b;
  if (b.n == 0.f) return a;
  const float n = a.n + b.n, delta = b.mean - a.mean;
  return Stats{n, a.mean + delta * (b.n / n), a.m2 + b.m2 + delta * delta * (a.n * b.n / n)};
}

// Block reduction of Stats through shared memory (blockDim.x a multiple of 32, at most 1024).
__device__ Stats block_stats(Stats s) {
  __shared__ float sn[32], smean[32], sm2[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) {
    Stats other{__shfl_down_sync(kFullMask, s.n, o), __shfl_down_sync(kFullMask, s.mean, o),
                __shfl_down_sync(kFullMask, s.m2, o)};
    s = combine(s, other);
  }
  if (lane == 0) {
    sn[warp] = s.n;
    smean[warp] = s.mean;
    sm2[warp] = s.m2;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    s = lane < warps ? Stats{sn[lane], smean[lane], sm2[lane]} : Stats{0.f, 0.f, 0.f};
    for (int o = 16; o > 0; o >>= 1) {
      Stats other{__shfl_down_sync(kFullMask, s.n, o), __shfl_down_sync(kFullMask, s.mean, o),
                  __shfl_down_sync(kFullMask, s.m2, o)};
      s = combine(s, other);
    }
  }
  return s;  // valid in thread 0
}

// Pass 1: statistics of each chunk of each (batch, group).
template <class T>
__global__ void group_stats_kernel(const T* x, int64_t group_elems, int64_t chunk, float* ws) {
  const int64_t bg = blockIdx.y, c = blockIdx.x;
  const int64_t start = c * chunk, end = min(group_elems, start + chunk);
  const T* xs = x + bg * group_elems;
  Stats s{0.f, 0.f, 0.f};
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = to_f(xs[i]);
    s.n += 1.f;
    const float delta = v - s.mean;
    s.mean += delta / s.n;
    s.m2 += delta * (v - s.mean);
  }
  s = block_stats(s);
  if (threadIdx.x == 0) {
    ws[(bg * gridDim.x + c) * 2] = s.mean;
    ws[(bg * gridDim.x + c) * 2 + 1] = s.m2;
  }
}

// Pass 2: every block combines its group's chunk statistics, then normalises its chunk.
template <class T>
__global__ void group_apply_kernel(const T* x, T* out, int64_t C, int64_t groups, int64_t spatial, int64_t chunk,
                                   const float* ws, const void* w, const void* b, DType pdt, float eps) {
  const int64_t bg = blockIdx.y, c = blockIdx.x, chunks = gridDim.x;
  const int64_t cpg = C / groups, group_elems = cpg * spatial;
  Stats s{0.f, 0.f, 0.f};
  for (int64_t k = 0; k < chunks; k++) {
    const int64_t start = k * chunk, end = min(group_elems, start + chunk);
    Stats part{float(end > start ? end - start : 0), ws[(bg * chunks + k) * 2], ws[(bg * chunks + k) * 2 + 1]};
    s = combine(s, part);
  }
  const float mean = s.mean, rstd = rsqrtf(s.m2 / s.n + eps);
  const int64_t g = bg % groups;
  const int64_t start = c * chunk, end = min(group_elems, start + chunk);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t ch = g * cpg + i / spatial;
    float v = (to_f(x[bg * group_elems + i]) - mean) * rstd;
    if (w) v *= load_any(w, pdt, ch);
    if (b) v += load_any(b, pdt, ch);
    out[bg * group_elems + i] = from_f<T>(v);
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

int64_t group_norm_chunks(int64_t group_elems) {
  int64_t chunks = group_elems / 16384;
  return chunks < 1 ? 1 : chunks > 64 ? 64 : chunks;
}

void group_norm(const void* x, void* out, DType dt, int64_t B, int64_t C, int64_t spatial, int64_t groups,
                const void* w, const void* b, DType pdt, float eps, float* workspace, cudaStream_t s) {
  const int64_t group_elems = (C / groups) * spatial;
  const int64_t chunks = group_norm_chunks(group_elems);
  const int64_t chunk = (group_elems + chunks - 1) / chunks;
  FL_CHECK(B * groups <= 65535, "ops.groupNorm: more than 65535 (batch x group) pairs on CUDA");
  const dim3 grid(unsigned(chunks), unsigned(B * groups));
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    group_stats_kernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(x), group_elems, chunk, workspace);
    group_apply_kernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), C, groups, spatial,
                                                chunk, workspace, w, b, pdt, eps);
  });
}

void softmax(const void* x, void* out, DType dt, int64_t outer, int64_t L, int64_t inner, cudaStream_t s) {
  const int64_t rows = outer * inner;
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    softmax_kernel<T><<<row_grid(rows), kWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, L,
                                                              inner);
  });
}

}  // namespace fl::cuda
