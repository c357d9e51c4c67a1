// Epilogue arithmetic shared by every GEMM path (sm90 wgmma, sm80 mma.sync, NF4 GEMV), so that
// all of them round the same way: fp32 until the single final rounding to bf16.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels.h"

namespace fluxk {

// gelu with the tanh approximation, written as x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3):
// identical to 0.5 x (1 + tanh(u)) and free of the tanh overflow branches. The quotient is the fast one (2 ulp,
// like __expf before it; both far below the final bf16 rounding): an IEEE division is a dozen instructions per
// value in an epilogue that runs beside the other warpgroup's main loop. A denominator that overflows (x below
// about -44) gives x · 0 = -0, gelu's limit.
__device__ __forceinline__ float gelu_tanh(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return __fdividef(x, 1.0f + __expf(-2.0f * u));
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

__device__ __forceinline__ __nv_bfloat162 bf16x2_from_bits(uint32_t bits) {
  return *reinterpret_cast<const __nv_bfloat162*>(&bits);
}

// The epilogue of a column pair from operands already loaded, as bf16x2 bit patterns (bias 0 when
// there is none; res2/gate2 used by kGateResidual only). For callers that batch their loads.
template <int EPI>
__device__ __forceinline__ uint32_t epilogue_pair_loaded(float a0, float a1, uint32_t bias2, uint32_t res2,
                                                         uint32_t gate2) {
  const __nv_bfloat162 b = bf16x2_from_bits(bias2);
  float v0 = epilogue_pointwise<EPI>(a0, __low2float(b));
  float v1 = epilogue_pointwise<EPI>(a1, __high2float(b));
  if (EPI == static_cast<int>(Epilogue::kGateResidual)) {
    const __nv_bfloat162 r = bf16x2_from_bits(res2);
    const __nv_bfloat162 g = bf16x2_from_bits(gate2);
    v0 = __low2float(r) + __low2float(g) * v0;
    v1 = __high2float(r) + __high2float(g) * v1;
  }
  return pack_bf16x2(v0, v1);
}

// The operands of the column pair (col, col + 1) of one row; col is even.
__device__ __forceinline__ uint32_t load_bias2(const EpilogueArgs& e, int col) {
  return e.bias ? *reinterpret_cast<const uint32_t*>(e.bias + col) : 0u;
}
__device__ __forceinline__ uint32_t load_residual2(const EpilogueArgs& e, int row, int col) {
  return *reinterpret_cast<const uint32_t*>(e.residual + static_cast<int64_t>(row) * e.ldr + col);
}
__device__ __forceinline__ uint32_t load_gate2(const EpilogueArgs& e, int row, int col) {
  return *reinterpret_cast<const uint32_t*>(e.gate + static_cast<int64_t>(row / e.gate_rows_per_batch) * e.ldg +
                                            col);
}

// Flux's QK-norm and RoPE (kQkNormRope; the addon's joint_qkv uses the same functions, so both round alike: the
// intrinsics fix each rounding, where the compiler would otherwise contract each call site its own way).
// One term of a head row's sum of squares.
__device__ __forceinline__ float qk_square_add(float sq, float x) { return __fmaf_rn(x, x, sq); }

// rstd of a head row of d values whose squares sum to sq (RMSNorm: x · rsqrt(mean(x²) + eps)).
__device__ __forceinline__ float qk_rstd(float sq, float d, float eps) {
  return rsqrtf(__fadd_rn(__fdiv_rn(sq, d), eps));
}

// One interleaved pair (x0, x1) of a row: normed and weighted ((x · rstd) · w), then rotated by the pair's
// cos/sin (x0' = x0·cos − x1·sin, x1' = x1·cos + x0·sin: diffusers' apply_rotary_emb, use_real_unbind_dim -1).
__device__ __forceinline__ void qk_norm_rope_pair(float x0, float x1, float rstd, float w0, float w1, float c0,
                                                  float c1, float s0, float s1, float& y0, float& y1) {
  const float a = __fmul_rn(__fmul_rn(x0, rstd), w0), b = __fmul_rn(__fmul_rn(x1, rstd), w1);
  y0 = __fmaf_rn(a, c0, -__fmul_rn(b, s0));
  y1 = __fmaf_rn(b, c1, __fmul_rn(a, s1));
}

// Full epilogue for a pair of adjacent columns (col, col + 1) of one row; col is even.
template <int EPI>
__device__ __forceinline__ uint32_t epilogue_pair(const EpilogueArgs& e, float a0, float a1, int row, int col) {
  const bool gated = EPI == static_cast<int>(Epilogue::kGateResidual);
  return epilogue_pair_loaded<EPI>(a0, a1, load_bias2(e, col), gated ? load_residual2(e, row, col) : 0u,
                                   gated ? load_gate2(e, row, col) : 0u);
}

}  // namespace fluxk
