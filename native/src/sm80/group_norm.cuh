// The group norm's per-element arithmetic (group_norm.cu), shared with the transpose that feeds a convolution its
// normalised input (transpose.cu), so that norm → conv fused and unfused give the same bits. Both read each
// (batch, group)'s mean and 1/sqrt(var + eps) from the first 2·batch·groups floats of the workspace.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "vae_t5.h"

namespace fluxk {
namespace gn {

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
