// The group norm's statistics and per-element arithmetic (group_norm.cu), shared with the transpose that feeds a
// convolution its normalised input (transpose.cu), so that norm → conv fused and unfused give the same bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "vae_t5.h"

namespace fluxk {
namespace gn {

struct Stats {
  float n, mean, m2;
};

// Chan's parallel combination of two partial (count, mean, M2).
__device__ __forceinline__ Stats combine(Stats a, Stats b) {
  if (a.n == 0.f) return b;
  if (b.n == 0.f) return a;
  const float n = a.n + b.n, delta = b.mean - a.mean;
  return Stats{n, a.mean + delta * (b.n / n), a.m2 + b.m2 + delta * delta * (a.n * b.n / n)};
}

// Values of a group per chunk of pass 1: vector aligned, so chunk starts stay 16-byte aligned.
inline int64_t chunk_elems(int64_t group_elems, int64_t chunks, int vec) {
  const int64_t chunk = (group_elems + chunks - 1) / chunks;
  return (chunk + vec - 1) / vec * vec;
}

// Mean and 1/sqrt(var + eps) of (batch, group) `bg` from pass 1's chunk statistics `ws`, folded in chunk order:
// every reader folds the same way, so all agree bit for bit.
__device__ __forceinline__ float2 mean_rstd(const float* ws, int64_t bg, int64_t chunks, int64_t chunk,
                                            int64_t group_elems, float eps) {
  Stats s{0.f, 0.f, 0.f};
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t ks = k * chunk, ke = min(group_elems, ks + chunk);
    s = combine(s, Stats{float(ke > ks ? ke - ks : 0), ws[(bg * chunks + k) * 2], ws[(bg * chunks + k) * 2 + 1]});
  }
  return make_float2(s.mean, rsqrtf(s.m2 / s.n + eps));
}

__device__ __forceinline__ float load_param(const void* p, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

template <class T>
__device__ __forceinline__ float to_f(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return __half2float(v);
  }
}

template <class T>
__device__ __forceinline__ T from_f(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

// Channel c's factor and offset: y = (x - mean) * scale + shift.
__device__ __forceinline__ void affine(const void* w, const void* b, ElemType pdt, int64_t c, float rstd,
                                       float& scale, float& shift) {
  scale = rstd * (w ? load_param(w, pdt, c) : 1.f);
  shift = b ? load_param(b, pdt, c) : 0.f;
}

// The normalised value before its rounding to T. With `act`, SiLU as torch computes group_norm then silu: the
// norm's output rounded to T first, then silu in float32 with expf (the unfused ops.silu kernel's formula).
template <class T>
__device__ __forceinline__ float normalized(float x, float mean, float scale, float shift, bool act) {
  const float y = (x - mean) * scale + shift;
  if (!act) return y;
  const float r = to_f(from_f<T>(y));
  return r / (1.f + expf(-r));
}

}  // namespace gn
}  // namespace fluxk
