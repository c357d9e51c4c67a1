// Implicit-GEMM 2-D convolution on tensor cores (mma.sync m16n8k16, fp32 accumulation), any sm_80+.
//
// GEMM view: out[pixel, co] = Σ_k A[pixel, k] · W[co, k], k = (ky, kx, ci) with ci fastest, so that with NHWC
// activations a 16-byte chunk of A (8 consecutive k) is 8 consecutive channels of one input pixel: the loader
// moves A tiles with cp.async like a plain GEMM, computing each row's input pixel (padding, stride, nearest-2x
// upsampling) instead of materialising im2col. The 3x3 taps re-read each input pixel 9 times, from L2.
// CTA tile 128 pixels x 256 output channels x 64 k (cout < 256: 256 x 128; cout <= 32: 128 x 32), 4-stage cp.async
// pipeline, 8 warps of 64 x 64 (two ldmatrix.x4 per four mma instead of three with 64 x 32 warps, and half the
// L2 re-reads of A or W per output against 128 x 128 CTA tiles: 243 registers, one CTA an SM), ldmatrix from
// 128-byte-swizzled rows (the layout of gemm_sm80.cu). The epilogue stages the fp32 tile in shared memory so that
// NHWC rows and NCHW planes are both written as coalesced 16-byte vectors.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mma.cuh"
#include "vae_t5.h"

namespace fluxk {
namespace sm80 {
namespace {

template <int BM_, int BN_, int WM_, int WN_, int STAGES_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, kStages = STAGES_;
  static constexpr int kWarpsM = BM / WM, kWarpsN = BN / WN;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int kATile = BM * 128, kBTile = BN * 128;  // rows of 64 two-byte values
  static constexpr int kStageBytes = kATile + kBTile;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  // fp32 staging of the output tile: [pixel][co] for NHWC (pitch BN+8: conflict-free float2 writes per
  // half-warp), [co][pixel] for NCHW (pitch BM+4: conflict-free scalar writes); both keep 16-byte rows.
  static constexpr int kNhwcPitch = BN + 8, kNchwPitch = BM + 4;
  static constexpr int kEpiBytes =
      (BM * kNhwcPitch > BN * kNchwPitch ? BM * kNhwcPitch : BN * kNchwPitch) * 4;
  static constexpr int kSmemBytes = kPipeBytes > kEpiBytes ? kPipeBytes : kEpiBytes;
  static constexpr int kRowsPerPass = kThreads / 8;
  static constexpr int kAChunks = BM / kRowsPerPass;  // 16-byte chunks per thread per stage
  static constexpr int kBChunks = BN / kRowsPerPass;
  static_assert(BM % kRowsPerPass == 0 && BN % kRowsPerPass == 0, "tile rows must split over the threads");
  static_assert(NT % 2 == 0 && WM % 16 == 0, "warp tile");
};
using WideTile = Tile<256, 128, 64, 64, 4>;
using NarrowTile = Tile<128, 32, 16, 32, 4>;
using WidestTile = Tile<128, 256, 64, 64, 4>;

// The CTA tile's output channels / pixels for `cout`.
int tile_n(int cout) { return cout <= 32 ? NarrowTile::BN : cout >= 256 ? WidestTile::BN : WideTile::BN; }
int tile_m(int cout) { return cout <= 32 ? NarrowTile::BM : cout >= 256 ? WidestTile::BM : WideTile::BM; }

enum OutKind : int { kOutNhwc = 0, kOutNchw = 1, kOutF32 = 2 };

struct ConvParams {
  const uint16_t* x;
  int64_t xps;
  const uint16_t* w;
  int64_t wrs;
  const uint16_t* bias;
  void* out;
  int64_t ors;
  int64_t split_stride;
  int M, N, K;
  int cin, kh, kw, stride, pad;
  int in_h, in_w, eff_h, eff_w, up;
  int out_w, ohw;
  // A band of output rows (conv2d_nchw): its first row, the first input row held in x (x holds in_h rows), and
  // the NCHW output's channel-plane stride. One band: 0, 0, ohw.
  int out_row0, in_row0, plane;
  int n_tiles, kblocks, kb_per_split;
  int out_vec;  // 16-byte output stores are aligned
};

#if FLUXK_SM80_DEVICE
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool kHalf>
__device__ __forceinline__ float to_float(uint16_t v) {
  if constexpr (kHalf) {
    return __half2float(__ushort_as_half(v));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(v));
  }
}

template <bool kHalf>
__device__ __forceinline__ uint16_t from_float(float v) {
  if constexpr (kHalf) {
    return __half_as_ushort(__float2half_rn(v));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

template <bool kHalf>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  return uint32_t(from_float<kHalf>(lo)) | (uint32_t(from_float<kHalf>(hi)) << 16);
}
#endif

template <class Cfg, bool kHalf, int kOut>
__global__ void __launch_bounds__(Cfg::kThreads, 1) conv_kernel(const ConvParams p) {
#if FLUXK_SM80_DEVICE
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t smem_base = smem_u32(smem);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = lane % 4;
  const int warp_m = warp / Cfg::kWarpsN, warp_n = warp % Cfg::kWarpsN;
  const int m_tile = blockIdx.x / p.n_tiles, n_tile = blockIdx.x % p.n_tiles;
  const int m0 = m_tile * Cfg::BM, n0 = n_tile * Cfg::BN;
  const int kb_begin = blockIdx.y * p.kb_per_split;
  const int kb_end = min(p.kblocks, kb_begin + p.kb_per_split);
  const int k_blocks = kb_end - kb_begin;

  // This thread loads chunk column `ch` (channels ch*8..ch*8+7 of the k-block) of rows tid/8 + i*kRowsPerPass.
  const int ch = tid % 8, row0 = tid / 8;
  int pix_base[Cfg::kAChunks], iy0[Cfg::kAChunks], ix0[Cfg::kAChunks];
#pragma unroll
  for (int i = 0; i < Cfg::kAChunks; ++i) {
    const int m = m0 + row0 + i * Cfg::kRowsPerPass;
    if (m < p.M) {
      const int b = m / p.ohw, pix = m - b * p.ohw;
      const int band_row = pix / p.out_w, ox = pix - band_row * p.out_w;
      pix_base[i] = b * p.in_h * p.in_w;
      iy0[i] = (p.out_row0 + band_row) * p.stride - p.pad;
      ix0[i] = ox * p.stride - p.pad;
    } else {
      pix_base[i] = 0;
      iy0[i] = -(1 << 30);  // never inside the image: the row loads zeros
      ix0[i] = 0;
    }
  }
  // Reduction position of this thread's chunk: k = ((ky * kw) + kx) * cin + ci, advanced 64 per k-block.
  int kb_next = kb_begin;
  int ci, ky, kx;
  {
    const int kg = kb_begin * 64 + ch * 8;
    const int tap = kg / p.cin;
    ci = kg - tap * p.cin;
    ky = tap / p.kw;
    kx = tap - ky * p.kw;
  }

  auto load_stage = [&](int stage) {
    const uint32_t a_dst = smem_base + stage * Cfg::kStageBytes;
    const uint32_t b_dst = a_dst + Cfg::kATile;
    const bool k_in = ky < p.kh;
#pragma unroll
    for (int i = 0; i < Cfg::kAChunks; ++i) {
      const int iy = iy0[i] + ky, ix = ix0[i] + kx;
      const bool ok = k_in && static_cast<unsigned>(iy) < static_cast<unsigned>(p.eff_h) &&
                      static_cast<unsigned>(ix) < static_cast<unsigned>(p.eff_w);
      const uint16_t* src = p.x;
      if (ok)
        src = p.x + static_cast<int64_t>(pix_base[i] + ((iy >> p.up) - p.in_row0) * p.in_w + (ix >> p.up)) * p.xps + ci;
      cp_async_16(a_dst + swz128(row0 + i * Cfg::kRowsPerPass, ch), src, ok ? 16 : 0);
    }
    const int kk = kb_next * 64 + ch * 8;
#pragma unroll
    for (int j = 0; j < Cfg::kBChunks; ++j) {
      const int row = row0 + j * Cfg::kRowsPerPass;
      const int n = n0 + row;
      const bool ok = n < p.N && kk < p.K;
      cp_async_16(b_dst + swz128(row, ch), ok ? p.w + static_cast<int64_t>(n) * p.wrs + kk : p.w, ok ? 16 : 0);
    }
    ++kb_next;
    ci += 64;
    while (ci >= p.cin) {
      ci -= p.cin;
      if (++kx == p.kw) {
        kx = 0;
        ++ky;
      }
    }
  };

  float acc[Cfg::MT][Cfg::NT][4];
#pragma unroll
  for (int i = 0; i < Cfg::MT; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::NT; ++j)
#pragma unroll
      for (int h = 0; h < 4; ++h) acc[i][j][h] = 0.f;

#pragma unroll
  for (int s = 0; s < Cfg::kStages - 1; ++s) {
    if (s < k_blocks) load_stage(s);
    cp_async_commit();
  }

  for (int kb = 0; kb < k_blocks; ++kb) {
    cp_async_wait<Cfg::kStages - 2>();
    __syncthreads();  // stage kb landed for every thread; stage kb-1 is no longer read
    if (kb + Cfg::kStages - 1 < k_blocks) load_stage((kb + Cfg::kStages - 1) % Cfg::kStages);
    cp_async_commit();

    const uint32_t a_tile = smem_base + (kb % Cfg::kStages) * Cfg::kStageBytes;
    const uint32_t b_tile = a_tile + Cfg::kATile;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t af[Cfg::MT][4];
#pragma unroll
      for (int mt = 0; mt < Cfg::MT; ++mt) {
        const int row = warp_m * Cfg::WM + mt * 16 + (lane % 16);
        ldmatrix_x4(af[mt], a_tile + swz128(row, 2 * kk + lane / 16));
      }
      uint32_t bf[Cfg::NT][2];
#pragma unroll
      for (int np = 0; np < Cfg::NT / 2; ++np) {
        uint32_t r[4];
        const int row = warp_n * Cfg::WN + np * 16 + (lane % 8) + 8 * (lane / 16);
        ldmatrix_x4(r, b_tile + swz128(row, 2 * kk + (lane / 8) % 2));
        bf[2 * np][0] = r[0];
        bf[2 * np][1] = r[1];
        bf[2 * np + 1][0] = r[2];
        bf[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < Cfg::MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < Cfg::NT; ++nt) {
          if constexpr (kHalf) {
            mma_f16_16816(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
          } else {
            mma_bf16_16816(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
          }
        }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the output staging area

  float* st = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < Cfg::MT; ++mt) {
    const int row = warp_m * Cfg::WM + mt * 16 + g;
#pragma unroll
    for (int nt = 0; nt < Cfg::NT; ++nt) {
      const int col = warp_n * Cfg::WN + nt * 8 + 2 * c;
      if constexpr (kOut == kOutNchw) {
        st[col * Cfg::kNchwPitch + row] = acc[mt][nt][0];
        st[(col + 1) * Cfg::kNchwPitch + row] = acc[mt][nt][1];
        st[col * Cfg::kNchwPitch + row + 8] = acc[mt][nt][2];
        st[(col + 1) * Cfg::kNchwPitch + row + 8] = acc[mt][nt][3];
      } else {
        *reinterpret_cast<float2*>(st + row * Cfg::kNhwcPitch + col) = make_float2(acc[mt][nt][0], acc[mt][nt][1]);
        *reinterpret_cast<float2*>(st + (row + 8) * Cfg::kNhwcPitch + col) =
            make_float2(acc[mt][nt][2], acc[mt][nt][3]);
      }
    }
  }
  __syncthreads();

  if constexpr (kOut == kOutNchw) {
    // 8 consecutive pixels of one output channel per thread: 16 threads cover a channel's 128 pixels.
    uint16_t* out = static_cast<uint16_t*>(p.out);
    for (int idx = tid; idx < Cfg::BN * (Cfg::BM / 8); idx += Cfg::kThreads) {
      const int cl = idx / (Cfg::BM / 8), pv = idx % (Cfg::BM / 8);
      const int co = n0 + cl, m = m0 + pv * 8;
      if (co >= p.N || m >= p.M) continue;
      const float bv = p.bias ? to_float<kHalf>(p.bias[co]) : 0.f;
      const float4 lo = *reinterpret_cast<const float4*>(st + cl * Cfg::kNchwPitch + pv * 8);
      const float4 hi = *reinterpret_cast<const float4*>(st + cl * Cfg::kNchwPitch + pv * 8 + 4);
      const float v[8] = {lo.x + bv, lo.y + bv, lo.z + bv, lo.w + bv, hi.x + bv, hi.y + bv, hi.z + bv, hi.w + bv};
      if (p.out_vec && m + 8 <= p.M) {
        const int b = m / p.ohw, pix = m - b * p.ohw;
        uint4 packed;
        packed.x = pack_pair<kHalf>(v[0], v[1]);
        packed.y = pack_pair<kHalf>(v[2], v[3]);
        packed.z = pack_pair<kHalf>(v[4], v[5]);
        packed.w = pack_pair<kHalf>(v[6], v[7]);
        *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(b) * p.N + co) * p.plane + pix) = packed;
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int mm = m + e;
          if (mm < p.M) {
            const int b = mm / p.ohw, pix = mm - b * p.ohw;
            out[(static_cast<int64_t>(b) * p.N + co) * p.plane + pix] = from_float<kHalf>(v[e]);
          }
        }
      }
    }
  } else {
    // One pixel's run of 8 (two-byte) or 4 (fp32) consecutive output channels per thread.
    constexpr int kVec = kOut == kOutF32 ? 4 : 8;
    constexpr int kVecsPerRow = Cfg::BN / kVec;
    for (int idx = tid; idx < Cfg::BM * kVecsPerRow; idx += Cfg::kThreads) {
      const int r = idx / kVecsPerRow, cv = idx % kVecsPerRow;
      const int m = m0 + r, co = n0 + cv * kVec;
      if (m >= p.M || co >= p.N) continue;
      float v[kVec];
#pragma unroll
      for (int e = 0; e < kVec; e += 4) {
        const float4 f = *reinterpret_cast<const float4*>(st + r * Cfg::kNhwcPitch + cv * kVec + e);
        v[e] = f.x;
        v[e + 1] = f.y;
        v[e + 2] = f.z;
        v[e + 3] = f.w;
      }
      if (p.bias) {
#pragma unroll
        for (int e = 0; e < kVec; ++e)
          if (co + e < p.N) v[e] += to_float<kHalf>(p.bias[co + e]);
      }
      const int64_t off = static_cast<int64_t>(blockIdx.y) * p.split_stride + static_cast<int64_t>(m) * p.ors + co;
      const bool full = p.out_vec && co + kVec <= p.N;
      if constexpr (kOut == kOutF32) {
        float* out = static_cast<float*>(p.out) + off;
        if (full) {
          *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e)
            if (co + e < p.N) out[e] = v[e];
        }
      } else {
        uint16_t* out = static_cast<uint16_t*>(p.out) + off;
        if (full) {
          uint4 packed;
          packed.x = pack_pair<kHalf>(v[0], v[1]);
          packed.y = pack_pair<kHalf>(v[2], v[3]);
          packed.z = pack_pair<kHalf>(v[4], v[5]);
          packed.w = pack_pair<kHalf>(v[6], v[7]);
          *reinterpret_cast<uint4*>(out) = packed;
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e)
            if (co + e < p.N) out[e] = from_float<kHalf>(v[e]);
        }
      }
    }
  }
#endif
}

template <class Cfg, bool kHalf, int kOut>
cudaError_t launch(const ConvParams& p, int splits, cudaStream_t stream) {
  auto kernel = conv_kernel<Cfg, kHalf, kOut>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  ConvParams q = p;
  q.n_tiles = (p.N + Cfg::BN - 1) / Cfg::BN;
  const int64_t m_tiles = (static_cast<int64_t>(p.M) + Cfg::BM - 1) / Cfg::BM;
  const int64_t tiles = m_tiles * q.n_tiles;
  if (tiles > 0x7fffffffLL || splits > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(q);
  return cudaGetLastError();
}

template <class Cfg, bool kHalf>
cudaError_t launch_out(const ConvParams& p, int kind, int splits, cudaStream_t stream) {
  switch (kind) {
    case kOutNhwc: return launch<Cfg, kHalf, kOutNhwc>(p, splits, stream);
    case kOutNchw: return launch<Cfg, kHalf, kOutNchw>(p, splits, stream);
    case kOutF32: return launch<Cfg, kHalf, kOutF32>(p, splits, stream);
  }
  return cudaErrorInvalidValue;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace
}  // namespace sm80

bool device_has_sm80() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  return major >= 8;
}

namespace {

// A validated launch of the implicit GEMM: the whole problem of `Conv2dArgs` (conv2d_nchw then narrows it to
// bands of output rows).
struct ConvLaunch {
  sm80::ConvParams p{};
  int kind = 0, splits = 1;
  bool half = false;
};

cudaError_t plan_launch(const Conv2dArgs& a, ConvLaunch* l) {
  using namespace sm80;
  if (a.dtype != ElemType::kBF16 && a.dtype != ElemType::kF16) return cudaErrorInvalidValue;
  const bool f32_out = a.out_dtype == ElemType::kF32;
  if (!f32_out && a.out_dtype != a.dtype) return cudaErrorInvalidValue;
  if (a.batch <= 0 || a.in_h <= 0 || a.in_w <= 0 || a.cin <= 0 || a.cout <= 0 || a.kh <= 0 || a.kw <= 0 ||
      a.stride <= 0 || a.pad < 0 || a.out_h <= 0 || a.out_w <= 0 || a.split_k <= 0)
    return cudaErrorInvalidValue;
  const int64_t eff_h = static_cast<int64_t>(a.in_h) * (a.upsample2x ? 2 : 1);
  const int64_t eff_w = static_cast<int64_t>(a.in_w) * (a.upsample2x ? 2 : 1);
  if ((eff_h + 2 * a.pad - a.kh) / a.stride + 1 != a.out_h || (eff_w + 2 * a.pad - a.kw) / a.stride + 1 != a.out_w)
    return cudaErrorInvalidValue;
  const int64_t K = static_cast<int64_t>(a.kh) * a.kw * a.cin;
  const int64_t M = static_cast<int64_t>(a.batch) * a.out_h * a.out_w;
  const int64_t in_pixels = static_cast<int64_t>(a.batch) * a.in_h * a.in_w;
  if (K >= (int64_t(1) << 31) - 64 || M >= (int64_t(1) << 31) - 256 || in_pixels >= (int64_t(1) << 31) ||
      eff_h >= (1 << 29) || eff_w >= (1 << 29))
    return cudaErrorInvalidValue;
  if (a.cin % 8 || a.x_pixel_stride % 8 || a.x_pixel_stride < a.cin || a.w_row_stride % 8 || a.w_row_stride < K)
    return cudaErrorInvalidValue;
  if (!a.x || !a.w || !a.out || !aligned16(a.x) || !aligned16(a.w)) return cudaErrorInvalidValue;
  const bool nchw = a.out_layout == ConvLayout::kNCHW;
  if (nchw && (f32_out || a.split_k != 1)) return cudaErrorInvalidValue;
  if (!nchw && a.out_row_stride < a.cout) return cudaErrorInvalidValue;
  if (a.split_k > 1 && (!f32_out || nchw || a.bias || a.out_split_stride < M * a.out_row_stride))
    return cudaErrorInvalidValue;
  if (!device_has_sm80()) return cudaErrorNotSupported;

  ConvParams& p = l->p;
  p.x = static_cast<const uint16_t*>(a.x);
  p.xps = a.x_pixel_stride;
  p.w = static_cast<const uint16_t*>(a.w);
  p.wrs = a.w_row_stride;
  p.bias = static_cast<const uint16_t*>(a.bias);
  p.out = a.out;
  p.ors = a.out_row_stride;
  p.split_stride = a.out_split_stride;
  p.M = static_cast<int>(M);
  p.N = a.cout;
  p.K = static_cast<int>(K);
  p.cin = a.cin;
  p.kh = a.kh;
  p.kw = a.kw;
  p.stride = a.stride;
  p.pad = a.pad;
  p.in_h = a.in_h;
  p.in_w = a.in_w;
  p.eff_h = static_cast<int>(eff_h);
  p.eff_w = static_cast<int>(eff_w);
  p.up = a.upsample2x ? 1 : 0;
  p.out_w = a.out_w;
  p.ohw = a.out_h * a.out_w;
  p.out_row0 = 0;
  p.in_row0 = 0;
  p.plane = p.ohw;
  p.kblocks = static_cast<int>((K + 63) / 64);
  const int splits_wanted = a.split_k < p.kblocks ? a.split_k : p.kblocks;
  p.kb_per_split = (p.kblocks + splits_wanted - 1) / splits_wanted;
  l->splits = (p.kblocks + p.kb_per_split - 1) / p.kb_per_split;
  l->kind = nchw ? kOutNchw : f32_out ? kOutF32 : kOutNhwc;
  if (nchw) {
    p.out_vec = aligned16(a.out) && p.ohw % 8 == 0;
  } else {
    const int vec = f32_out ? 4 : 8;
    p.out_vec = aligned16(a.out) && a.out_row_stride % vec == 0 && a.out_split_stride % vec == 0;
  }
  l->half = a.dtype == ElemType::kF16;
  return cudaSuccess;
}

cudaError_t run_launch(const ConvLaunch& l, cudaStream_t stream) {
  using namespace sm80;
  if (l.p.M == 0) return cudaSuccess;
  if (tile_n(l.p.N) == NarrowTile::BN) {
    return l.half ? launch_out<NarrowTile, true>(l.p, l.kind, l.splits, stream)
                  : launch_out<NarrowTile, false>(l.p, l.kind, l.splits, stream);
  }
  if (tile_n(l.p.N) == WidestTile::BN) {
    return l.half ? launch_out<WidestTile, true>(l.p, l.kind, l.splits, stream)
                  : launch_out<WidestTile, false>(l.p, l.kind, l.splits, stream);
  }
  return l.half ? launch_out<WideTile, true>(l.p, l.kind, l.splits, stream)
                : launch_out<WideTile, false>(l.p, l.kind, l.splits, stream);
}

}  // namespace

cudaError_t conv2d_implicit_gemm(const Conv2dArgs& a, cudaStream_t stream) {
  ConvLaunch l;
  const cudaError_t e = plan_launch(a, &l);
  return e != cudaSuccess ? e : run_launch(l, stream);
}

namespace {

struct NchwPlan {
  int64_t cp, taps, pixels, x_bytes, w_bytes;
  int band_rows;  // output rows per band
  bool reorder_w;
};

// Input rows that `rows` consecutive output rows read at most (the effective rows of a nearest-2x upsample map to
// half as many, plus one for the alignment of the first).
int64_t band_input_rows(const Conv2dNchwArgs& a, int64_t rows) {
  const int64_t span = (rows - 1) * a.stride + a.kh;
  const int64_t needed = a.upsample2x ? ((span - 1) >> 1) + 2 : span;
  return needed < a.in_h ? needed : a.in_h;
}

int64_t sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 1;
  return sms > 0 ? sms : 1;
}

NchwPlan nchw_plan(const Conv2dNchwArgs& a) {
  NchwPlan p;
  p.cp = (static_cast<int64_t>(a.cin) + 7) / 8 * 8;
  p.taps = static_cast<int64_t>(a.kh) * a.kw;
  p.pixels = static_cast<int64_t>(a.in_h) * a.in_w;
  p.reorder_w = p.taps != 1 || p.cp != a.cin || !sm80::aligned16(a.w);
  p.w_bytes = p.reorder_w ? (static_cast<int64_t>(a.cout) * p.taps * p.cp * 2 + 255) / 256 * 256 : 0;
  const int64_t row_bytes = static_cast<int64_t>(a.batch) * a.in_w * p.cp * 2;
  const int64_t cap = a.band_bytes > 0 ? static_cast<int64_t>(a.band_bytes) : kConvBandBytes;
  int64_t rows = a.out_h > 0 ? a.out_h : 1;
  if (a.stride > 0 && band_input_rows(a, rows) * row_bytes > cap) {
    int64_t lo = 1, hi = rows;  // the most output rows whose input fits the cap (at least one)
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (band_input_rows(a, mid) * row_bytes <= cap) lo = mid; else hi = mid - 1;
    }
    // Each band's launch rounds up to whole waves (one CTA per SM): among the band counts that fit, the one with
    // the fewest waves in all (512-row outputs in 5 bands of 103 rows took 35 waves of 128-pixel tiles where 8 bands
    // of 64 take the whole launch's 32).
    const int64_t bn = sm80::tile_n(a.cout), bm = sm80::tile_m(a.cout), n_tiles = (a.cout + bn - 1) / bn;
    const int64_t sms = sm_count();
    auto waves = [&](int64_t band_rows) {
      const int64_t full = rows / band_rows, rest = rows % band_rows;
      auto of = [&](int64_t r) { return ((a.batch * r * a.out_w + bm - 1) / bm * n_tiles + sms - 1) / sms; };
      return full * of(band_rows) + (rest ? of(rest) : 0);
    };
    const int64_t fewest = (rows + lo - 1) / lo;
    int64_t best = (rows + fewest - 1) / fewest;
    for (int64_t bands = fewest + 1; bands <= fewest + 16 && bands <= rows; ++bands) {
      const int64_t r = (rows + bands - 1) / bands;
      if (waves(r) < waves(best)) best = r;
    }
    rows = best;
  }
  p.band_rows = static_cast<int>(rows);
  p.x_bytes = (band_input_rows(a, rows) * row_bytes + 255) / 256 * 256;
  return p;
}

}  // namespace

size_t conv2d_nchw_workspace_bytes(const Conv2dNchwArgs& a) {
  if (a.batch <= 0 || a.cin <= 0 || a.in_h <= 0 || a.in_w <= 0 || a.cout <= 0 || a.kh <= 0 || a.kw <= 0) return 0;
  const NchwPlan p = nchw_plan(a);
  return static_cast<size_t>(p.x_bytes + p.w_bytes);
}

cudaError_t conv2d_nchw(const Conv2dNchwArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (a.batch <= 0 || a.cin <= 0 || a.in_h <= 0 || a.in_w <= 0 || a.cout <= 0 || a.kh <= 0 || a.kw <= 0 ||
      a.stride <= 0 || a.out_h <= 0 || a.out_w <= 0)
    return cudaErrorInvalidValue;
  const NchwPlan p = nchw_plan(a);
  const int64_t limit = int64_t(1) << 31;
  if (a.batch > 65535 || a.cout > 65535 || p.pixels >= limit || p.cp * p.pixels * a.batch >= limit ||
      p.cp * p.taps * a.cout >= limit || static_cast<int64_t>(a.out_h) * a.out_w * a.batch * a.cout >= limit)
    return cudaErrorInvalidValue;
  if (!a.x || !a.w || !a.out || !workspace || workspace_bytes < conv2d_nchw_workspace_bytes(a) ||
      !sm80::aligned16(workspace))
    return cudaErrorInvalidValue;
  if (a.dtype != ElemType::kBF16 && a.dtype != ElemType::kF16) return cudaErrorInvalidValue;
  if (!device_has_sm80()) return cudaErrorNotSupported;
  void* xt = workspace;
  void* wt = static_cast<uint8_t*>(workspace) + p.x_bytes;

  Conv2dArgs c;
  c.x = xt;
  c.x_pixel_stride = p.cp;
  c.w = p.reorder_w ? wt : a.w;
  c.w_row_stride = p.taps * p.cp;
  c.bias = a.bias;
  c.out = a.out;
  c.out_layout = ConvLayout::kNCHW;
  c.dtype = a.dtype;
  c.out_dtype = a.dtype;
  c.batch = a.batch;
  c.in_h = a.in_h;
  c.in_w = a.in_w;
  c.cin = static_cast<int>(p.cp);
  c.cout = a.cout;
  c.kh = a.kh;
  c.kw = a.kw;
  c.stride = a.stride;
  c.pad = a.pad;
  c.out_h = a.out_h;
  c.out_w = a.out_w;
  c.upsample2x = a.upsample2x;
  ConvLaunch whole;
  cudaError_t e = plan_launch(c, &whole);
  if (e != cudaSuccess) return e;

  if (p.reorder_w) {
    TransposeArgs tw;  // [Cout][Cin][kh*kw] -> [Cout][kh*kw][Cp]
    tw.in = a.w;
    tw.out = wt;
    tw.batch = a.cout;
    tw.rows = a.cin;
    tw.cols = static_cast<int>(p.taps);
    tw.rows_padded = static_cast<int>(p.cp);
    tw.in_batch_stride = a.cin * p.taps;
    tw.in_row_stride = p.taps;
    tw.out_batch_stride = p.taps * p.cp;
    tw.out_row_stride = p.cp;
    if ((e = transpose_2byte(tw, stream)) != cudaSuccess) return e;
  }
  GroupNormArgs norm;
  if (a.norm) {
    norm = *a.norm;
    norm.x = a.x;
    norm.out = nullptr;
    norm.dtype = a.dtype;
    norm.batch = a.batch;
    norm.channels = a.cin;
    norm.spatial = p.pixels;
    if ((e = group_norm_stats(norm, stream)) != cudaSuccess) return e;
  }
  // Band by band: the input rows a band of output rows reads go NHWC into the workspace (normalised on the way
  // with `norm`), then the kernel writes those output rows. Every output value sums the same products in the same
  // order as one whole launch would.
  const int eff_h = whole.p.eff_h;
  for (int oy0 = 0; oy0 < a.out_h; oy0 += p.band_rows) {
    const int oy1 = oy0 + p.band_rows < a.out_h ? oy0 + p.band_rows : a.out_h;
    const int e0 = oy0 * a.stride - a.pad, e1 = (oy1 - 1) * a.stride - a.pad + a.kh;  // effective rows read
    const int c0 = e0 > 0 ? e0 : 0, c1 = e1 < eff_h ? e1 : eff_h;
    const int up = a.upsample2x ? 1 : 0;
    const int r0 = c1 > c0 ? c0 >> up : 0, r1 = c1 > c0 ? ((c1 - 1) >> up) + 1 : 1;  // all padding: any row

    TransposeArgs tx;  // [B][Cin][rows r0..r1 of H*W] -> [B][(r1-r0)*W][Cp]
    tx.in = static_cast<const uint8_t*>(a.x) + static_cast<int64_t>(r0) * a.in_w * 2;
    tx.out = xt;
    tx.batch = a.batch;
    tx.rows = a.cin;
    tx.cols = (r1 - r0) * a.in_w;
    tx.rows_padded = static_cast<int>(p.cp);
    tx.in_batch_stride = static_cast<int64_t>(a.cin) * p.pixels;
    tx.in_row_stride = p.pixels;
    tx.out_batch_stride = static_cast<int64_t>(tx.cols) * p.cp;
    tx.out_row_stride = p.cp;
    tx.norm = a.norm ? &norm : nullptr;
    if ((e = transpose_2byte(tx, stream)) != cudaSuccess) return e;

    ConvLaunch band = whole;
    sm80::ConvParams& q = band.p;
    q.in_h = r1 - r0;
    q.in_row0 = r0;
    q.out_row0 = oy0;
    q.ohw = (oy1 - oy0) * a.out_w;
    q.M = a.batch * q.ohw;
    q.out = static_cast<uint8_t*>(a.out) + static_cast<int64_t>(oy0) * a.out_w * 2;
    q.out_vec = sm80::aligned16(q.out) && q.ohw % 8 == 0 && q.plane % 8 == 0;
    if ((e = run_launch(band, stream)) != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace fluxk
