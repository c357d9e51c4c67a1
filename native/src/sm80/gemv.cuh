// The skinny kernels' shared tail (gemv_bf16.cu, gemv_nf4.cu): a CTA's 4 warps hold the m16n8k16 accumulators of
// their shares of K for 16 weight rows x 8·MT tokens; they meet in shared memory and are summed in warp order 0..3,
// then every thread finishes MT outputs (the epilogue in fp32, one rounding). acc[mt][h] of lane l is row
// n0 + l/4 + 8·(h/2), token mt·8 + 2·(l%4) + h%2 of the mma layout; red is [warp][token tile][accumulator][lane],
// lane-contiguous, so a warp's stores and the final reads hit 32 different banks.
#pragma once

#include "../sm90/epilogue.cuh"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {

#if FLUXK_SM80_DEVICE
// 16 bytes of a weight read once: no L1 allocation (x, re-read by every warp, stays there); L2 fetches 256 bytes
// around the request (a lane's batch reads runs of contiguous bytes, so the neighbouring sectors are wanted anyway).
template <class T>
__device__ __forceinline__ uint4 ldg_stream(const T* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

template <int MT, int EPI>
__device__ __forceinline__ void gemv_reduce_store(float (&red)[4][MT][4][32], const float (&acc)[MT][4], int n0,
                                                  int n, int m, const EpilogueArgs& epi, __nv_bfloat16* out,
                                                  int64_t ldc) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) red[warp][mt][h][lane] = acc[mt][h];
  __syncthreads();
  // Thread (warp h, lane l) finishes accumulator h of lane l in every token tile: 4 warps, 4 accumulators.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float v = red[0][mt][warp][lane];
#pragma unroll
    for (int s = 1; s < 4; ++s) v += red[s][mt][warp][lane];
    const int tok = mt * 8 + 2 * (lane % 4) + (warp & 1);
    const int row = n0 + lane / 4 + 8 * (warp >> 1);
    if (tok < m && row < n) {
      v = epilogue_pointwise<EPI>(v, bias_at(epi.bias, row));
      if (EPI == static_cast<int>(Epilogue::kGateResidual)) v = gate_residual(epi, v, tok, row);
      out[static_cast<int64_t>(tok) * ldc + row] = __float2bfloat16_rn(v);
    }
  }
}
#endif

}  // namespace sm80
}  // namespace fluxk
