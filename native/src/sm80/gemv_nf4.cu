// Skinny NF4 GEMM (M <= 16 tokens, e.g. the modulation linears at batch 1): memory-bound, so the
// job is to stream the packed weight once at full bandwidth. Runs on any sm_80+ GPU.
//
// A CTA (4 warps) owns 16 weight rows; its warps split K (chunks of 128 values, round robin) and
// meet in shared memory at the end. Within a chunk a lane loads 16 contiguous packed bytes of each
// of its two rows (k = 32c .. 32c+31, c = lane % 4) and the matching 64 bytes of activations, and
// feeds mma.sync m16n8k16 with the weight as the A operand (rows = output features) and the
// activations as B (columns = tokens). The reduction over k is order-free, so each mma's 16
// "virtual" k slots are mapped onto actual k so that both operands come from contiguous loads:
// slot pair (2c, 2c+1) of mma i is k = 32c + 4i + {0, 1}, slot pair (2c+8, 2c+9) is k = 32c + 4i + {2, 3}.
#include "../sm90/epilogue.cuh"
#include "../sm90/kernels.h"
#include "../sm90/nf4.cuh"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kWarps = 4;

__device__ __forceinline__ uint32_t byte_of(uint32_t word, int pos) { return (word >> (8 * pos)) & 0xFF; }

template <int MT, int EPI>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_nf4_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int m, const Nf4Weight w,
                    __nv_bfloat16* __restrict__ out, int64_t ldc, const EpilogueArgs epi) {
#if FLUXK_SM80_DEVICE
  __shared__ float lut[16 * 32];
  __shared__ float red[kWarps][MT][32][4];
  fill_lane_lut(lut, threadIdx.x, kWarps * 32);
  __syncthreads();

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int n0 = blockIdx.x * 16;
  const int k = w.k;
  const int row_a = min(n0 + g, w.n - 1);
  const int row_b = min(n0 + g + 8, w.n - 1);
  const uint8_t* pa = w.packed + static_cast<int64_t>(row_a) * (k / 2);
  const uint8_t* pb = w.packed + static_cast<int64_t>(row_b) * (k / 2);
  const int64_t blk_a = static_cast<int64_t>(row_a) * (k / 64);
  const int64_t blk_b = static_cast<int64_t>(row_b) * (k / 64);
  const float* lut_lane = lut + lane;

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) acc[mt][h] = 0.f;

  const int full_chunks = k / 128;
#pragma unroll 2
  for (int kc = warp; kc < full_chunks; kc += kWarps) {
    const uint4 wa = __ldg(reinterpret_cast<const uint4*>(pa + kc * 64 + 16 * c));
    const uint4 wb = __ldg(reinterpret_cast<const uint4*>(pb + kc * 64 + 16 * c));
    const float sa = nf4_absmax(w, blk_a + 2 * kc + c / 2);
    const float sb = nf4_absmax(w, blk_b + 2 * kc + c / 2);
    uint4 xv[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int tok = mt * 8 + g;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        xv[mt][q] = tok < m ? __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(tok) * ldx + kc * 128 +
                                                                   32 * c + 8 * q))
                            : make_uint4(0, 0, 0, 0);
      }
    }
    const uint32_t wa_w[4] = {wa.x, wa.y, wa.z, wa.w};
    const uint32_t wb_w[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      uint32_t a[4];
      a[0] = nf4_pair(byte_of(wa_w[i / 2], 2 * (i % 2)), sa, lut_lane);
      a[1] = nf4_pair(byte_of(wb_w[i / 2], 2 * (i % 2)), sb, lut_lane);
      a[2] = nf4_pair(byte_of(wa_w[i / 2], 2 * (i % 2) + 1), sa, lut_lane);
      a[3] = nf4_pair(byte_of(wb_w[i / 2], 2 * (i % 2) + 1), sb, lut_lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t xw[4] = {xv[mt][i / 2].x, xv[mt][i / 2].y, xv[mt][i / 2].z, xv[mt][i / 2].w};
        mma_bf16_16816(acc[mt], a, xw[2 * (i % 2)], xw[2 * (i % 2) + 1]);
      }
    }
  }

  // K % 128 == 64: one half chunk of 64 values, taken by the next warp in the rotation. A lane
  // loads 8 bytes per row (k = 16c .. 16c+15); slot pairs of mma i map to k = 16c + 4i + {0,1}/{2,3}.
  if ((k & 127) && warp == full_chunks % kWarps) {
    const int kbase = full_chunks * 128;
    const uint2 wa = __ldg(reinterpret_cast<const uint2*>(pa + kbase / 2 + 8 * c));
    const uint2 wb = __ldg(reinterpret_cast<const uint2*>(pb + kbase / 2 + 8 * c));
    const float sa = nf4_absmax(w, blk_a + 2 * full_chunks);
    const float sb = nf4_absmax(w, blk_b + 2 * full_chunks);
    uint4 xv[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int tok = mt * 8 + g;
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        xv[mt][q] = tok < m ? __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(tok) * ldx + kbase +
                                                                   16 * c + 8 * q))
                            : make_uint4(0, 0, 0, 0);
      }
    }
    const uint32_t wa_w[2] = {wa.x, wa.y};
    const uint32_t wb_w[2] = {wb.x, wb.y};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t a[4];
      a[0] = nf4_pair(byte_of(wa_w[i / 2], 2 * (i % 2)), sa, lut_lane);
      a[1] = nf4_pair(byte_of(wb_w[i / 2], 2 * (i % 2)), sb, lut_lane);
      a[2] = nf4_pair(byte_of(wa_w[i / 2], 2 * (i % 2) + 1), sa, lut_lane);
      a[3] = nf4_pair(byte_of(wb_w[i / 2], 2 * (i % 2) + 1), sb, lut_lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t xw[4] = {xv[mt][i / 2].x, xv[mt][i / 2].y, xv[mt][i / 2].z, xv[mt][i / 2].w};
        mma_bf16_16816(acc[mt], a, xw[2 * (i % 2)], xw[2 * (i % 2) + 1]);
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) red[warp][mt][lane][h] = acc[mt][h];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        float v = red[0][mt][lane][h];
#pragma unroll
        for (int s = 1; s < kWarps; ++s) v += red[s][mt][lane][h];
        const int tok = mt * 8 + 2 * c + (h & 1);
        const int n = n0 + g + 8 * (h >> 1);
        if (tok < m && n < w.n) {
          v = epilogue_pointwise<EPI>(v, bias_at(epi.bias, n));
          if (EPI == static_cast<int>(Epilogue::kGateResidual)) v = gate_residual(epi, v, tok, n);
          out[static_cast<int64_t>(tok) * ldc + n] = __float2bfloat16_rn(v);
        }
      }
    }
  }
#endif
}

template <int MT, int EPI>
cudaError_t launch(const Nf4GemmArgs& a, cudaStream_t stream) {
  const int grid = (a.w.n + 15) / 16;
  gemv_nf4_kernel<MT, EPI><<<grid, kWarps * 32, 0, stream>>>(a.a, a.lda, a.m, a.w, a.c, a.ldc, a.epi);
  return cudaGetLastError();
}

template <int MT>
cudaError_t launch_epi(const Nf4GemmArgs& a, cudaStream_t stream) {
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch<MT, 0>(a, stream);
    case Epilogue::kGeluTanh: return launch<MT, 1>(a, stream);
    case Epilogue::kGateResidual: return launch<MT, 2>(a, stream);
    case Epilogue::kQkNormRope: break;  // sm90 only
  }
  return cudaErrorInvalidValue;
}

bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace
}  // namespace sm80

bool nf4_args_valid(const Nf4GemmArgs& a) {
  // kQkNormRope writes its own outputs (EpilogueArgs::q, k, v) instead of C
  const bool qk = a.epi.kind == Epilogue::kQkNormRope;
  if (!a.a || !a.w.packed || a.m < 0 || a.w.n <= 0 || a.w.k <= 0) return false;
  if (qk ? (a.c || !qk_norm_rope_args_valid(a.epi, a.m, a.w.n)) : !a.c) return false;
  if (a.w.k % 64 || a.w.n % 8) return false;
  if (!a.w.absmax && !(a.w.absmax_q && a.w.absmax_code && a.w.nested_absmax)) return false;
  if (a.lda % 8 || a.lda < a.w.k || (!qk && (a.ldc % 8 || a.ldc < a.w.n))) return false;
  if (!sm80::is_aligned16(a.a) || (!qk && !sm80::is_aligned16(a.c)) || !sm80::is_aligned16(a.w.packed)) return false;
  if (a.epi.kind == Epilogue::kGateResidual) {
    if (!a.epi.residual || !a.epi.gate || a.epi.gate_rows_per_batch <= 0) return false;
    if (a.epi.ldr % 8 || a.epi.ldg % 8) return false;
    if (!sm80::is_aligned16(a.epi.residual) || !sm80::is_aligned16(a.epi.gate)) return false;
  }
  return true;
}

cudaError_t gemv_nf4(const Nf4GemmArgs& a, cudaStream_t stream) {
  if (a.m == 0) return cudaSuccess;
  if (!nf4_args_valid(a) || a.m > 16) return cudaErrorInvalidValue;
  return a.m <= 8 ? sm80::launch_epi<1>(a, stream) : sm80::launch_epi<2>(a, stream);
}

}  // namespace fluxk
