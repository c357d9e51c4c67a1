// NF4 dequantization shared by the NF4 GEMM paths (bitsandbytes semantics: value = code[nibble] *
// absmax in fp32, then rounded to bf16; the first value of each byte sits in the high nibble).
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels.h"

namespace fluxk {

// bitsandbytes' NF4 code book (quant_map of every nf4 checkpoint).
__device__ __constant__ static const float kNf4Code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};

// absmax of quantization block `blk` (64 consecutive values of the flattened weight).
__device__ __forceinline__ float nf4_absmax(const Nf4Weight& w, int64_t blk) {
  if (w.absmax) return __ldg(w.absmax + blk);
  const uint8_t q = __ldg(w.absmax_q + blk);
  // Two roundings (multiply, then add), as bitsandbytes' dequantize_blockwise followed by "+ offset".
  return __fadd_rn(__fmul_rn(__ldg(w.absmax_code + q), __ldg(w.nested_absmax + blk / 256)), w.nested_offset);
}

// Shared-memory code book replicated once per lane: entry i of lane l at [i * 32 + l], so a warp's
// 32 lookups with arbitrary codes always hit 32 different banks.
__device__ __forceinline__ void fill_lane_lut(float* lut, int tid, int nthreads) {
  for (int i = tid; i < 16 * 32; i += nthreads) lut[i] = kNf4Code[i / 32];
}

// Dequantizes byte `b` (two codes) with scale s into a bf16x2 register: the high nibble (the
// first value) goes to the low half, which is the lower k index in mma/wgmma fragments.
// lut_lane points at this lane's column of the replicated code book.
__device__ __forceinline__ uint32_t nf4_pair(uint32_t b, float s, const float* lut_lane) {
  const float v0 = lut_lane[((b >> 4) & 15) * 32] * s;
  const float v1 = lut_lane[(b & 15) * 32] * s;
  __nv_bfloat162 h = __floats2bfloat162_rn(v0, v1);
  return *reinterpret_cast<uint32_t*>(&h);
}

}  // namespace fluxk
