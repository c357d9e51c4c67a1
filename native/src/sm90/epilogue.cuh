// Epilogue arithmetic shared by every GEMM path (sm90 wgmma, sm80 mma.sync, NF4 GEMV), so that
// all of them round the same way: fp32 until the single final rounding to bf16.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels.h"

namespace fluxk {

// gelu with the tanh approximation, written as x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3):
// identical to 0.5 x (1 + tanh(u)) and free of the tanh overflow branches.
__device__ __forceinline__ float gelu_tanh(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return x / (1.0f + __expf(-2.0f * u));
}

__device__ __forceinline__ float bias_at(const __nv_bfloat16* bias, int col) {
  return bias ? __bfloat162float(bias[col]) : 0.f;
}

// The part of the epilogue that needs only the accumulator and the column (bias, activation).
template <int EPI>
__device__ __forceinline__ float epilogue_pointwise(float acc, float bias) {
  float v = acc + bias;
  if (EPI == static_cast<int>(Epilogue::kGeluTanh)) v = gelu_tanh(v);
  return v;
}

// The gate/residual part, applied to the pointwise result v at (row, col).
__device__ __forceinline__ float gate_residual(const EpilogueArgs& e, float v, int row, int col) {
  const float res = __bfloat162float(e.residual[static_cast<int64_t>(row) * e.ldr + col]);
  const float g = __bfloat162float(e.gate[static_cast<int64_t>(row / e.gate_rows_per_batch) * e.ldg + col]);
  return res + g * v;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Full epilogue for a pair of adjacent columns (col, col + 1) of one row; col is even.
template <int EPI>
__device__ __forceinline__ uint32_t epilogue_pair(const EpilogueArgs& e, float a0, float a1, int row, int col) {
  float b0 = 0.f, b1 = 0.f;
  if (e.bias) {
    const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(e.bias + col);
    b0 = __low2float(b);
    b1 = __high2float(b);
  }
  float v0 = epilogue_pointwise<EPI>(a0, b0);
  float v1 = epilogue_pointwise<EPI>(a1, b1);
  if (EPI == static_cast<int>(Epilogue::kGateResidual)) {
    const __nv_bfloat162 r =
        *reinterpret_cast<const __nv_bfloat162*>(e.residual + static_cast<int64_t>(row) * e.ldr + col);
    const __nv_bfloat162 g = *reinterpret_cast<const __nv_bfloat162*>(
        e.gate + static_cast<int64_t>(row / e.gate_rows_per_batch) * e.ldg + col);
    v0 = __low2float(r) + __low2float(g) * v0;
    v1 = __high2float(r) + __high2float(g) * v1;
  }
  return pack_bf16x2(v0, v1);
}

}  // namespace fluxk
