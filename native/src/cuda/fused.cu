// Fused ops of the Flux transformer (CPU references in cpu/fused.cpp).
// layer_norm_modulate: one block per row; rows of up to 4096 values stay in registers between the mean, the
// variance and the output pass, so the row is read from memory once and written once. Napkin math at 1024²:
// [4608, 3072] bf16 = 28 MB in + 28 MB out ≈ 20 µs at 3 TB/s, against ~60 µs for the unfused layerNorm + modulate
// (two extra passes over the tensor).
// qk_norm_rope: one warp per (token, head) row of D; a lane owns whole interleaved pairs, so the rotation needs no
// exchange between lanes, and q/k are read and written once instead of three times (rmsNorm, rope, copies).
#include <cmath>

#include "common.cuh"

namespace fl::cuda {

namespace {

constexpr int kNormThreads = 256;

// Sum over the block (blockDim.x = kNormThreads); `red` holds 32 floats. Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from the previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < kNormThreads / 32 ? red[lane] : 0.f;
  return warp_sum(v);
}

// PER > 0: each thread keeps PER values of the row in registers (C <= PER * kNormThreads); PER == 0 re-reads x.
template <class T, int PER>
__global__ void __launch_bounds__(kNormThreads)
    layer_norm_modulate_kernel(const T* x, T* out, int64_t rows, int64_t C, const T* shift, const T* scale,
                               int64_t rows_per_group, float eps) {
  __shared__ float red[32];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float v[PER > 0 ? PER : 1];
    float sum = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        v[j] = i < C ? to_f(xr[i]) : 0.f;
        sum += v[j];
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) sum += to_f(xr[i]);
    }
    const float mean = block_sum(sum, red) / float(C);
    float sq = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        const float d = v[j] - mean;
        if (i < C) sq += d * d;
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) {
        const float d = to_f(xr[i]) - mean;
        sq += d * d;
      }
    }
    const float rstd = rsqrtf(block_sum(sq, red) / float(C) + eps);
    const T* sh = shift + (row / rows_per_group) * C;
    const T* sc = scale + (row / rows_per_group) * C;
    T* o = out + row * C;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        if (i < C) o[i] = from_f<T>((v[j] - mean) * rstd * (1.f + to_f(sc[i])) + to_f(sh[i]));
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) {
        o[i] = from_f<T>((to_f(xr[i]) - mean) * rstd * (1.f + to_f(sc[i])) + to_f(sh[i]));
      }
    }
  }
}

// One warp per row of D values (PPL = interleaved pairs per lane, D <= 64 * PPL).
template <class T, class C, int PPL>
__global__ void qk_norm_rope_kernel(const T* x, T* out, int64_t rows, int64_t L, int64_t H, int64_t D, const void* w,
                                    DType pdt, const C* cos, const C* sin, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t pairs = D / 2;
  for (int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += int64_t(gridDim.x) * (blockDim.x / 32)) {
    const T* xr = x + row * D;
    float re[PPL], im[PPL];
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < PPL; j++) {
      const int64_t p = lane + 32 * j;
      re[j] = p < pairs ? to_f(xr[2 * p]) : 0.f;
      im[j] = p < pairs ? to_f(xr[2 * p + 1]) : 0.f;
      sq += re[j] * re[j] + im[j] * im[j];
    }
    const float rstd = rsqrtf(warp_sum(sq) / float(D) + eps);
    const int64_t l = (row / H) % L;
    const C* cr = cos + l * D;
    const C* sr = sin + l * D;
    T* o = out + row * D;
#pragma unroll
    for (int j = 0; j < PPL; j++) {
      const int64_t p = lane + 32 * j;
      if (p >= pairs) continue;
      const float a = re[j] * rstd * load_any(w, pdt, 2 * p), b = im[j] * rstd * load_any(w, pdt, 2 * p + 1);
      o[2 * p] = from_f<T>(a * to_f(cr[2 * p]) - b * to_f(sr[2 * p]));
      o[2 * p + 1] = from_f<T>(b * to_f(cr[2 * p + 1]) + a * to_f(sr[2 * p + 1]));
    }
  }
}

template <class T>
__global__ void timestep_embedding_kernel(const T* t, int64_t B, int64_t dim, bool flip, float neg_log, float denom,
                                          float scale, float* out) {
  const int64_t half = dim / 2;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < B * half;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / half, i = idx % half;
    // torch's float32 steps (see cpu/fused.cpp); __fmul_rn/__fdiv_rn keep them separately rounded
    const float exponent = __fdiv_rn(__fmul_rn(neg_log, float(i)), denom);
    // exp through double and one rounding: the float32 value libm's expf gives (to its last bit, almost always),
    // so CPU and GPU agree; expf's 2-ulp error would move arguments near 1000 by 1e-4
    const float freq = float(exp(double(exponent)));
    const float arg = __fmul_rn(scale, __fmul_rn(to_f(t[b]), freq));
    float s, c;
    sincosf(arg, &s, &c);
    float* row = out + b * dim;
    row[flip ? half + i : i] = s;
    row[flip ? i : half + i] = c;
    if (i == 0 && dim % 2) row[dim - 1] = 0.f;
  }
}

unsigned rows_grid(int64_t rows, int64_t per_block) {
  const int64_t blocks = (rows + per_block - 1) / per_block;
  return unsigned(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

}  // namespace

void layer_norm_modulate(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* shift,
                         const void* scale, int64_t rows_per_group, float eps, cudaStream_t s) {
  const unsigned grid = rows_grid(rows, 1);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    auto args = [&](auto kernel) {
      kernel<<<grid, kNormThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, C,
                                           static_cast<const T*>(shift), static_cast<const T*>(scale), rows_per_group,
                                           eps);
    };
    if (C <= 4 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 4>);
    } else if (C <= 8 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 8>);
    } else if (C <= 16 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 16>);
    } else {
      args(layer_norm_modulate_kernel<T, 0>);
    }
  });
}

void qk_norm_rope(const void* x, void* out, DType dt, int64_t rows, int64_t L, int64_t H, int64_t D, const void* w,
                  DType pdt, const void* cos, const void* sin, DType cdt, float eps, cudaStream_t s) {
  FL_CHECK(D % 2 == 0 && D <= 512, "ops.qkNormRope: head dim ", D, " must be even and at most 512 on CUDA");
  constexpr int kWarps = 8;
  const unsigned grid = rows_grid(rows, kWarps);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    FL_CUDA_FLOAT_SWITCH(cdt, C, {
      auto run = [&](auto kernel) {
        kernel<<<grid, kWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, L, H, D, w, pdt,
                                            static_cast<const C*>(cos), static_cast<const C*>(sin), eps);
      };
      if (D <= 64) {
        run(qk_norm_rope_kernel<T, C, 1>);
      } else if (D <= 128) {
        run(qk_norm_rope_kernel<T, C, 2>);
      } else if (D <= 256) {
        run(qk_norm_rope_kernel<T, C, 4>);
      } else {
        run(qk_norm_rope_kernel<T, C, 8>);
      }
    });
  });
}

void timestep_embedding(const void* t, DType tdt, int64_t B, int64_t dim, bool flip_sin_to_cos,
                        float downscale_freq_shift, float scale, float max_period, float* out, cudaStream_t s) {
  const int64_t half = dim / 2;
  if (half == 0) {
    if (dim == 1) fill(out, DType::F32, B, 0.0, s);
    return;
  }
  const float neg_log = float(-std::log(double(max_period)));
  const float denom = float(double(half) - double(downscale_freq_shift));
  FL_CUDA_FLOAT_SWITCH(tdt, T, {
    timestep_embedding_kernel<T><<<grid_for(B * half, 256), 256, 0, s>>>(static_cast<const T*>(t), B, dim,
                                                                         flip_sin_to_cos, neg_log, denom, scale, out);
  });
}

}  // namespace fl::cuda
