// Batched 2-D transpose of 2-byte elements through a 64x64 shared-memory tile: 16-byte global loads along the
// input rows and 16-byte stores along the output rows when strides and pointers allow (scalar otherwise), with
// zero padding of the output rows. Feeds the implicit-GEMM convolution (NCHW -> NHWC activations, channels
// padded to a multiple of 8; [Cout][Cin][kh*kw] -> [Cout][kh*kw][Cin] weights) and the wide attention (V -> Vᵀ).
#include "vae_t5.h"

namespace fluxk {
namespace {

constexpr int kTile = 64, kThreads = 256, kPitch = kTile + 2;  // pitch 66: conflict-free tile writes

struct TransposeParams {
  const uint16_t* in;
  uint16_t* out;
  int rows, cols, rows_padded;
  int64_t ibs, irs, obs, ors;
  bool vec_in, vec_out;
};

__global__ void __launch_bounds__(kThreads) transpose_kernel(const TransposeParams p) {
  __shared__ uint16_t tile[kTile][kPitch];
  const int tid = threadIdx.x;
  const int c0 = blockIdx.x * kTile, r0 = blockIdx.y * kTile;
  const uint16_t* in = p.in + static_cast<int64_t>(blockIdx.z) * p.ibs;
  uint16_t* out = p.out + static_cast<int64_t>(blockIdx.z) * p.obs;

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
        v[2 * e] = static_cast<uint16_t>(w[e] & 0xFFFF);
        v[2 * e + 1] = static_cast<uint16_t>(w[e] >> 16);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        v[e] = (gr < p.rows && gc + e < p.cols) ? in[static_cast<int64_t>(gr) * p.irs + gc + e] : uint16_t(0);
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
  transpose_kernel<<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fluxk
