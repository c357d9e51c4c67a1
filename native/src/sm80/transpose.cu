// Batched 2-D transpose of 2-byte elements through a 64x64 shared-memory tile: 16-byte global loads along the
// input rows and 16-byte stores along the output rows when strides and pointers allow (scalar otherwise), with
// zero padding of the output rows. Feeds the implicit-GEMM convolution (NCHW -> NHWC activations, channels
// padded to a multiple of 8; [Cout][Cin][kh*kw] -> [Cout][kh*kw][Cin] weights) and the wide attention (V -> Vᵀ).
// With a group norm, the convolution's input is normalised (+SiLU) on the way with group_norm.cu's arithmetic
// (group_norm.cuh), so that the normalised tensor is never stored and the result equals norm then conv.
#include "group_norm.cuh"

namespace fluxk {
namespace {

constexpr int kTile = 64, kThreads = 256, kPitch = kTile + 2;  // pitch 66: conflict-free tile writes

struct TransposeParams {
  const uint16_t* in;
  uint16_t* out;
  int rows, cols, rows_padded;
  int64_t ibs, irs, obs, ors;
  bool vec_in, vec_out;
  // Group norm of the rows (channels): groups, channels per group, (mean, rstd) per (batch, group).
  int64_t groups, cpg;
  const float* stats;
  const void *weight, *bias;
  ElemType param_dtype;
  bool silu;
};

// kNorm: T (__nv_bfloat16 or __half) is the element type, whose rounding the normalised values take.
template <bool kNorm, class T>
__global__ void __launch_bounds__(kThreads) transpose_kernel(const TransposeParams p) {
  __shared__ uint16_t tile[kTile][kPitch];
  const int tid = threadIdx.x;
  const int c0 = blockIdx.x * kTile, r0 = blockIdx.y * kTile;
  const uint16_t* in = p.in + static_cast<int64_t>(blockIdx.z) * p.ibs;
  uint16_t* out = p.out + static_cast<int64_t>(blockIdx.z) * p.obs;
  __shared__ float mean_of[kNorm ? kTile : 1], scale_of[kNorm ? kTile : 1], shift_of[kNorm ? kTile : 1];
  if constexpr (kNorm) {
    if (tid < kTile && r0 + tid < p.rows) {
      const int64_t ch = r0 + tid, bg = blockIdx.z * p.groups + ch / p.cpg;
      mean_of[tid] = p.stats[2 * bg];
      gn::affine(p.weight, p.bias, p.param_dtype, ch, p.stats[2 * bg + 1], scale_of[tid], shift_of[tid]);
    }
    __syncthreads();
  }
  // A loaded value as it enters the tile (rows past p.rows are the zero padding, never normalised).
  auto enter = [&](uint16_t raw, int r) -> uint16_t {
    if constexpr (kNorm) {
      const T t = gn::from_f<T>(gn::normalized<T>(gn::to_f(*reinterpret_cast<const T*>(&raw)), mean_of[r],
                                                   scale_of[r], shift_of[r], p.silu));
      return *reinterpret_cast<const uint16_t*>(&t);
    } else {
      return raw;
    }
  };

  // Load: thread -> (row tid/8 + 32*pass, 8 columns starting at 8*(tid%8)).
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
    const int r = tid / 8 + 32 * pass, cv = (tid % 8) * 8;
    const int gr = r0 + r, gc = c0 + cv;
    uint16_t v[8];
    if (gr < p.rows && p.vec_in && gc + 8 <= p.cols) {
      const uint4 q = *reinterpret_cast<const uint4*>(in + static_cast<int64_t>(gr) * p.irs + gc);
      const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[2 * e] = enter(static_cast<uint16_t>(w[e] & 0xFFFF), r);
        v[2 * e + 1] = enter(static_cast<uint16_t>(w[e] >> 16), r);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        v[e] = (gr < p.rows && gc + e < p.cols) ? enter(in[static_cast<int64_t>(gr) * p.irs + gc + e], r) : uint16_t(0);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) tile[r][cv + e] = v[e];
  }
  __syncthreads();

  // Store: thread -> (output row c0 + tid/8 + 32*pass, 8 consecutive input rows starting at 8*(tid%8)).
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
    const int cl = tid / 8 + 32 * pass, rv = (tid % 8) * 8;
    const int gc = c0 + cl, gr = r0 + rv;
    if (gc >= p.cols || gr >= p.rows_padded) continue;
    uint16_t v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = tile[rv + e][cl];
    uint16_t* dst = out + static_cast<int64_t>(gc) * p.ors + gr;
    if (p.vec_out && gr + 8 <= p.rows_padded) {
      uint4 q;
      q.x = uint32_t(v[0]) | (uint32_t(v[1]) << 16);
      q.y = uint32_t(v[2]) | (uint32_t(v[3]) << 16);
      q.z = uint32_t(v[4]) | (uint32_t(v[5]) << 16);
      q.w = uint32_t(v[6]) | (uint32_t(v[7]) << 16);
      *reinterpret_cast<uint4*>(dst) = q;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (gr + e < p.rows_padded) dst[e] = v[e];
    }
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

cudaError_t transpose_2byte(const TransposeArgs& a, cudaStream_t stream) {
  if (a.batch < 0 || a.rows < 0 || a.cols < 0 || a.rows_padded < a.rows) return cudaErrorInvalidValue;
  if (a.batch == 0 || a.cols == 0 || a.rows_padded == 0) return cudaSuccess;
  if (!a.out || (a.rows > 0 && !a.in)) return cudaErrorInvalidValue;
  const int64_t c_tiles = (static_cast<int64_t>(a.cols) + kTile - 1) / kTile;
  const int64_t r_tiles = (static_cast<int64_t>(a.rows_padded) + kTile - 1) / kTile;
  if (c_tiles > 0x7fffffffLL || r_tiles > 65535 || a.batch > 65535) return cudaErrorInvalidValue;
  TransposeParams p;
  p.in = static_cast<const uint16_t*>(a.in);
  p.out = static_cast<uint16_t*>(a.out);
  p.rows = a.rows;
  p.cols = a.cols;
  p.rows_padded = a.rows_padded;
  p.ibs = a.in_batch_stride;
  p.irs = a.in_row_stride;
  p.obs = a.out_batch_stride;
  p.ors = a.out_row_stride;
  p.vec_in = aligned16(a.in) && a.in_row_stride % 8 == 0 && a.in_batch_stride % 8 == 0;
  p.vec_out = aligned16(a.out) && a.out_row_stride % 8 == 0 && a.out_batch_stride % 8 == 0;
  const dim3 grid(static_cast<unsigned>(c_tiles), static_cast<unsigned>(r_tiles), static_cast<unsigned>(a.batch));
  const GroupNormArgs* n = a.norm;
  if (!n) {
    transpose_kernel<false, uint16_t><<<grid, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  }
  if (n->groups <= 0 || n->channels != a.rows || n->channels % n->groups || n->batch != a.batch || !n->workspace ||
      (n->dtype != ElemType::kBF16 && n->dtype != ElemType::kF16) ||
      (n->param_dtype != ElemType::kF32 && n->param_dtype != ElemType::kBF16 && n->param_dtype != ElemType::kF16))
    return cudaErrorInvalidValue;
  p.groups = n->groups;
  p.cpg = n->channels / n->groups;
  p.stats = n->workspace;
  p.weight = n->weight;
  p.bias = n->bias;
  p.param_dtype = n->param_dtype;
  p.silu = n->silu;
  if (n->dtype == ElemType::kBF16) {
    transpose_kernel<true, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    transpose_kernel<true, __half><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace fluxk
