// Portable GEMMs for sm_80+ (mma.sync m16n8k16, cp.async multistage pipeline, ldmatrix):
//   bf16:  C[M,N] = epilogue(A[M,K] · W[N,K]ᵀ)
//   NF4:   the same with W dequantized from packed NF4 in the main loop (fragments are built from
//          the packed bytes in shared memory; no bf16 weight tile is ever stored).
//   f32:   float32 X · bf16 W, exact up to summation order: X split into three bf16 parts
//          (split_f32_bf16x3 below), one GEMM over the parts with a float32 store. mma.sync adds into
//          its accumulator with truncation; each W k-block's parts are summed in a fresh register tile
//          and added to the float32 total with round-to-nearest (gemm_bf16.cu says why).
// CTA tile 128x128, k-block 64, 3 stages, 8 warps in a 2 (M) x 4 (N) grid of 64x32 warp tiles.
// Slower than the wgmma kernels on Hopper; this is the path for Ampere/Ada and a cross-check.
#include "../sm90/epilogue.cuh"
#include "../sm90/kernels.h"
#include "../sm90/nf4.cuh"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3, kThreads = 256;
constexpr int kATileBytes = kBM * kBK * 2;      // 16 KB, swizzled 128-byte rows
constexpr int kBTileBytes = kBN * kBK * 2;      // 16 KB (bf16 weights)
constexpr int kPackedTileBytes = kBN * kBK / 2;  // 4 KB (NF4 weights)

template <bool kNf4>
struct Sm80Config {
  static constexpr int kWBytes = kNf4 ? kPackedTileBytes : kBTileBytes;
  static constexpr int kStageBytes = kATileBytes + kWBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes + (kNf4 ? 16 * 32 * 4 : 0);
};

struct Sm80Params {
  const __nv_bfloat16* a;
  int64_t lda;
  const __nv_bfloat16* w;  // bf16 path
  int64_t ldw;
  Nf4Weight q;             // NF4 path
  __nv_bfloat16* c;
  float* c_f32;            // float32 output (kF32Out)
  int64_t ldc;
  int m, n, k;
  int a_parts = 1;         // k-blocks of A per k-block of W (GemmArgs::a_parts)
  EpilogueArgs epi;
};

template <bool kNf4, int EPI, bool kF32Out>
__global__ void __launch_bounds__(kThreads) gemm_sm80_kernel(const Sm80Params p) {
#if FLUXK_SM80_DEVICE
  using Cfg = Sm80Config<kNf4>;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t smem_base = smem_u32(smem);
  float* lut = reinterpret_cast<float*>(smem + kStages * Cfg::kStageBytes);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int warp_m = warp / 4;  // 0..1
  const int warp_n = warp % 4;  // 0..3
  const int m0 = blockIdx.y * kBM;
  const int n0 = blockIdx.x * kBN;
  const int k_blocks = p.a_parts * ((p.k + kBK - 1) / kBK);
  const int ka = p.a_parts == 1 ? p.k : k_blocks * kBK;  // A's columns
  if (kNf4) {
    fill_lane_lut(lut, tid, kThreads);
    __syncthreads();
  }

  auto load_stage = [&](int stage, int kb) {
    const uint32_t a_dst = smem_base + stage * Cfg::kStageBytes;
    const uint32_t w_dst = a_dst + kATileBytes;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = tid + i * kThreads;
      const int row = idx / 8, ch = idx % 8;
      const int gr = m0 + row, gk = kb * kBK + ch * 8;
      const bool ok = gr < p.m && gk < ka;
      cp_async_16(a_dst + swz128(row, ch), ok ? p.a + static_cast<int64_t>(gr) * p.lda + gk : p.a, ok ? 16 : 0);
    }
    if (!kNf4) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int idx = tid + i * kThreads;
        const int row = idx / 8, ch = idx % 8;
        const int gn = n0 + row, gk = (kb / p.a_parts) * kBK + ch * 8;
        const bool ok = gn < p.n && gk < p.k;
        cp_async_16(w_dst + swz128(row, ch), ok ? p.w + static_cast<int64_t>(gn) * p.ldw + gk : p.w, ok ? 16 : 0);
      }
    } else {
      // 128 rows x 32 packed bytes: one 16-byte piece per thread, row-major (32-byte rows).
      const int row = tid / 2, half = tid % 2;
      const int gn = n0 + row;
      const bool ok = gn < p.n;
      const uint8_t* src = p.q.packed + (static_cast<int64_t>(gn) * p.k + kb * kBK) / 2 + half * 16;
      cp_async_16(w_dst + row * 32 + half * 16, ok ? src : p.q.packed, ok ? 16 : 0);
    }
  };

  float acc[4][4][4];
  float part[kF32Out ? 4 : 1][4][4];  // kF32Out: this W k-block's sum over the parts of A
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 4; ++h) acc[i][j][h] = 0.f;

  // NF4: this thread's B rows are n = warp_n*32 + 8*nt + g; their absmax per k-block.
  float scale[4] = {0.f, 0.f, 0.f, 0.f};
  auto load_scales = [&](int kb, float (&s)[4]) {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int gn = n0 + warp_n * 32 + 8 * nt + g;
      s[nt] = gn < p.n ? nf4_absmax(p.q, static_cast<int64_t>(gn) * (p.k / 64) + kb) : 0.f;
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_blocks) load_stage(s, s);
    cp_async_commit();
  }
  if (kNf4 && k_blocks > 0) load_scales(0, scale);

  for (int kb = 0; kb < k_blocks; ++kb) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int next = kb + kStages - 1;
      if (next < k_blocks) load_stage(next % kStages, next);
      cp_async_commit();
    }
    float scale_next[4] = {0.f, 0.f, 0.f, 0.f};
    if (kNf4 && kb + 1 < k_blocks) load_scales(kb + 1, scale_next);

    if constexpr (kF32Out) {
      if (kb % p.a_parts == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 4; ++h) part[i][j][h] = 0.f;
      }
    }
    const int stage = kb % kStages;
    const uint32_t a_tile = smem_base + stage * Cfg::kStageBytes;
    const uint32_t w_tile = a_tile + kATileBytes;
    const uint8_t* w_packed = smem + stage * Cfg::kStageBytes + kATileBytes;

    // NF4: the 32 packed bytes of each of this thread's 4 B rows for the whole k-block.
    uint32_t packed[4][8];
    if (kNf4) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int row = warp_n * 32 + 8 * nt + g;
        const uint4 lo = *reinterpret_cast<const uint4*>(w_packed + row * 32);
        const uint4 hi = *reinterpret_cast<const uint4*>(w_packed + row * 32 + 16);
        packed[nt][0] = lo.x; packed[nt][1] = lo.y; packed[nt][2] = lo.z; packed[nt][3] = lo.w;
        packed[nt][4] = hi.x; packed[nt][5] = hi.y; packed[nt][6] = hi.z; packed[nt][7] = hi.w;
      }
    }

#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[4][4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int row = warp_m * 64 + mt * 16 + (lane % 16);
        ldmatrix_x4(af[mt], a_tile + swz128(row, 2 * kk + lane / 16));
      }
      uint32_t bf[4][2];
      if (!kNf4) {
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t r[4];
          const int row = warp_n * 32 + np * 16 + (lane % 8) + 8 * (lane / 16);
          ldmatrix_x4(r, w_tile + swz128(row, 2 * kk + (lane / 8) % 2));
          bf[2 * np][0] = r[0];
          bf[2 * np][1] = r[1];
          bf[2 * np + 1][0] = r[2];
          bf[2 * np + 1][1] = r[3];
        }
      } else {
        // b0 = k (2c, 2c+1) of slice kk = byte 8kk + c (byte c of word 2kk); b1 = k (2c+8, 2c+9)
        // = byte c of word 2kk+1.
        const float* lut_lane = lut + lane;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          bf[nt][0] = nf4_pair((packed[nt][2 * kk] >> (8 * c)) & 0xFF, scale[nt], lut_lane);
          bf[nt][1] = nf4_pair((packed[nt][2 * kk + 1] >> (8 * c)) & 0xFF, scale[nt], lut_lane);
        }
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          if constexpr (kF32Out) {
            mma_bf16_16816(part[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
          } else {
            mma_bf16_16816(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
          }
        }
    }
    if constexpr (kF32Out) {
      if ((kb + 1) % p.a_parts == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 4; ++h) acc[i][j][h] += part[i][j][h];
      }
    }
    if (kNf4) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) scale[nt] = scale_next[nt];
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
    const int row = m0 + warp_m * 64 + mt * 16 + g;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int col = n0 + warp_n * 32 + nt * 8 + 2 * c;
      if (col >= p.n) continue;
      if (kF32Out) {
        const float b0 = p.epi.bias_f32 ? p.epi.bias_f32[col] : 0.f;
        const float b1 = p.epi.bias_f32 ? p.epi.bias_f32[col + 1] : 0.f;
        if (row < p.m)
          *reinterpret_cast<float2*>(p.c_f32 + static_cast<int64_t>(row) * p.ldc + col) =
              make_float2(acc[mt][nt][0] + b0, acc[mt][nt][1] + b1);
        if (row + 8 < p.m)
          *reinterpret_cast<float2*>(p.c_f32 + static_cast<int64_t>(row + 8) * p.ldc + col) =
              make_float2(acc[mt][nt][2] + b0, acc[mt][nt][3] + b1);
        continue;
      }
      if (row < p.m)
        *reinterpret_cast<uint32_t*>(p.c + static_cast<int64_t>(row) * p.ldc + col) =
            epilogue_pair<EPI>(p.epi, acc[mt][nt][0], acc[mt][nt][1], row, col);
      if (row + 8 < p.m)
        *reinterpret_cast<uint32_t*>(p.c + static_cast<int64_t>(row + 8) * p.ldc + col) =
            epilogue_pair<EPI>(p.epi, acc[mt][nt][2], acc[mt][nt][3], row + 8, col);
    }
  }
#endif
}

template <bool kNf4, int EPI, bool kF32Out = false>
cudaError_t launch(const Sm80Params& p, cudaStream_t stream) {
  using Cfg = Sm80Config<kNf4>;
  auto kernel = gemm_sm80_kernel<kNf4, EPI, kF32Out>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  const dim3 grid((p.n + kBN - 1) / kBN, (p.m + kBM - 1) / kBM);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  kernel<<<grid, kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <bool kNf4>
cudaError_t launch_epi(const Sm80Params& p, cudaStream_t stream) {
  if constexpr (!kNf4) {
    if (p.c_f32) return launch<false, 0, true>(p, stream);
  }
  switch (p.epi.kind) {
    case Epilogue::kNone: return launch<kNf4, 0>(p, stream);
    case Epilogue::kGeluTanh: return launch<kNf4, 1>(p, stream);
    case Epilogue::kGateResidual: return launch<kNf4, 2>(p, stream);
    case Epilogue::kQkNormRope: break;  // sm90 only
  }
  return cudaErrorInvalidValue;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int64_t round_up64(int64_t k) { return (k + 63) / 64 * 64; }

// x [M,K] float32 → [M, 3·K64] bf16: for each 64-column block b, parts p = 0, 1, 2 at columns
// 64·(3b + p) (GemmArgs::a_parts = 3). Truncation (not rounding) makes the split exact: x1 keeps the
// sign, exponent and top 7 stored mantissa bits of x, r = x − x1 is exact in float32 and has at most
// 16 significant bits, x2 = its top 8, x3 = r − x2 the remaining ≤ 8 (exact in bf16). Truncation also
// never rounds a finite value up to infinity. Non-finite x: x1 = x (NaN stays NaN), tails 0.
__device__ __forceinline__ void split3(float x, __nv_bfloat16& p1, __nv_bfloat16& p2, __nv_bfloat16& p3) {
  const uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) {
    p1 = __float2bfloat16(x);
    p2 = p3 = __float2bfloat16(0.f);
    return;
  }
  const float x1 = __uint_as_float(bits & 0xffff0000u);
  const float r = x - x1;
  const float x2 = __uint_as_float(__float_as_uint(r) & 0xffff0000u);
  p1 = __float2bfloat16_rz(x1);
  p2 = __float2bfloat16_rz(x2);
  p3 = __float2bfloat16_rz(r - x2);
}

// One thread per 8 columns of a row: two 16-byte loads (or guarded scalar ones), three 16-byte stores.
__global__ void split_f32_bf16x3_kernel(const float* __restrict__ x, int64_t ldx, int m, int k, int chunks,
                                        bool vec, __nv_bfloat16* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(m) * chunks) return;
  const int row = static_cast<int>(i / chunks), chunk = static_cast<int>(i % chunks);
  const int col = chunk * 8;
  const float* src = x + static_cast<int64_t>(row) * ldx + col;
  float v[8];
  if (vec && col + 8 <= k) {
    const float4 lo = *reinterpret_cast<const float4*>(src);
    const float4 hi = *reinterpret_cast<const float4*>(src + 4);
    v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w;
    v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = col + j < k ? src[j] : 0.f;
  }
  alignas(16) __nv_bfloat16 parts[3][8];
#pragma unroll
  for (int j = 0; j < 8; ++j) split3(v[j], parts[0][j], parts[1][j], parts[2][j]);
  const int block = col / 64, within = col % 64;
  __nv_bfloat16* dst = out + static_cast<int64_t>(row) * 3 * (static_cast<int64_t>(chunks) * 8) + block * 192 + within;
#pragma unroll
  for (int p = 0; p < 3; ++p) *reinterpret_cast<uint4*>(dst + 64 * p) = *reinterpret_cast<const uint4*>(parts[p]);
}

}  // namespace
}  // namespace sm80

cudaError_t gemm_bf16_check(const GemmArgs& a) {
  using sm80::aligned16;
  // kQkNormRope writes its own outputs (EpilogueArgs::q, k, v) instead of C
  const bool qk = a.epi.kind == Epilogue::kQkNormRope;
  if (a.m < 0 || a.n < 0 || a.k <= 0 || !a.a || !a.w) return cudaErrorInvalidValue;
  if (qk ? (a.c || a.c_f32 || !qk_norm_rope_args_valid(a.epi, a.m, a.n)) : (!a.c == !a.c_f32))
    return cudaErrorInvalidValue;
  if (a.k % 8 || a.n % 8 || a.lda % 8 || a.ldw % 8 || a.ldc % 8) return cudaErrorInvalidValue;
  if (!aligned16(a.a) || !aligned16(a.w) || (!qk && !aligned16(a.c ? static_cast<const void*>(a.c) : a.c_f32)))
    return cudaErrorInvalidValue;
  if (a.a_parts < 1 || a.a_parts > 4) return cudaErrorInvalidValue;
  if (a.a2 && (a.a_parts != 1 || a.c_f32 || a.k_split <= 0 || a.k_split >= a.k || a.k_split % 64 || a.lda2 % 8 ||
               !aligned16(a.a2)))
    return cudaErrorInvalidValue;
  if (a.a_parts > 1 && a.lda < a.a_parts * sm80::round_up64(a.k)) return cudaErrorInvalidValue;
  if (a.c_f32 && (a.epi.kind != Epilogue::kNone || a.epi.bias || a.cluster > 1)) return cudaErrorInvalidValue;
  if (a.epi.bias_f32 && (!a.c_f32 || (reinterpret_cast<uintptr_t>(a.epi.bias_f32) & 7)))
    return cudaErrorInvalidValue;
  if (a.epi.kind == Epilogue::kGateResidual &&
      (!a.epi.residual || !a.epi.gate || a.epi.gate_rows_per_batch <= 0 || a.epi.ldr % 2 || a.epi.ldg % 2))
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t gemm_bf16_sm80(const GemmArgs& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return a.m < 0 || a.n < 0 ? cudaErrorInvalidValue : cudaSuccess;
  const cudaError_t valid = gemm_bf16_check(a);
  if (valid != cudaSuccess) return valid;
  if (a.a2) return cudaErrorInvalidValue;  // two-part A: sm90 ping-pong only
  sm80::Sm80Params p{};
  p.a = a.a;
  p.lda = a.lda;
  p.w = a.w;
  p.ldw = a.ldw;
  p.c = a.c;
  p.c_f32 = a.c_f32;
  p.ldc = a.ldc;
  p.m = a.m;
  p.n = a.n;
  p.k = a.k;
  p.a_parts = a.a_parts;
  p.epi = a.epi;
  return sm80::launch_epi<false>(p, stream);
}

cudaError_t split_f32_bf16x3(const float* x, int64_t ldx, int m, int k, __nv_bfloat16* out, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (m < 0 || k <= 0 || !x || !out || ldx < k || !sm80::aligned16(out)) return cudaErrorInvalidValue;
  const int chunks = static_cast<int>(sm80::round_up64(k) / 8);
  const bool vec = ldx % 4 == 0 && sm80::aligned16(x);
  const int64_t threads = static_cast<int64_t>(m) * chunks;
  const int block = 256;
  const int64_t grid = (threads + block - 1) / block;
  if (grid > 0x7fffffff) return cudaErrorInvalidValue;
  sm80::split_f32_bf16x3_kernel<<<static_cast<unsigned>(grid), block, 0, stream>>>(x, ldx, m, k, chunks, vec, out);
  return cudaGetLastError();
}

// Napkin math (T5-XXL wo at 512 tokens: M 512, K 10240, N 4096; H100 SXM): 3 × 2MNK = 129 GFLOP, at the
// ~600 TFLOP/s our bf16 GEMM reaches 0.215 ms (the float32 SIMT kernel: 43 GFLOP at ~14 TFLOP/s = 3 ms).
// Bytes: x 21 MB read + 31.5 MB of parts written by the split (≈ 0.02 ms at 3 TB/s), then the parts
// (31.5 MB) and W (84 MB, each block re-read for its 3 parts straight from L2) and C (8.4 MB): the
// GEMM stays compute bound. 24 layers: ≈ 5.7 ms against 72 ms.
cudaError_t split_f32_gemm_args(const GemmF32Args& f, GemmArgs* gemm, cudaStream_t stream) {
  GemmArgs& a = *gemm;
  a = GemmArgs{};
  a.a = f.workspace;
  a.lda = split_f32_ld(f.k);
  a.w = f.w;
  a.ldw = f.ldw;
  a.c_f32 = f.c;
  a.ldc = f.ldc;
  a.m = f.m;
  a.n = f.n;
  a.k = f.k;
  a.a_parts = 3;
  a.epi.bias_f32 = f.bias;
  if (f.m == 0 || f.n == 0) return f.m < 0 || f.n < 0 ? cudaErrorInvalidValue : cudaSuccess;
  if (!f.x || f.ldx < f.k || gemm_bf16_check(a) != cudaSuccess) return cudaErrorInvalidValue;
  return split_f32_bf16x3(f.x, f.ldx, f.m, f.k, f.workspace, stream);
}

cudaError_t gemm_f32_bf16w_sm80(const GemmF32Args& f, cudaStream_t stream) {
  GemmArgs a;
  const cudaError_t e = split_f32_gemm_args(f, &a, stream);
  if (e != cudaSuccess) return e;
  return gemm_bf16_sm80(a, stream);
}

cudaError_t gemm_nf4_sm80(const Nf4GemmArgs& a, cudaStream_t stream) {
  if (a.m == 0) return cudaSuccess;
  if (!nf4_args_valid(a) || a.a2) return cudaErrorInvalidValue;
  sm80::Sm80Params p{};
  p.a = a.a;
  p.lda = a.lda;
  p.q = a.w;
  p.c = a.c;
  p.ldc = a.ldc;
  p.m = a.m;
  p.n = a.w.n;
  p.k = a.w.k;
  p.epi = a.epi;
  return sm80::launch_epi<true>(p, stream);
}

}  // namespace fluxk
