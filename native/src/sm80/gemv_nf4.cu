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
// Summation order of an output: within a warp its chunks in increasing order, each chunk's 8 mmas in order (the
// tensor core sums an mma's 16 products in fp32); then the four warps' sums in warp order 0..3; epilogue in fp32,
// one rounding. The values multiplied are bitsandbytes' own: bf16(code[nibble] · absmax), the product in fp32.
//
// Napkin math (H100 SXM, ~2.9 TB/s copy). Measured (H100, bench/kernels/results/2026-11-26-h100-f2c5f07-gemv.txt):
// M = 1 [18432, 3072] 25.8 us (1.24 TB/s of packed bytes: still issue bound, below the 2.5 TB/s aimed at),
// [9216, 3072] 16.5 us, M = 16 [18432, 3072] 35.0 us; since the 4 KB-aligned book, 24.4 / 15.5 / 35.1 us.
//   M = 1, [18432, 3072]: 28.3 MB packed + 3.5 MB absmax (plain; 0.9 MB as double-quant codes) = 31.9 MB
//   -> 11 us at 2.9 TB/s (target <= 13 us: 2.5 TB/s); [9216, 3072]: 15.9 MB -> 5.5 us. Measured before this
//   version: 31 us and 19.5 us in the H100 step profile (1.0 TB/s). Two causes, both addressed:
//   (1) Bytes in flight. The old loop loaded a chunk, then spent ~350 instructions dequantizing it with no load
//   outstanding. Now each warp keeps the packed words and absmax of the next two chunks in flight while it
//   dequantizes the current one: 2 KB per warp; M <= 8 fits 6 CTAs (24 warps, <= 80 registers) in an SM, 48 KB per
//   SM in flight (M 9..16: 5 CTAs, 40 KB) against the ~23 KB that ~3 TB/s x ~1 us of loaded DRAM latency / 132
//   SMs needs.
//   (2) Issue slots. 2.5 TB/s of NF4 is ~4.4 G values per ms: per SM ~17 K code pairs per us, against ~7 K warp
//   instructions (224 K thread instructions) per us, so at most ~13 instructions per pair at full issue. Each
//   nibble used to cost a shift, a mask, an address add and a lookup (~10 per pair). Now the code book rows are
//   256 bytes apart (entry i of lane l at byte 256·i + 4·l), so one PRMT builds a nibble's whole address from a
//   byte of nibbles and the lane's offset (the word's nibbles are split into low and high bytes once per 4 pairs):
//   per pair 2 PRMT + 2 LDS + 2 FMUL + 1 F2F (bf16x2) + 0.75 = ~7.75 instructions, with the loads, absmax and
//   mmas ~8.6 per pair, ~65% of the issue slots at 2.5 TB/s. Shared memory: 2 conflict-free 4-byte lookups per
//   pair, ~60% of its 128 B/clk at 2.5 TB/s. ncu counted 13.1 M warp instructions at M = 1 [18432, 3072], ~15 per
//   pair: each lookup also added the book's shared base. The book now sits 4 KB-aligned (LutLane), so the PRMT
//   builds the whole address: 11.4 M, 25.1 us under ncu against 26.7, and 24.4-24.5 us against 25.3-25.9 in bench.py
//   (bench/kernels/results/2026-11-26-h100-94d063f-gemv-nf4-book-address.txt). One 8-byte lookup per byte (a
//   256-entry table of code pairs) was measured too, here and in a persistent kernel: not faster (docs/kernels.md).
#include "../sm90/epilogue.cuh"
#include "../sm90/kernels.h"
#include "../sm90/nf4.cuh"
#include "gemv.cuh"
#include "mma.cuh"

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kWarps = 4;
constexpr int kLutRow = 64;  // floats per code-book entry: 32 lanes' copies, then 128 unused bytes
constexpr int kBookBytes = 16 * kLutRow * 4;
// Room for the book at a 4 KB-aligned shared address: declared alignment is relative to the CTA's static shared
// memory, which the window places after its reserved bytes.
constexpr int kBookSpace = 2 * kBookBytes;

#if FLUXK_SM80_DEVICE
// One chunk's weight operands of a lane, loaded ahead of use: 16 packed bytes of rows a and b and their absmax
// as stored (plain: the float's bits; double quant: the 8-bit code).
struct Nf4Chunk {
  uint4 wa, wb;
  uint32_t qa, qb;
};

template <bool kDoubleQuant>
__device__ __forceinline__ Nf4Chunk load_chunk(const Nf4Weight& w, const uint8_t* pa, const uint8_t* pb,
                                               int64_t blk_a, int64_t blk_b) {
  Nf4Chunk ch;
  ch.wa = ldg_stream(pa);
  ch.wb = ldg_stream(pb);
  if (!kDoubleQuant) {
    ch.qa = __float_as_uint(__ldg(w.absmax + blk_a));
    ch.qb = __float_as_uint(__ldg(w.absmax + blk_b));
  } else {
    ch.qa = __ldg(w.absmax_q + blk_a);
    ch.qb = __ldg(w.absmax_q + blk_b);
  }
  return ch;
}

// nf4_absmax's value of block blk from what load_chunk fetched (double quant: the code's value times the nested
// absmax, both L1 hits by then, then the offset: two roundings).
template <bool kDoubleQuant>
__device__ __forceinline__ float chunk_scale(const Nf4Weight& w, uint32_t q, int64_t blk) {
  if (!kDoubleQuant) return __uint_as_float(q);
  return __fadd_rn(__fmul_rn(__ldg(w.absmax_code + q), __ldg(w.nested_absmax + blk / 256)), w.nested_offset);
}

// The code book's shared address: the first 4 KB boundary in its space.
__device__ __forceinline__ uint32_t book_address(const char* space) {
  return (smem_u32(space) + kBookBytes - 1) & ~static_cast<uint32_t>(kBookBytes - 1);
}

// Where this lane's code book lies: the book is 4 KB-aligned in the shared window, so a lookup's whole address is
// one PRMT of a byte of nibbles (the nibble in bits 8..11 and the book's bits 12..15 above it, put there when the
// nibbles are masked out of the packed word) and lane_addr (the lane's offset 4·lane in bits 0..7, the book's bits
// 16..31): no add of the book's base per lookup.
struct LutLane {
  uint32_t lane_addr;  // the book's address & 0xFFFF0000 | 4·lane
  uint32_t page;       // the book's bits 12..15 in bits 4..7 of every byte
};

__device__ __forceinline__ LutLane lut_lane_of(const char* space) {
  const uint32_t book = book_address(space);
  return {(book & 0xFFFF0000u) | (4u * (threadIdx.x % 32)), ((book >> 8) & 0xF0u) * 0x01010101u};
}

// The code book value of the nibble in byte j of `nibbles` (one nibble per byte, page bits above it), for this lane.
// Volatile: the book is written in this kernel, before a barrier.
__device__ __forceinline__ float lut_at(uint32_t nibbles, uint32_t lane_addr, int j) {
  const uint32_t addr = __byte_perm(nibbles, lane_addr, 0x7604u | (static_cast<uint32_t>(j) << 4));
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
  return v;
}

// Byte j of a packed word, dequantized with scale s into bf16x2 (first value, the high nibble, in the low half:
// the lower k in mma fragments): bitsandbytes' bf16(code · absmax), product in fp32. hi / lo: the word's high /
// low nibbles, one per byte.
__device__ __forceinline__ uint32_t nf4_pair_at(uint32_t hi, uint32_t lo, int j, float s, uint32_t lane_addr) {
  const float v0 = lut_at(hi, lane_addr, j) * s;
  const float v1 = lut_at(lo, lane_addr, j) * s;
  return pack_bf16x2(v0, v1);
}

// The mmas of one chunk (NW packed words per row per lane: 4 for a whole chunk, 2 for the half chunk).
template <int MT, int NW>
__device__ __forceinline__ void nf4_chunk_mma(float (&acc)[MT][4], const uint32_t (&wa)[NW], const uint32_t (&wb)[NW],
                                              float sa, float sb, const uint4 (&xv)[MT][NW], const LutLane& lut) {
#pragma unroll
  for (int q = 0; q < NW; ++q) {
    const uint32_t ha = ((wa[q] >> 4) & 0x0F0F0F0Fu) | lut.page, la = (wa[q] & 0x0F0F0F0Fu) | lut.page;
    const uint32_t hb = ((wb[q] >> 4) & 0x0F0F0F0Fu) | lut.page, lb = (wb[q] & 0x0F0F0F0Fu) | lut.page;
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      uint32_t a[4];
      a[0] = nf4_pair_at(ha, la, 2 * p, sa, lut.lane_addr);
      a[1] = nf4_pair_at(hb, lb, 2 * p, sb, lut.lane_addr);
      a[2] = nf4_pair_at(ha, la, 2 * p + 1, sa, lut.lane_addr);
      a[3] = nf4_pair_at(hb, lb, 2 * p + 1, sb, lut.lane_addr);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t xw[4] = {xv[mt][q].x, xv[mt][q].y, xv[mt][q].z, xv[mt][q].w};
        mma_bf16_16816(acc[mt], a, xw[2 * p], xw[2 * p + 1]);
      }
    }
  }
}

// The CTA's lane-replicated code book (entry i of lane l at byte 256·i + 4·l of the book).
__device__ __forceinline__ void fill_code_book(char* space) {
  float* lut = reinterpret_cast<float*>(space + (book_address(space) - smem_u32(space)));
  for (int i = threadIdx.x; i < 16 * 32; i += kWarps * 32) lut[(i / 32) * kLutRow + i % 32] = kNf4Code[i / 32];
  __syncthreads();
}

// Rows n0 .. n0+15 of out[m, ldc] = epi(x[m, K] · dequant(w)ᵀ): one CTA's whole job (lut filled, red scratch).
// The quantization kind is a template argument, not a branch in the loop: ptxas predicated that branch, and a
// predicated-off FMUL of the double-quant path waited on the scoreboard of the loads issued in the same iteration
// (ncu: 25% of the stall samples; bench/kernels/results/2026-11-26-h100-af72166-gemv-nf4-scoreboard.txt). Without it
// the first mma waits there instead, for its activations: ~1.5% faster, the rest of that wait is still open.
template <int MT, int EPI, bool kDoubleQuant>
__device__ __forceinline__ void gemv_nf4_rows(const __nv_bfloat16* __restrict__ x, int64_t ldx, int m,
                                              const Nf4Weight& w, __nv_bfloat16* __restrict__ out, int64_t ldc,
                                              const EpilogueArgs& epi, int n0, const char* lut,
                                              float (&red)[kWarps][MT][4][32]) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int k = w.k;
  const int row_a = min(n0 + g, w.n - 1);
  const int row_b = min(n0 + g + 8, w.n - 1);
  const uint8_t* pa = w.packed + static_cast<int64_t>(row_a) * (k / 2);
  const uint8_t* pb = w.packed + static_cast<int64_t>(row_b) * (k / 2);
  const int64_t blk_a = static_cast<int64_t>(row_a) * (k / 64);
  const int64_t blk_b = static_cast<int64_t>(row_b) * (k / 64);
  const LutLane book = lut_lane_of(lut);

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 4; ++h) acc[mt][h] = 0.f;

  const int full_chunks = k / 128;
  // Chunk kc of this lane: packed bytes kc·64 + 16c of its rows, absmax block 2·kc + c/2.
  const auto load = [&](int kc) {
    return load_chunk<kDoubleQuant>(w, pa + kc * 64 + 16 * c, pb + kc * 64 + 16 * c, blk_a + 2 * kc + c / 2,
                                    blk_b + 2 * kc + c / 2);
  };
  const Nf4Chunk none = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0), 0u, 0u};
  Nf4Chunk cur = warp < full_chunks ? load(warp) : none;
  Nf4Chunk next = warp + kWarps < full_chunks ? load(warp + kWarps) : none;
  for (int kc = warp; kc < full_chunks; kc += kWarps) {
    const Nf4Chunk after = kc + 2 * kWarps < full_chunks ? load(kc + 2 * kWarps) : none;
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
    const uint32_t wa_w[4] = {cur.wa.x, cur.wa.y, cur.wa.z, cur.wa.w};
    const uint32_t wb_w[4] = {cur.wb.x, cur.wb.y, cur.wb.z, cur.wb.w};
    nf4_chunk_mma<MT, 4>(acc, wa_w, wb_w, chunk_scale<kDoubleQuant>(w, cur.qa, blk_a + 2 * kc + c / 2),
                         chunk_scale<kDoubleQuant>(w, cur.qb, blk_b + 2 * kc + c / 2), xv, book);
    cur = next;
    next = after;
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
    nf4_chunk_mma<MT, 2>(acc, wa_w, wb_w, sa, sb, xv, book);
  }

  gemv_reduce_store<MT, EPI>(red, acc, n0, w.n, m, epi, out, ldc);
}
#endif

template <int MT, int EPI>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 ? 6 : 5)
    gemv_nf4_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int m, const Nf4Weight w,
                    __nv_bfloat16* __restrict__ out, int64_t ldc, const EpilogueArgs epi) {
#if FLUXK_SM80_DEVICE
  __shared__ __align__(16) char lut[kBookSpace];
  // [warp][token tile][accumulator register][lane]: conflict-free stores and reads
  __shared__ float red[kWarps][MT][4][32];
  fill_code_book(lut);
  if (w.absmax)
    gemv_nf4_rows<MT, EPI, false>(x, ldx, m, w, out, ldc, epi, blockIdx.x * 16, lut, red);
  else
    gemv_nf4_rows<MT, EPI, true>(x, ldx, m, w, out, ldc, epi, blockIdx.x * 16, lut, red);
#endif
}

// Several weights' rows in one grid, each part's CTAs after the previous part's (cta_begin), its outputs in its own
// columns of out: the same CTA job as gemv_nf4_kernel, so each output has the bits a separate launch gives. One token
// at 8 CTAs an SM (<= 64 registers, no spills): in a launch this long more warps in flight pay (H100, Flux's 77
// weights: 0.992 ms against 1.022-1.028 at 6 CTAs, alternating on one card; 77 separate launches 1.54-1.63 ms:
// bench/kernels/results/2026-11-26-h100-2cad001-gemv-concat.txt), where a single weight's launch is faster at 6
// (25.6 against 27.8 us; 24.4 against 26.3 since the 4 KB-aligned book, …-94d063f-gemv-nf4-book-address.txt).
template <int MT>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 ? 8 : 5)
    gemv_nf4_concat_kernel(const __grid_constant__ Nf4GemvConcatArgs a) {
#if FLUXK_SM80_DEVICE
  __shared__ __align__(16) char lut[kBookSpace];
  __shared__ float red[kWarps][MT][4][32];
  int p = 0;
  while (p + 1 < a.parts && static_cast<int>(blockIdx.x) >= a.cta_begin[p + 1]) ++p;
  const Nf4Weight w = a.part[p].w;
  EpilogueArgs epi;
  epi.bias = a.part[p].bias;
  fill_code_book(lut);
  const int n0 = (static_cast<int>(blockIdx.x) - a.cta_begin[p]) * 16;
  if (w.absmax)
    gemv_nf4_rows<MT, 0, false>(a.a, a.lda, a.m, w, a.c + a.part[p].col, a.ldc, epi, n0, lut, red);
  else
    gemv_nf4_rows<MT, 0, true>(a.a, a.lda, a.m, w, a.c + a.part[p].col, a.ldc, epi, n0, lut, red);
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

template <int MT>
cudaError_t launch_concat(Nf4GemvConcatArgs& a, cudaStream_t stream) {
  gemv_nf4_concat_kernel<MT><<<a.cta_begin[a.parts], kWarps * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace
}  // namespace sm80

bool nf4_args_valid(const Nf4GemmArgs& a) {
  // kQkNormRope writes its own outputs (EpilogueArgs::q, k, v) instead of C
  const bool qk = a.epi.kind == Epilogue::kQkNormRope;
  if (!a.a || !a.w.packed || a.m < 0 || a.w.n <= 0 || a.w.k <= 0) return false;
  if (qk ? (a.c || !qk_norm_rope_args_valid(a.epi, a.m, a.w.n)) : !a.c) return false;
  if (a.w.k % 64 || a.w.n % 8) return false;
  if (!a.w.absmax && !(a.w.absmax_q && a.w.absmax_code && a.w.nested_absmax)) return false;
  if (a.lda % 8 || a.lda < (a.a2 ? a.k_split : a.w.k) || (!qk && (a.ldc % 8 || a.ldc < a.w.n))) return false;
  if (a.a2 && (qk || a.k_split <= 0 || a.k_split >= a.w.k || a.k_split % 64 || a.lda2 % 8 ||
               a.lda2 < a.w.k - a.k_split || !sm80::is_aligned16(a.a2)))
    return false;
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
  if (!nf4_args_valid(a) || a.m > 16 || a.a2) return cudaErrorInvalidValue;
  return a.m <= 8 ? sm80::launch_epi<1>(a, stream) : sm80::launch_epi<2>(a, stream);
}

cudaError_t gemv_nf4_concat(const Nf4GemvConcatArgs& args, cudaStream_t stream) {
  if (args.m == 0) return cudaSuccess;
  if (args.m < 0 || args.m > 16 || args.parts < 1 || args.parts > kNf4GemvConcatMaxParts || !args.a || !args.c ||
      args.lda % 8 || args.ldc % 8 || !sm80::is_aligned16(args.a) || !sm80::is_aligned16(args.c))
    return cudaErrorInvalidValue;
  Nf4GemvConcatArgs a = args;
  const int k = a.part[0].w.k;
  int ctas = 0;
  for (int p = 0; p < a.parts; ++p) {
    const Nf4GemvPart& part = a.part[p];
    Nf4GemmArgs one;
    one.a = a.a;
    one.lda = a.lda;
    one.m = a.m;
    one.w = part.w;
    one.c = a.c + part.col;
    one.ldc = a.ldc;
    one.epi.bias = part.bias;
    // Each part alone must be a valid gemv_nf4 launch whose columns lie inside out's row.
    if (part.w.k != k || part.col < 0 || part.col % 8 || part.col + part.w.n > a.ldc || !nf4_args_valid(one))
      return cudaErrorInvalidValue;
    a.cta_begin[p] = ctas;
    ctas += (part.w.n + 15) / 16;
  }
  a.cta_begin[a.parts] = ctas;
  return a.m <= 8 ? sm80::launch_concat<1>(a, stream) : sm80::launch_concat<2>(a, stream);
}

}  // namespace fluxk
