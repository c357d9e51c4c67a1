// Flash attention forward for head_dim 64 with an additive bias and a keep-mask, any sm_80+ (mma.sync): T5's
// self-attention (relative position bias [1, H, L, L], scale 1) and CLIP's (causal mask). The structure of
// attention_sm80.cu (FlashAttention-2): CTA = 4 warps = 64 query rows, 64-key K/V blocks double-buffered with
// cp.async, S = Q·Kᵀ and O += P·V by mma.sync from ldmatrix fragments, online softmax in fp32 registers, P kept
// in registers. The bias is read straight from global memory into the score fragments (each (query, key) value
// is used once). A 16-bit bias with unit key stride and no mask (T5's) takes the pair path: 4-byte loads of two
// keys, issued one key block ahead and kept raw until the softmax. The general path (any float dtype, strides,
// masks) loads element by element at the block's start: ncu at T5's [1, 64, 512, 64] put 36 M warp instructions
// (~2200 a warp and block) and half of the stall samples on waiting for those loads, 179 us a layer
// (bench/kernels/results/2026-11-26-h100-b8af3e6-t5-attention.txt).
// Napkin math (T5-XXL, 512 tokens): 4·L²·D·H = 4.3 GFLOP and 33.5 MB of bf16 bias per layer: ~15 µs of MMA at
// 300 TFLOP/s and ~12 µs of bias traffic; 24 layers ≈ 0.5–1 ms of the 30 ms T5 budget.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mma.cuh"
#include "vae_t5.h"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kBM = 64, kBN = 64, kD = 64, kThreads = 128;
constexpr int kTileBytes = kBN * kD * 2;  // 8 KB: 64 rows of 128 bytes
constexpr int kSmemBytes = kTileBytes * 5;  // Q + 2 x (K, V) = 40 KB

struct BiasAttnParams {
  const uint16_t *q, *k, *v;
  uint16_t* o;
  int64_t qs[3], ks[3], vs[3], os[3];
  int heads, seq_q, seq_kv, q_tiles;
  float scale_log2;  // scale · log2(e)
  const void* bias;
  ElemType bias_dtype;
  int64_t bs[4];
  const void* mask;
  ElemType mask_dtype;
  int64_t ms[4];
};

#if FLUXK_SM80_DEVICE
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool kHalf>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kHalf) {
    mma_f16_16816(d, a, b0, b1);
  } else {
    mma_bf16_16816(d, a, b0, b1);
  }
}

template <bool kHalf>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (kHalf) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

__device__ __forceinline__ float load_float(const void* p, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ bool mask_keeps(const void* p, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kU8: return static_cast<const uint8_t*>(p)[i] != 0;
    case ElemType::kI32: return static_cast<const int32_t*>(p)[i] != 0;
    case ElemType::kI64: return static_cast<const int64_t*>(p)[i] != 0;
    case ElemType::kF32: return static_cast<const float*>(p)[i] != 0.f;
    case ElemType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) != 0.f;
    case ElemType::kF16: return __half2float(static_cast<const __half*>(p)[i]) != 0.f;
  }
  return true;
}

// rows x 64 tile from global (row stride in elements) into 128-byte swizzled rows; rows >= valid are zeros.
__device__ __forceinline__ void load_tile(uint32_t dst, const uint16_t* src, int64_t row_stride, int rows,
                                          int valid) {
  for (int idx = threadIdx.x; idx < rows * 8; idx += kThreads) {
    const int row = idx / 8, ch = idx % 8;
    const bool ok = row < valid;
    cp_async_16(dst + swz128(row, ch), ok ? src + static_cast<int64_t>(row) * row_stride + ch * 8 : src,
                ok ? 16 : 0);
  }
}
#endif

// Two keys' bias as stored (16-bit, little-endian: the even key in the low half); keys >= seq_kv read nothing.
__device__ __forceinline__ uint32_t bias_pair(const uint16_t* row, int key, int seq_kv) {
  if (key + 1 < seq_kv) return *reinterpret_cast<const uint32_t*>(row + key);
  return key < seq_kv ? static_cast<uint32_t>(row[key]) : 0u;
}

// Half e of a bias pair as a float.
template <bool kHalfBias>
__device__ __forceinline__ float bias_half(uint32_t pair, int e) {
  const uint32_t bits = e ? pair >> 16 : pair & 0xFFFFu;
  if constexpr (kHalfBias) return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  return __uint_as_float(bits << 16);
}

// kPairBias: p.bias is 16-bit (kF16 when kHalfBias, else kBF16), key stride 1, row strides even, no mask.
template <bool kHalf, bool kPairBias, bool kHalfBias>
__global__ void __launch_bounds__(kThreads) attention_bias_kernel(const BiasAttnParams p) {
#if FLUXK_SM80_DEVICE
  __shared__ __align__(128) uint8_t smem[kSmemBytes];
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_k = s_q + kTileBytes;      // 2 stages
  const uint32_t s_v = s_k + 2 * kTileBytes;  // 2 stages

  const int q_tile = blockIdx.x % p.q_tiles;
  const int bh = blockIdx.x / p.q_tiles;
  const int head = bh % p.heads;
  const int batch = bh / p.heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int q0 = q_tile * kBM;

  const uint16_t* q = p.q + batch * p.qs[0] + head * p.qs[1] + static_cast<int64_t>(q0) * p.qs[2];
  const uint16_t* k = p.k + batch * p.ks[0] + head * p.ks[1];
  const uint16_t* v = p.v + batch * p.vs[0] + head * p.vs[1];
  const int kv_blocks = (p.seq_kv + kBN - 1) / kBN;
  // This thread's two query rows (fragment rows g and g+8 of the warp's 16).
  const int row_a = q0 + warp * 16 + g, row_b = row_a + 8;
  const int64_t bias_base = batch * p.bs[0] + head * p.bs[1];
  const int64_t mask_base = batch * p.ms[0] + head * p.ms[1];

  load_tile(s_q, q, p.qs[2], kBM, min(kBM, p.seq_q - q0));
  load_tile(s_k, k, p.ks[2], kBN, min(kBN, p.seq_kv));
  load_tile(s_v, v, p.vs[2], kBN, min(kBN, p.seq_kv));
  cp_async_commit();

  float o[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int h = 0; h < 4; ++h) o[i][h] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running maxima in the log2 domain
  float l[2] = {0.f, 0.f};
  uint32_t qf[4][4];

  // Pair path: bias words of the next key block ([jn][row a / b], keys key0 + 8jn + 2c and + 1), loaded a block
  // ahead. Rows past seq_q read the last row (their outputs are not stored).
  const uint16_t* bias_a = nullptr;
  const uint16_t* bias_b = nullptr;
  uint32_t bias_next[8][2];
  const auto load_bias_pairs = [&](int key0) {
#pragma unroll
    for (int jn = 0; jn < 8; ++jn) {
      bias_next[jn][0] = bias_pair(bias_a, key0 + 8 * jn + 2 * c, p.seq_kv);
      bias_next[jn][1] = bias_pair(bias_b, key0 + 8 * jn + 2 * c, p.seq_kv);
    }
  };
  if constexpr (kPairBias) {
    const uint16_t* bias16 = static_cast<const uint16_t*>(p.bias) + bias_base;
    bias_a = bias16 + static_cast<int64_t>(min(row_a, p.seq_q - 1)) * p.bs[2];
    bias_b = bias16 + static_cast<int64_t>(min(row_b, p.seq_q - 1)) * p.bs[2];
    load_bias_pairs(0);
  }

  for (int j = 0; j < kv_blocks; ++j) {
    const int stage = j % 2;
    const int key0 = j * kBN;
    if (j + 1 < kv_blocks) {
      const int nxt = key0 + kBN;
      load_tile(s_k + (stage ^ 1) * kTileBytes, k + static_cast<int64_t>(nxt) * p.ks[2], p.ks[2], kBN,
                min(kBN, p.seq_kv - nxt));
      load_tile(s_v + (stage ^ 1) * kTileBytes, v + static_cast<int64_t>(nxt) * p.vs[2], p.vs[2], kBN,
                min(kBN, p.seq_kv - nxt));
    }
    cp_async_commit();

    // Additive terms of this block's scores (bias, or -inf for dropped and out-of-range keys), in the
    // accumulator layout: add[jn][h] belongs to row (h < 2 ? row_a : row_b), key key0 + 8jn + 2c + (h & 1).
    // Pair path: this block's bias words instead, the next block's loads issued.
    float add[8][4];
    uint32_t bias_cur[8][2];
    if constexpr (kPairBias) {
#pragma unroll
      for (int jn = 0; jn < 8; ++jn) {
        bias_cur[jn][0] = bias_next[jn][0];
        bias_cur[jn][1] = bias_next[jn][1];
      }
      if (j + 1 < kv_blocks) load_bias_pairs(key0 + kBN);
    }
#pragma unroll
    for (int jn = 0; jn < 8 && !kPairBias; ++jn)
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int key = key0 + 8 * jn + 2 * c + (h & 1);
        const int row = h < 2 ? row_a : row_b;
        float t = 0.f;
        if (key >= p.seq_kv) {
          t = -INFINITY;
        } else if (row < p.seq_q) {
          if (p.bias) t = load_float(p.bias, p.bias_dtype, bias_base + row * p.bs[2] + key * p.bs[3]);
          if (p.mask && !mask_keeps(p.mask, p.mask_dtype, mask_base + row * p.ms[2] + key * p.ms[3])) t = -INFINITY;
        }
        add[jn][h] = t;
      }

    cp_async_wait<1>();
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) ldmatrix_x4(qf[kk], s_q + swz128(warp * 16 + (lane % 16), 2 * kk + lane / 16));
    }

    // S = Q Kᵀ: 16 rows x 64 keys per warp (8 n8 tiles).
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int h = 0; h < 4; ++h) s[i][h] = 0.f;
    const uint32_t kt = s_k + stage * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        const int row = np * 16 + (lane % 8) + 8 * (lane / 16);
        ldmatrix_x4(r, kt + swz128(row, 2 * kk + (lane / 8) % 2));
        mma16816<kHalf>(s[2 * np], qf[kk], r[0], r[1]);
        mma16816<kHalf>(s[2 * np + 1], qf[kk], r[2], r[3]);
      }
    }

    // t = (s·scale + add)·log2(e); online softmax per row (a row's 64 keys live in one lane quad).
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int jn = 0; jn < 8; ++jn)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& t = s[jn][2 * r + e];
          if constexpr (kPairBias) {
            const bool in_range = key0 + 8 * jn + 2 * c + e < p.seq_kv;
            t = in_range ? fmaf(t, p.scale_log2, bias_half<kHalfBias>(bias_cur[jn][r], e) * 1.4426950408889634f)
                         : -INFINITY;
          } else {
            t = fmaf(t, p.scale_log2, add[jn][2 * r + e] * 1.4426950408889634f);
          }
          mx = fmaxf(mx, t);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      // A row with no kept key so far keeps m = -inf; subtracting 0 instead keeps every exponent -inf -> 0.
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = ex2(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int jn = 0; jn < 8; ++jn)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& t = s[jn][2 * r + e];
          t = ex2(t - m_use);
          sum += t;
        }
      l[r] = l[r] * alpha[r] + sum;
    }
#pragma unroll
    for (int dn = 0; dn < 8; ++dn) {
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
      pa[0] = pack2<kHalf>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2<kHalf>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2<kHalf>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2<kHalf>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < 4; ++dp) {
        uint32_t r[4];
        const int row = kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
        ldmatrix_x4_trans(r, vt + swz128(row, 2 * dp + lane / 16));
        mma16816<kHalf>(o[2 * dp], pa, r[0], r[1]);
        mma16816<kHalf>(o[2 * dp + 1], pa, r[2], r[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
  }
  const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f, inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
  uint16_t* ob = p.o + batch * p.os[0] + head * p.os[1];
#pragma unroll
  for (int dn = 0; dn < 8; ++dn) {
    const int col = dn * 8 + 2 * c;
    if (row_a < p.seq_q)
      *reinterpret_cast<uint32_t*>(ob + static_cast<int64_t>(row_a) * p.os[2] + col) =
          pack2<kHalf>(o[dn][0] * inv0, o[dn][1] * inv0);
    if (row_b < p.seq_q)
      *reinterpret_cast<uint32_t*>(ob + static_cast<int64_t>(row_b) * p.os[2] + col) =
          pack2<kHalf>(o[dn][2] * inv1, o[dn][3] * inv1);
  }
#endif
}

}  // namespace
}  // namespace sm80

cudaError_t attention_bias_d64(const BiasAttentionArgs& a, cudaStream_t stream) {
  using namespace sm80;
  if (a.dtype != ElemType::kBF16 && a.dtype != ElemType::kF16) return cudaErrorInvalidValue;
  if (a.head_dim != kD || a.batch < 0 || a.heads < 0 || a.seq_q < 0 || a.seq_kv <= 0) return cudaErrorInvalidValue;
  if (a.bias && a.bias_dtype != ElemType::kF32 && a.bias_dtype != ElemType::kBF16 && a.bias_dtype != ElemType::kF16)
    return cudaErrorInvalidValue;
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return cudaSuccess;
  if (!a.q || !a.k || !a.v || !a.o) return cudaErrorInvalidValue;
  for (int i = 0; i < 3; ++i)
    if (a.q_stride[i] % 8 || a.k_stride[i] % 8 || a.v_stride[i] % 8 || a.o_stride[i] % 2) return cudaErrorInvalidValue;
  const uintptr_t bits =
      reinterpret_cast<uintptr_t>(a.q) | reinterpret_cast<uintptr_t>(a.k) | reinterpret_cast<uintptr_t>(a.v);
  if ((bits & 15) || (reinterpret_cast<uintptr_t>(a.o) & 3)) return cudaErrorInvalidValue;
  if (!device_has_sm80()) return cudaErrorNotSupported;
  BiasAttnParams p;
  p.q = static_cast<const uint16_t*>(a.q);
  p.k = static_cast<const uint16_t*>(a.k);
  p.v = static_cast<const uint16_t*>(a.v);
  p.o = static_cast<uint16_t*>(a.o);
  for (int i = 0; i < 3; ++i) {
    p.qs[i] = a.q_stride[i];
    p.ks[i] = a.k_stride[i];
    p.vs[i] = a.v_stride[i];
    p.os[i] = a.o_stride[i];
  }
  p.heads = a.heads;
  p.seq_q = a.seq_q;
  p.seq_kv = a.seq_kv;
  p.q_tiles = (a.seq_q + kBM - 1) / kBM;
  p.scale_log2 = a.scale * 1.4426950408889634f;
  p.bias = a.bias;
  p.bias_dtype = a.bias_dtype;
  p.mask = a.mask;
  p.mask_dtype = a.mask_dtype;
  for (int i = 0; i < 4; ++i) {
    p.bs[i] = a.bias_stride[i];
    p.ms[i] = a.mask_stride[i];
  }
  const long long blocks = static_cast<long long>(p.q_tiles) * a.heads * a.batch;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const bool half_bias = a.bias_dtype == ElemType::kF16;
  const bool pairs = a.bias && !a.mask && (half_bias || a.bias_dtype == ElemType::kBF16) && a.bias_stride[3] == 1 &&
                     a.bias_stride[0] % 2 == 0 && a.bias_stride[1] % 2 == 0 && a.bias_stride[2] % 2 == 0 &&
                     (reinterpret_cast<uintptr_t>(a.bias) & 3) == 0;
  const dim3 grid(static_cast<unsigned>(blocks));
  if (a.dtype == ElemType::kF16) {
    if (pairs && half_bias) attention_bias_kernel<true, true, true><<<grid, kThreads, 0, stream>>>(p);
    else if (pairs) attention_bias_kernel<true, true, false><<<grid, kThreads, 0, stream>>>(p);
    else attention_bias_kernel<true, false, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    if (pairs && half_bias) attention_bias_kernel<false, true, true><<<grid, kThreads, 0, stream>>>(p);
    else if (pairs) attention_bias_kernel<false, true, false><<<grid, kThreads, 0, stream>>>(p);
    else attention_bias_kernel<false, false, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace fluxk
