// Skinny bf16 GEMM (M <= 16 tokens: Flux's modulation linears on silu(temb), M = 1 per image): memory bound, so
// the job is to stream the bf16 weight once at HBM speed. Runs on any sm_80+ GPU.
//
// A CTA (4 warps) owns 16 weight rows; its warps take batches of U k-steps round robin (a k-step is 32 values of
// every row) and meet in shared memory at the end. In a k-step a lane (g = lane / 4, c = lane % 4) loads 16
// contiguous bytes of rows g and g+8 (k = 32s + 8c .. +7) and of each token row g, g+8 of x, and feeds two
// mma.sync m16n8k16 with the weight as A (rows = output features) and x as B (columns = tokens). The reduction
// over k is order-free, so an mma's 16 "virtual" k slots are mapped onto actual k so that both operands come
// straight from those loads: in mma i (0, 1) of the step, slot pair (2c, 2c+1) is k = 32s + 8c + 4i + {0, 1} and
// slot pair (2c+8, 2c+9) is k = 32s + 8c + 4i + {2, 3}.
// Summation order of an output: within a warp, its k-steps in increasing order, each step's 32 products summed by
// the tensor core (fp32); then the four warps' partial sums added in warp order 0, 1, 2, 3 (fp32); then the
// epilogue in fp32 and one rounding to bf16 — the same epilogue functions as every other fluxk GEMM.
//
// Napkin math (H100 SXM, ~2.9 TB/s copy). Measured (H100, bench/kernels/results/2026-11-26-h100-f2c5f07-gemv.txt):
// M = 1 [18432, 3072] 42.2 us (2.69 TB/s; torch F.linear 2.58), [9216, 3072] 24.9 us, M = 16 [18432, 3072] 45.6 us.
//   M = 1, [18432, 3072] (double blocks' norm1): 113.2 MB of weight (+6 KB x, 37 KB out) -> 39 us;
//   M = 1, [9216, 3072] (single blocks' norm): 56.6 MB -> 19.5 us; M = 1, [3072, 3072]: 18.9 MB -> 6.5 us; every
//   call also pays ~2-3 us of launch and first-load latency. M = 16, [18432, 3072]: 113.2 + 0.7 MB -> 39 us.
//   Bytes in flight: a batch is U = 8 k-steps (M <= 8) of 2 x 16 B weight loads per lane, all issued before the
//   first mma = 8 KB per warp; at <= 128 registers 4 CTAs (16 warps) fit an SM: 128 KB per SM in flight against
//   the ~23 KB that ~3 TB/s x ~1 us of loaded DRAM latency / 132 SMs needs, so even the last CTAs of the grid
//   (one per SM) keep ~32 KB each in flight. M 9..16: U = 4 (x takes the registers), 4 KB per warp, 64 KB per SM.
//   Issue: per k-step and warp (1 KB of weight) 2 weight + 1-2 x loads, 2-4 HMMA and a few integer ops, ~10
//   instructions per KB: ~3% of an SM's issue slots at 23 KB/us per SM. Nothing but memory should bound it.
//   The weight loads skip L1 (read once) so that x, re-read by every warp, stays there.
#include "../sm90/epilogue.cuh"
#include "../sm90/kernels.h"
#include "gemv.cuh"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kWarps = 4;
constexpr int kRows = 16;  // weight rows per CTA: the mma's M

// One batch of U k-steps starting at step s0. kChecked: the batch reaches past K, so each lane's 16-byte piece is
// loaded only when it lies inside K (K % 8 == 0: a piece is wholly inside or outside) and is zero otherwise.
template <int MT, int U, bool kChecked>
__device__ __forceinline__ void gemv_bf16_batch(float (&acc)[MT][4], const __nv_bfloat16* wa,
                                                const __nv_bfloat16* wb, const __nv_bfloat16* const (&xp)[MT],
                                                const bool (&xok)[MT], int s0, int k, int c) {
#if FLUXK_SM80_DEVICE
  uint4 a[U], b[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int kk = (s0 + u) * 32;
    if (!kChecked || kk + 8 * c < k) {
      a[u] = ldg_stream(wa + kk);
      b[u] = ldg_stream(wb + kk);
    } else {
      a[u] = b[u] = make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int kk = (s0 + u) * 32;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint4 xv = xok[mt] && (!kChecked || kk + 8 * c < k) ? __ldg(reinterpret_cast<const uint4*>(xp[mt] + kk))
                                                                  : make_uint4(0, 0, 0, 0);
      const uint32_t f0[4] = {a[u].x, b[u].x, a[u].y, b[u].y};
      const uint32_t f1[4] = {a[u].z, b[u].z, a[u].w, b[u].w};
      mma_bf16_16816(acc[mt], f0, xv.x, xv.y);
      mma_bf16_16816(acc[mt], f1, xv.z, xv.w);
    }
  }
#endif
}

template <int MT, int U, int EPI>
__global__ void __launch_bounds__(kWarps * 32, 4)
    gemv_bf16_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int m, const __nv_bfloat16* __restrict__ w,
                     int64_t ldw, int n, int k, __nv_bfloat16* __restrict__ out, int64_t ldc, const EpilogueArgs epi) {
#if FLUXK_SM80_DEVICE
  __shared__ float red[kWarps][MT][4][32];  // gemv_reduce_store's meeting point (gemv.cuh)

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int n0 = blockIdx.x * kRows;
  // N % 8 == 0, so only a whole upper half of the tile can lie past N: it re-reads row n - 1, never stored.
  const __nv_bfloat16* wa = w + static_cast<int64_t>(min(n0 + g, n - 1)) * ldw + 8 * c;
  const __nv_bfloat16* wb = w + static_cast<int64_t>(min(n0 + g + 8, n - 1)) * ldw + 8 * c;
  const __nv_bfloat16* xp[MT];
  bool xok[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tok = mt * 8 + g;
    xok[mt] = tok < m;
    xp[mt] = x + static_cast<int64_t>(xok[mt] ? tok : 0) * ldx + 8 * c;
  }

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) acc[mt][h] = 0.f;

  const int full_steps = k / 32;  // steps whose 32 values all lie inside K
  const int steps = (k + 31) / 32;
  int s0 = warp * U;
  for (; s0 + U <= full_steps; s0 += kWarps * U) gemv_bf16_batch<MT, U, false>(acc, wa, wb, xp, xok, s0, k, c);
  if (s0 < steps) gemv_bf16_batch<MT, U, true>(acc, wa, wb, xp, xok, s0, k, c);

  gemv_reduce_store<MT, EPI>(red, acc, n0, n, m, epi, out, ldc);
#endif
}

template <int MT, int U, int EPI>
cudaError_t launch(const GemmArgs& a, cudaStream_t stream) {
  const int grid = (a.n + kRows - 1) / kRows;
  gemv_bf16_kernel<MT, U, EPI>
      <<<grid, kWarps * 32, 0, stream>>>(a.a, a.lda, a.m, a.w, a.ldw, a.n, a.k, a.c, a.ldc, a.epi);
  return cudaGetLastError();
}

template <int MT, int U>
cudaError_t launch_epi(const GemmArgs& a, cudaStream_t stream) {
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch<MT, U, 0>(a, stream);
    case Epilogue::kGeluTanh: return launch<MT, U, 1>(a, stream);
    case Epilogue::kGateResidual: return launch<MT, U, 2>(a, stream);
    case Epilogue::kQkNormRope: break;  // sm90 GEMMs only
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace sm80

cudaError_t gemv_bf16(const GemmArgs& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return a.m < 0 || a.n < 0 ? cudaErrorInvalidValue : cudaSuccess;
  if (a.m > 16 || a.k <= 0 || a.epi.kind == Epilogue::kQkNormRope || a.c_f32 || a.a_parts != 1 || a.a2)
    return cudaErrorInvalidValue;
  const cudaError_t valid = gemm_bf16_check(a);
  if (valid != cudaSuccess) return valid;
  if (a.lda < a.k || a.ldw < a.k || a.ldc < a.n) return cudaErrorInvalidValue;
  return a.m <= 8 ? sm80::launch_epi<1, 8>(a, stream) : sm80::launch_epi<2, 4>(a, stream);
}

}  // namespace fluxk
