// Scaled dot-product attention, portable path (any dtype, head dim, bias, mask; operands as strided [B,H,L,D]
// views, so [B,L,H,D] needs no transposes; fluxk_routes.cpp takes bf16, head dim 128 first): one warp per query row, eight rows per block sharing K/V tiles
// of 32 keys in shared memory, online softmax (running max and sum, FlashAttention's recurrence) so the
// [Lq, Lk] score matrix never exists in device memory. Each lane scores one key of the tile (a D-long dot
// product against the broadcast query), then accumulates D/32 output columns. Float32 throughout.
// Napkin math at Flux 1024² (24 heads, 4608 tokens, D 128): 4·Lq·Lk·D·H = 261 GFLOP per attention; on CUDA
// cores this path runs at a few TFLOP/s, so tens of milliseconds: the tensor-core kernel is issue 5's.
#include "common.cuh"

namespace fl::cuda {

namespace {

constexpr int kRows = 8;   // query rows (warps) per block
constexpr int kTile = 32;  // keys per tile (one per lane)

__device__ __forceinline__ bool mask_keeps(const void* m, DType dt, int64_t i) {
  switch (dt) {
    case DType::U8: return static_cast<const uint8_t*>(m)[i] != 0;
    case DType::I32: return static_cast<const int32_t*>(m)[i] != 0;
    case DType::I64: return static_cast<const int64_t*>(m)[i] != 0;
    default: return load_any(m, dt, i) != 0.f;
  }
}

template <class T, int DPL>
__global__ void __launch_bounds__(kRows * 32) sdpa_kernel(const T* q, const T* k, const T* v, T* out, AttnShape a,
                                                          const void* bias, DType bias_dt, const void* mask,
                                                          DType mask_dt, float scale) {
  extern __shared__ float smem[];
  const int64_t D = a.D, Dp = a.D + 1;
  float* Ks = smem;                // [kTile][D+1]: padded so lanes reading different keys hit different banks
  float* Vs = Ks + kTile * Dp;     // [kTile][D]
  float* Qs = Vs + kTile * D;      // [kRows][D]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int64_t qi = int64_t(blockIdx.x) * kRows + warp;
  const bool active = qi < a.Lq;

  const AttnLayout& lay = a.layout;
  const T* qr_g = q + b * lay.q[0] + h * lay.q[1] + qi * lay.q[2];
  for (int64_t d = lane; d < D; d += 32) Qs[warp * D + d] = active ? to_f(qr_g[d]) : 0.f;

  float o[DPL];
#pragma unroll
  for (int c = 0; c < DPL; c++) o[c] = 0.f;
  float m = -INFINITY, l = 0.f;
  const T* kb = k + b * lay.k[0] + h * lay.k[1];
  const T* vb = v + b * lay.v[0] + h * lay.v[1];

  for (int64_t k0 = 0; k0 < a.Lk; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and Qs written, on the first pass)
    for (int64_t idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
      const int64_t j = idx / D, d = idx % D, key = k0 + j;
      Ks[j * Dp + d] = key < a.Lk ? to_f(kb[key * lay.k[2] + d]) : 0.f;
      Vs[j * D + d] = key < a.Lk ? to_f(vb[key * lay.v[2] + d]) : 0.f;
    }
    __syncthreads();

    const int64_t key = k0 + lane;
    float s = -INFINITY;
    if (active && key < a.Lk) {
      const float* kr = Ks + lane * Dp;
      const float* qr = Qs + warp * D;
      float acc = 0.f;
      for (int64_t d = 0; d < D; d++) acc = fmaf(qr[d], kr[d], acc);
      s = acc * scale;
      if (bias) {
        s += load_any(bias, bias_dt,
                      b * a.bias_stride[0] + h * a.bias_stride[1] + qi * a.bias_stride[2] + key * a.bias_stride[3]);
      }
      if (mask &&
          !mask_keeps(mask, mask_dt,
                      b * a.mask_stride[0] + h * a.mask_stride[1] + qi * a.mask_stride[2] + key * a.mask_stride[3])) {
        s = -INFINITY;
      }
    }
    const float new_m = fmaxf(m, warp_max(s));
    if (new_m == -INFINITY) continue;  // every key so far dropped (uniform across the warp)
    const float p = s == -INFINITY ? 0.f : expf(s - new_m);
    const float alpha = m == -INFINITY ? 0.f : expf(m - new_m);
    l = l * alpha + warp_sum(p);
    m = new_m;
#pragma unroll
    for (int c = 0; c < DPL; c++) o[c] *= alpha;
    for (int j = 0; j < kTile; j++) {
      const float pj = __shfl_sync(kFullMask, p, j);
#pragma unroll
      for (int c = 0; c < DPL; c++) {
        const int64_t d = lane + 32 * c;
        if (d < D) o[c] = fmaf(pj, Vs[j * D + d], o[c]);
      }
    }
  }
  if (active) {
    const float inv = l > 0.f ? 1.f / l : 0.f;  // a row with every key dropped yields zeros
#pragma unroll
    for (int c = 0; c < DPL; c++) {
      const int64_t d = lane + 32 * c;
      if (d < D) out[b * lay.o[0] + h * lay.o[1] + qi * lay.o[2] + d] = from_f<T>(o[c] * inv);
    }
  }
}

template <class T, int DPL>
void launch(const void* q, const void* k, const void* v, void* out, const AttnShape& a, const void* bias, DType bias_dt,
            const void* mask, DType mask_dt, float scale, cudaStream_t s) {
  const size_t smem = size_t(kTile * (a.D + 1) + kTile * a.D + kRows * a.D) * sizeof(float);
  auto kernel = sdpa_kernel<T, DPL>;
  if (smem > 48 * 1024) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "ops.sdpa: raising the shared-memory limit");
  }
  const dim3 grid(unsigned((a.Lq + kRows - 1) / kRows), unsigned(a.B * a.H));
  kernel<<<grid, kRows * 32, smem, s>>>(static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
                                        static_cast<T*>(out), a, bias, bias_dt, mask, mask_dt, scale);
}

}  // namespace

void sdpa(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& shape, const void* bias,
          DType bias_dt, const void* mask, DType mask_dt, float scale, cudaStream_t s) {
  AttnShape a = shape;
  if (a.layout.q[2] == 0) {
    AttnLayout::bhld(a.layout.q, a.H, a.Lq, a.D);
    AttnLayout::bhld(a.layout.k, a.H, a.Lk, a.D);
    AttnLayout::bhld(a.layout.v, a.H, a.Lk, a.D);
    AttnLayout::bhld(a.layout.o, a.H, a.Lq, a.D);
  }
  FL_CHECK(a.B * a.H <= 65535 && (a.Lq + kRows - 1) / kRows <= 2147483647, "ops.sdpa: B*H = ", a.B * a.H,
           " exceeds the CUDA grid");
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    if (a.D <= 32) {
      launch<T, 1>(q, k, v, out, a, bias, bias_dt, mask, mask_dt, scale, s);
    } else if (a.D <= 64) {
      launch<T, 2>(q, k, v, out, a, bias, bias_dt, mask, mask_dt, scale, s);
    } else if (a.D <= 128) {
      launch<T, 4>(q, k, v, out, a, bias, bias_dt, mask, mask_dt, scale, s);
    } else if (a.D <= 256) {
      launch<T, 8>(q, k, v, out, a, bias, bias_dt, mask, mask_dt, scale, s);
    } else {
      launch<T, 16>(q, k, v, out, a, bias, bias_dt, mask, mask_dt, scale, s);
    }
  });
}

}  // namespace fl::cuda
