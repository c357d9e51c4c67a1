// Portable flash attention forward (FlashAttention-2 style) for sm_80+: head_dim 128, bf16,
// non-causal, fp32 online softmax. CTA = 4 warps = 64 query rows (16 per warp); K and V blocks of
// 64 keys are double-buffered with cp.async; S = Q·Kᵀ and O += P·V use mma.sync m16n8k16 with
// ldmatrix (V through ldmatrix.trans); P stays in registers.
#include "../sm90/kernels.h"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kBM = 64, kBN = 64, kD = 128, kThreads = 128;
constexpr int kRowBytes = kD * 2;                // 256 bytes per row
constexpr int kTileBytes = kBN * kRowBytes;      // 16 KB
constexpr int kSmemBytes = kBM * kRowBytes + 4 * kTileBytes;  // Q + 2 x (K, V) = 80 KB

struct Sm80AttnParams {
  const __nv_bfloat16 *q, *k, *v;
  __nv_bfloat16* o;
  int64_t qs[3], ks[3], vs[3], os[3];
  int heads, seq_q, seq_kv, q_tiles;
  float scale_log2;
};

#if FLUXK_SM80_DEVICE
// 256-byte rows of 16 chunks; the low 3 bits of the chunk index are XOR-ed with row % 8.
__device__ __forceinline__ uint32_t swz256(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// rows x 128 tile from global (row stride in elements) into swizzled shared memory; rows >= valid are zeros.
__device__ __forceinline__ void load_tile(uint32_t dst, const __nv_bfloat16* src, int64_t row_stride, int rows,
                                          int valid) {
  for (int idx = threadIdx.x; idx < rows * 16; idx += kThreads) {
    const int row = idx / 16, ch = idx % 16;
    const bool ok = row < valid;
    cp_async_16(dst + swz256(row, ch), ok ? src + static_cast<int64_t>(row) * row_stride + ch * 8 : src,
                ok ? 16 : 0);
  }
}
#endif

__global__ void __launch_bounds__(kThreads) attention_sm80_kernel(const Sm80AttnParams p) {
#if FLUXK_SM80_DEVICE
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_k = s_q + kBM * kRowBytes;  // 2 stages
  const uint32_t s_v = s_k + 2 * kTileBytes;   // 2 stages

  const int q_tile = blockIdx.x % p.q_tiles;
  const int bh = blockIdx.x / p.q_tiles;
  const int head = bh % p.heads;
  const int batch = bh / p.heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int c = lane % 4;
  const int q0 = q_tile * kBM;

  const __nv_bfloat16* q = p.q + batch * p.qs[0] + head * p.qs[1] + static_cast<int64_t>(q0) * p.qs[2];
  const __nv_bfloat16* k = p.k + batch * p.ks[0] + head * p.ks[1];
  const __nv_bfloat16* v = p.v + batch * p.vs[0] + head * p.vs[1];
  const int kv_blocks = (p.seq_kv + kBN - 1) / kBN;

  load_tile(s_q, q, p.qs[2], kBM, min(kBM, p.seq_q - q0));
  load_tile(s_k, k, p.ks[2], kBN, min(kBN, p.seq_kv));
  load_tile(s_v, v, p.vs[2], kBN, min(kBN, p.seq_kv));
  cp_async_commit();

  float o[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i)
#pragma unroll
    for (int h = 0; h < 4; ++h) o[i][h] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  uint32_t qf[8][4];

  for (int j = 0; j < kv_blocks; ++j) {
    const int stage = j % 2;
    if (j + 1 < kv_blocks) {
      const int nxt = (j + 1) * kBN;
      load_tile(s_k + (stage ^ 1) * kTileBytes, k + static_cast<int64_t>(nxt) * p.ks[2], p.ks[2], kBN,
                min(kBN, p.seq_kv - nxt));
      load_tile(s_v + (stage ^ 1) * kTileBytes, v + static_cast<int64_t>(nxt) * p.vs[2], p.vs[2], kBN,
                min(kBN, p.seq_kv - nxt));
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) ldmatrix_x4(qf[kk], s_q + swz256(warp * 16 + (lane % 16), 2 * kk + lane / 16));
    }

    // S = Q Kᵀ: 16 rows x 64 keys per warp (8 n8 tiles).
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int h = 0; h < 4; ++h) s[i][h] = 0.f;
    const uint32_t kt = s_k + stage * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        const int row = np * 16 + (lane % 8) + 8 * (lane / 16);
        ldmatrix_x4(r, kt + swz256(row, 2 * kk + (lane / 8) % 2));
        mma_bf16_16816(s[2 * np], qf[kk], r[0], r[1]);
        mma_bf16_16816(s[2 * np + 1], qf[kk], r[2], r[3]);
      }
    }

    const int valid = p.seq_kv - j * kBN;
    if (valid < kBN) {
#pragma unroll
      for (int jn = 0; jn < 8; ++jn)
#pragma unroll
        for (int h = 0; h < 4; ++h)
          if (8 * jn + 2 * c + (h & 1) >= valid) s[jn][h] = -INFINITY;
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int jn = 0; jn < 8; ++jn) mx = fmaxf(mx, fmaxf(s[jn][2 * r], s[jn][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float m_new = fmaxf(m[r], mx * p.scale_log2);
      alpha[r] = ex2(m[r] - m_new);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int jn = 0; jn < 8; ++jn) {
        s[jn][2 * r] = ex2(fmaf(s[jn][2 * r], p.scale_log2, -m_new));
        s[jn][2 * r + 1] = ex2(fmaf(s[jn][2 * r + 1], p.scale_log2, -m_new));
        sum += s[jn][2 * r] + s[jn][2 * r + 1];
      }
      l[r] = l[r] * alpha[r] + sum;
    }
#pragma unroll
    for (int dn = 0; dn < 16; ++dn) {
      o[dn][0] *= alpha[0];
      o[dn][1] *= alpha[0];
      o[dn][2] *= alpha[1];
      o[dn][3] *= alpha[1];
    }

    // O += P V: P slice kk = keys 16kk..16kk+15 = score tiles 2kk, 2kk+1.
    const uint32_t vt = s_v + stage * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4];
      pa[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < 8; ++dp) {
        uint32_t r[4];
        const int row = kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
        ldmatrix_x4_trans(r, vt + swz256(row, 2 * dp + lane / 16));
        mma_bf16_16816(o[2 * dp], pa, r[0], r[1]);
        mma_bf16_16816(o[2 * dp + 1], pa, r[2], r[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
  }
  const float inv0 = 1.f / l[0], inv1 = 1.f / l[1];
  const int row0 = q0 + warp * 16 + lane / 4;
  __nv_bfloat16* ob = p.o + batch * p.os[0] + head * p.os[1];
#pragma unroll
  for (int dn = 0; dn < 16; ++dn) {
    const int col = dn * 8 + 2 * c;
    if (row0 < p.seq_q)
      *reinterpret_cast<uint32_t*>(ob + static_cast<int64_t>(row0) * p.os[2] + col) =
          pack2(o[dn][0] * inv0, o[dn][1] * inv0);
    if (row0 + 8 < p.seq_q)
      *reinterpret_cast<uint32_t*>(ob + static_cast<int64_t>(row0 + 8) * p.os[2] + col) =
          pack2(o[dn][2] * inv1, o[dn][3] * inv1);
  }
#endif
}

}  // namespace
}  // namespace sm80

cudaError_t attention_fwd_sm80(const AttentionArgs& a, cudaStream_t stream) {
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return cudaSuccess;
  if (!a.q || !a.k || !a.v || !a.o || a.head_dim != 128 || a.seq_kv <= 0 || a.batch < 0 || a.heads < 0 ||
      a.seq_q < 0)
    return cudaErrorInvalidValue;
  for (int i = 0; i < 3; ++i)
    if (a.q_stride[i] % 8 || a.k_stride[i] % 8 || a.v_stride[i] % 8 || a.o_stride[i] % 2)
      return cudaErrorInvalidValue;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(a.q) | reinterpret_cast<uintptr_t>(a.k) |
                         reinterpret_cast<uintptr_t>(a.v);
  if ((bits & 15) || (reinterpret_cast<uintptr_t>(a.o) & 3)) return cudaErrorInvalidValue;
  sm80::Sm80AttnParams p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o = a.o;
  for (int i = 0; i < 3; ++i) {
    p.qs[i] = a.q_stride[i];
    p.ks[i] = a.k_stride[i];
    p.vs[i] = a.v_stride[i];
    p.os[i] = a.o_stride[i];
  }
  p.heads = a.heads;
  p.seq_q = a.seq_q;
  p.seq_kv = a.seq_kv;
  p.q_tiles = (a.seq_q + sm80::kBM - 1) / sm80::kBM;
  const float scale = a.scale != 0.f ? a.scale : 0.08838834764831845f;
  p.scale_log2 = scale * 1.4426950408889634f;
  const long long blocks = static_cast<long long>(p.q_tiles) * a.heads * a.batch;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  cudaError_t e =
      cudaFuncSetAttribute(sm80::attention_sm80_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sm80::kSmemBytes);
  if (e != cudaSuccess) return e;
  sm80::attention_sm80_kernel<<<static_cast<unsigned>(blocks), sm80::kThreads, sm80::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fluxk
