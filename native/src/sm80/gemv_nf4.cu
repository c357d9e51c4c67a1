// Skinny NF4 GEMM (M <= 16 tokens, e.g. the modulation linears at batch 1): memory-bound, so the job is to stream
// the packed weight once at full bandwidth. Runs on any sm_80+ GPU.
//
// One persistent CTA per SM: a producer warp streams the packed weight into a ring of shared-memory stages with
// cp.async (16-byte pieces, completion counted on an mbarrier per stage), and 12 consumer warps dequantize and
// multiply out of it. A unit is 16 weight rows × 1536 k (12 KB); a CTA owns whole row groups (rows 16g..16g+15, g =
// blockIdx.x, blockIdx.x + gridDim.x, ...) and walks their units in k order, so the ring keeps up to 8 units
// (96 KB per SM) in flight whatever the consumers are doing; the row group's 12 partial sums meet in shared memory.
// Consumer warp w takes chunk w (128 k) of every unit. Within a chunk a lane (g = lane/4, c = lane%4) reads 16
// packed bytes of rows g and g+8 (k = 32c .. 32c+31) and the matching activations, and feeds mma.sync m16n8k16 with
// the weight as the A operand (rows = output features) and the activations as B (columns = tokens). The reduction
// over k is order-free, so each mma's 16 "virtual" k slots are mapped onto actual k so that both operands come from
// contiguous loads: slot pair (2c, 2c+1) of mma i is k = 32c + 4i + {0, 1}, slot pair (2c+8, 2c+9) is
// k = 32c + 4i + {2, 3}. Summation order of an output: within a warp its units in increasing k, each chunk's 8 mmas
// in order (the tensor core sums an mma's 16 products in fp32); then the 12 warps' sums in warp order; epilogue in
// fp32, one rounding. The values multiplied are bitsandbytes' own: bf16(code[nibble] · absmax), the product in fp32.
//
// Napkin math (H100 SXM, ~2.9 TB/s copy). M = 1, [18432, 3072]: 28.3 MB packed + 3.5 MB absmax (plain; 0.9 MB as
// double-quant codes) = 31.9 MB -> 11 us at 2.9 TB/s; [9216, 3072]: 15.9 MB -> 5.5 us. The previous kernel (one CTA
// of 4 warps per 16 rows, loads 2 chunks ahead in registers) ran 25.4-26.0 us at 13.1 M warp instructions, 54% of
// the issue slots, stalled mostly on its global loads (bench/kernels/results/2026-11-26-h100-049a173-gemv-nf4-
// persistent-trial.txt). Two changes: (1) the ring decouples the bytes in flight from the consumers' work; (2) one
// 8-byte lookup per packed byte: a 256-entry table of code pairs (16 half-warp copies, conflict-free, 32 KB) whose
// address two LOP3 per word and one PRMT per byte build, then 2 FMUL and one bf16x2 conversion: ~5.5 instructions
// per byte against ~9 before, ~5 M warp instructions for [18432, 3072], ~45% of the issue slots at 2.5 TB/s.
#include "../sm90/epilogue.cuh"
#include "../sm90/kernels.h"
#include "../sm90/nf4.cuh"
#include "mma.cuh"

#include <algorithm>

namespace fluxk {
namespace sm80 {
namespace {

constexpr int kConsumers = 12;
constexpr int kThreads = (kConsumers + 1) * 32;
constexpr int kChunkK = 128;
constexpr int kSliceK = kConsumers * kChunkK;  // k per unit
constexpr int kRowBytes = kSliceK / 2;         // packed bytes of one row in a unit
// Rows 16 bytes apart in the banks: a warp's 16-byte reads of 8 rows (lanes g, c) hit 8 different bank quads.
constexpr int kRowStride = kRowBytes + 16;
constexpr int kStageBytes = 16 * kRowStride;
constexpr int kMaxStages = 8;
constexpr int kMinStages = 3;
constexpr int kLutBytes = 256 * 128;  // code pairs: 256 entries × 16 copies × 8 bytes

// Dynamic shared memory: the double-buffered partial sums, the barriers, then the ring.
__host__ __device__ constexpr int red_bytes(int mt) { return 2 * kConsumers * mt * 4 * 32 * 4; }
__host__ __device__ constexpr int dynamic_fixed_bytes(int mt) { return red_bytes(mt) + 2 * kMaxStages * 8; }

#if FLUXK_SM80_DEVICE
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// try_wait suspends the waiting warp (sm_90), leaving the issue slots to the others; sm_80 polls with test_wait.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred done;\n"
      "WAIT_%=:\n mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n @!done bra WAIT_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
#else
  asm volatile(
      "{\n .reg .pred done;\n"
      "WAIT_%=:\n mbarrier.test_wait.parity.shared.b64 done, [%0], %1;\n @!done bra WAIT_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared.b64 state, [%0];\n}" ::"r"(bar) : "memory");
}
#if __CUDA_ARCH__ >= 900
// The stage's full barrier completes when its one arrival and `bytes` of bulk copies have landed.
constexpr int kFullArrivals = 1;
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
#else
// The stage's full barrier completes when each producer lane's cp.async copies have landed.
constexpr int kFullArrivals = 32;
__device__ __forceinline__ void cp_async_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(bar) : "memory");
}
#endif
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kConsumers * 32) : "memory");
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Code-pair table entry of packed byte b, as its address: b's low 7 bits in bits 8..14, its bit 7 in bit 7, so
// that per word two LOP3 (lo7 = w & 0x7F7F7F7F, hib = (w & 0x80808080) | copy) and per byte one PRMT build it.
__host__ __device__ constexpr uint32_t lut_entry(uint32_t b) { return ((b & 0x7Fu) << 8) | ((b >> 7) << 7); }

// Byte j of a packed word as its table address: byte 0 from hib (bit 7 and this lane's copy offset), byte 1 from
// lo7, bytes 2 and 3 lo7's byte j sign-replicated (its bit 7 is clear: zero).
template <int J>
__device__ __forceinline__ uint32_t lut_addr(uint32_t hib, uint32_t lo7) {
  constexpr uint32_t sel = J | ((4 + J) << 4) | ((12 + J) << 8) | ((12 + J) << 12);
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(hib), "r"(lo7), "n"(sel));
  return r;
}

// A packed byte's two values, bf16(code · s) each, as bf16x2 (the first value, the high nibble, in the low half:
// the lower k in mma fragments).
__device__ __forceinline__ uint32_t nf4_pair_lut(const char* lut, uint32_t addr, float s) {
  const float2 e = *reinterpret_cast<const float2*>(lut + addr);
  return pack_bf16x2(e.x * s, e.y * s);
}

// The mmas of one chunk from NW packed words per row per lane (4 for a whole chunk, 2 for the half chunk).
template <int MT, int NW>
__device__ __forceinline__ void nf4_chunk_mma(float (&acc)[MT][4], const uint32_t (&wa)[NW], const uint32_t (&wb)[NW],
                                              float sa, float sb, const uint4 (&xv)[MT][NW], const char* lut,
                                              uint32_t copy4) {
#pragma unroll
  for (int q = 0; q < NW; ++q) {
    const uint32_t la = wa[q] & 0x7F7F7F7Fu, ha = (wa[q] & 0x80808080u) | copy4;
    const uint32_t lb = wb[q] & 0x7F7F7F7Fu, hb = (wb[q] & 0x80808080u) | copy4;
    uint32_t a0[4], a1[4];
    a0[0] = nf4_pair_lut(lut, lut_addr<0>(ha, la), sa);
    a0[1] = nf4_pair_lut(lut, lut_addr<0>(hb, lb), sb);
    a0[2] = nf4_pair_lut(lut, lut_addr<1>(ha, la), sa);
    a0[3] = nf4_pair_lut(lut, lut_addr<1>(hb, lb), sb);
    a1[0] = nf4_pair_lut(lut, lut_addr<2>(ha, la), sa);
    a1[1] = nf4_pair_lut(lut, lut_addr<2>(hb, lb), sb);
    a1[2] = nf4_pair_lut(lut, lut_addr<3>(ha, la), sa);
    a1[3] = nf4_pair_lut(lut, lut_addr<3>(hb, lb), sb);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      mma_bf16_16816(acc[mt], a0, xv[mt][q].x, xv[mt][q].y);
      mma_bf16_16816(acc[mt], a1, xv[mt][q].z, xv[mt][q].w);
    }
  }
}

// A lane's rows of a row group: its part, first row, and the absmax blocks at k = 0 of rows g and g+8.
struct Group {
  int p, n0;
  int64_t blk_a, blk_b;
};

// Row group gg (>= every earlier call's: p only moves forward).
__device__ __forceinline__ Group group_at(const Nf4GemvConcatArgs& a, int gg, int& p) {
  while (p + 1 < a.parts && gg >= a.group_begin[p + 1]) ++p;
  const Nf4Weight& w = a.part[p].w;
  Group t;
  t.p = p;
  t.n0 = (gg - a.group_begin[p]) * 16;
  const int g = threadIdx.x % 32 / 4;
  t.blk_a = static_cast<int64_t>(min(t.n0 + g, w.n - 1)) * (w.k / 64);
  t.blk_b = static_cast<int64_t>(min(t.n0 + g + 8, w.n - 1)) * (w.k / 64);
  return t;
}

// A lane's absmax of rows a and b for its chunk of a unit, as stored (plain: the float's bits in q; double quant:
// the 8-bit code in q and the nested absmax in nested), loaded a unit ahead of use.
struct Scales {
  uint32_t qa, qb;
  float na, nb;
};

__device__ __forceinline__ Scales load_scales(const Nf4Weight& w, int64_t blk_a, int64_t blk_b) {
  Scales r;
  if (w.absmax) {
    r.qa = __float_as_uint(__ldg(w.absmax + blk_a));
    r.qb = __float_as_uint(__ldg(w.absmax + blk_b));
    r.na = r.nb = 0.f;
  } else {
    r.qa = __ldg(w.absmax_q + blk_a);
    r.qb = __ldg(w.absmax_q + blk_b);
    r.na = __ldg(w.nested_absmax + blk_a / 256);
    r.nb = __ldg(w.nested_absmax + blk_b / 256);
  }
  return r;
}

// nf4_absmax's value from what load_scales fetched (double quant: multiply, then add, two roundings).
__device__ __forceinline__ float scale_value(const Nf4Weight& w, uint32_t q, float nested) {
  if (w.absmax) return __uint_as_float(q);
  return __fadd_rn(__fmul_rn(__ldg(w.absmax_code + q), nested), w.nested_offset);
}

// What is left of K from this warp's chunk of slice s on: >= 128 a whole chunk, 64 the half chunk (K % 128 == 64),
// <= 0 none. Tested unclamped: with the clamped max(0, min(128, .)), nvcc 13.0 gave lanes c = 2, 3 of a half chunk
// the next block's absmax in one of two evaluations (VIMNMX.RELU's predicate; bench.py checks and a one-hot probe).
__device__ __forceinline__ int k_left(int k, int s, int warp) { return k - s * kSliceK - warp * kChunkK; }

// The stage of the ring a unit uses, and the parity of its barriers' phase.
struct RingPos {
  int stage = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void advance(int stages) {
    if (++stage == stages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// The producer warp: every unit's 16 rows into the ring, stage by stage.
__device__ __forceinline__ void produce(const Nf4GemvConcatArgs& a, int slices, int stages, uint32_t ring,
                                        uint32_t full, uint32_t empty) {
  const int lane = threadIdx.x % 32;
  const int k = a.part[0].w.k;
  const int groups = a.group_begin[a.parts];
  int p = 0;
  RingPos pos;
  for (int gg = blockIdx.x; gg < groups; gg += gridDim.x) {
    while (p + 1 < a.parts && gg >= a.group_begin[p + 1]) ++p;
    const Nf4Weight& w = a.part[p].w;
    const int n0 = (gg - a.group_begin[p]) * 16;
    // lane r < 16 copies row r (clamped: rows past N are computed and never stored)
    const int64_t row = min(n0 + (lane & 15), w.n - 1);
    for (int s = 0; s < slices; ++s, pos.advance(stages)) {
      const uint32_t full_bar = full + 8 * pos.stage;
      mbar_wait(empty + 8 * pos.stage, pos.phase ^ 1);
      const int bytes = min(kSliceK, k - s * kSliceK) / 2;  // per row
      const uint32_t dst = ring + pos.stage * kStageBytes;
      const uint8_t* src = w.packed + s * kRowBytes;
#if __CUDA_ARCH__ >= 900
      // One bulk copy per row, through the TMA unit: 16-byte cp.async pieces queued behind the consumers' table
      // lookups in the load/store pipe (H100, M = 1 [18432, 3072]: 43.6 us with them, 31.0 us with bulk copies).
      if (lane == 0) mbar_arrive_expect_tx(full_bar, 16 * bytes);
      __syncwarp();
      if (lane < 16) bulk_copy(dst + lane * kRowStride, src + row * (k / 2), bytes, full_bar);
#else
      for (int r = 0; r < 16; ++r) {
        const uint8_t* from = src + static_cast<int64_t>(min(n0 + r, w.n - 1)) * (k / 2);
        for (int pc = lane; pc < bytes / 16; pc += 32) cp_async_16(dst + r * kRowStride + 16 * pc, from + 16 * pc, 16);
      }
      cp_async_arrive(full_bar);
#endif
      if (lane < 16) {  // the consumers fetch this unit's absmax a unit ahead: have it in L2 by then
        const int64_t blk = row * (k / 64) + s * (kSliceK / 64);
        if (w.absmax) {
          prefetch_l2(w.absmax + blk);
          prefetch_l2(w.absmax + blk + bytes / 32 - 1);
        } else {
          prefetch_l2(w.absmax_q + blk);
        }
      }
    }
  }
#if __CUDA_ARCH__ < 900
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// A consumer warp's whole job. lut: the code-pair table (static shared memory, so its base folds into each
// lookup's address); red: the partial sums; ring: the stages.
template <int MT, int EPI>
__device__ __forceinline__ void consume(const Nf4GemvConcatArgs& a, const EpilogueArgs& epi, int slices, int stages,
                                        const char* lut, float* red, const char* ring, uint32_t full,
                                        uint32_t empty) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int k = a.part[0].w.k;
  const int groups = a.group_begin[a.parts];
  const uint32_t copy4 = static_cast<uint32_t>(lane & 15) * 8u * 0x01010101u;
  // This lane's activations at k = 0 of its chunk: token rows g (and g + 8), k offset 128·warp + 32c.
  const __nv_bfloat16* xrow[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    xrow[mt] = mt * 8 + g < a.m ? a.a + static_cast<int64_t>(mt * 8 + g) * a.lda + warp * kChunkK : nullptr;

  // Absmax block of this lane's chunk in slice s (a whole chunk's lanes c = 2, 3 read its second block).
  const auto block_in = [&](int s) {
    const int left = k_left(k, s, warp);
    return left > 0 ? s * (kSliceK / 64) + 2 * warp + (left >= kChunkK ? c / 2 : 0) : 0;
  };
  int p = 0;
  Group next_group = group_at(a, blockIdx.x, p);
  Scales next = load_scales(a.part[next_group.p].w, next_group.blk_a + block_in(0), next_group.blk_b + block_in(0));
  RingPos pos;
  int gi = 0;
  for (int gg = blockIdx.x; gg < groups; gg += gridDim.x, ++gi) {
    const Group grp = next_group;
    const Nf4GemvPart& part = a.part[grp.p];
    const Nf4Weight& w = part.w;
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 4; ++h) acc[mt][h] = 0.f;

    for (int s = 0; s < slices; ++s, pos.advance(stages)) {
      const Scales sc = next;
      if (s + 1 < slices) {
        const int b = block_in(s + 1);
        next = load_scales(w, grp.blk_a + b, grp.blk_b + b);
      } else if (gg + static_cast<int>(gridDim.x) < groups) {
        next_group = group_at(a, gg + gridDim.x, p);
        next = load_scales(a.part[next_group.p].w, next_group.blk_a + block_in(0), next_group.blk_b + block_in(0));
      }
      const int left = k_left(k, s, warp);
      const char* stage = ring + pos.stage * kStageBytes;
      const uint32_t full_bar = full + 8 * pos.stage;
      if (left >= kChunkK) {
        uint4 xv[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int q = 0; q < 4; ++q)
            xv[mt][q] = xrow[mt] ? __ldg(reinterpret_cast<const uint4*>(xrow[mt] + s * kSliceK + 32 * c + 8 * q))
                                 : make_uint4(0, 0, 0, 0);
        mbar_wait(full_bar, pos.phase);
        const int at = g * kRowStride + 64 * warp + 16 * c;
        const uint4 wa = *reinterpret_cast<const uint4*>(stage + at);
        const uint4 wb = *reinterpret_cast<const uint4*>(stage + at + 8 * kRowStride);
        const uint32_t wa_w[4] = {wa.x, wa.y, wa.z, wa.w};
        const uint32_t wb_w[4] = {wb.x, wb.y, wb.z, wb.w};
        nf4_chunk_mma<MT, 4>(acc, wa_w, wb_w, scale_value(w, sc.qa, sc.na), scale_value(w, sc.qb, sc.nb), xv, lut,
                             copy4);
      } else if (left > 0) {
        // The half chunk (K % 128 == 64): a lane's 8 bytes per row are k = 16c .. 16c+15 of it; slot pairs of mma
        // i map to k = 16c + 4i + {0,1} / {2,3}.
        uint4 xv[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int q = 0; q < 2; ++q)
            xv[mt][q] = xrow[mt] ? __ldg(reinterpret_cast<const uint4*>(xrow[mt] + s * kSliceK + 16 * c + 8 * q))
                                 : make_uint4(0, 0, 0, 0);
        mbar_wait(full_bar, pos.phase);
        const int at = g * kRowStride + 64 * warp + 8 * c;
        const uint2 wa = *reinterpret_cast<const uint2*>(stage + at);
        const uint2 wb = *reinterpret_cast<const uint2*>(stage + at + 8 * kRowStride);
        const uint32_t wa_w[2] = {wa.x, wa.y};
        const uint32_t wb_w[2] = {wb.x, wb.y};
        nf4_chunk_mma<MT, 2>(acc, wa_w, wb_w, scale_value(w, sc.qa, sc.na), scale_value(w, sc.qb, sc.nb), xv, lut,
                             copy4);
      } else {
        // Idle in this (last, partial) slice, yet through the same barrier phases as the others: an arrival on
        // empty may only count for the unit the stage holds.
        mbar_wait(full_bar, pos.phase);
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + 8 * pos.stage);
    }

    // The 12 warps' sums meet in red[row group % 2] ([warp][token tile][accumulator][lane], lane-contiguous), then
    // thread i finishes output i of the mma layout.
    float* buf = red + (gi & 1) * (kConsumers * MT * 128);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 4; ++h) buf[(warp * MT + mt) * 128 + h * 32 + lane] = acc[mt][h];
    consumers_sync();
    for (int i = threadIdx.x; i < MT * 128; i += kConsumers * 32) {
      const int mt = i / 128, h = (i / 32) % 4, l = i % 32;
      float v = buf[mt * 128 + h * 32 + l];
#pragma unroll
      for (int s = 1; s < kConsumers; ++s) v += buf[(s * MT + mt) * 128 + h * 32 + l];
      const int tok = mt * 8 + 2 * (l % 4) + (h & 1);
      const int row = grp.n0 + l / 4 + 8 * (h >> 1);
      if (tok < a.m && row < w.n) {
        v = epilogue_pointwise<EPI>(v, bias_at(part.bias, row));
        if (EPI == static_cast<int>(Epilogue::kGateResidual)) v = gate_residual(epi, v, tok, row);
        a.c[static_cast<int64_t>(tok) * a.ldc + part.col + row] = __float2bfloat16_rn(v);
      }
    }
  }
}
#endif

// The weights' rows side by side (one part for a single weight), row group g of part p from group_begin[p]:
// one persistent CTA per SM.
template <int MT, int EPI>
__global__ void __launch_bounds__(kThreads, 1)
    gemv_nf4_kernel(const __grid_constant__ Nf4GemvConcatArgs a, const __grid_constant__ EpilogueArgs epi,
                    int stages) {
#if FLUXK_SM80_DEVICE
  __shared__ __align__(128) char lut[kLutBytes];
  extern __shared__ __align__(16) char smem[];  // [red][full, empty barriers][ring]
  float* red = reinterpret_cast<float*>(smem);
  const uint32_t full = smem_u32(smem + red_bytes(MT));
  const uint32_t empty = full + 8 * kMaxStages;
  const int slices = (a.part[0].w.k + kSliceK - 1) / kSliceK;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(full + 8 * s, kFullArrivals);
      mbar_init(empty + 8 * s, kConsumers);
    }
  }
  __syncthreads();
  if (threadIdx.x / 32 == kConsumers) {
    produce(a, slices, stages, smem_u32(smem + dynamic_fixed_bytes(MT)), full, empty);
    return;
  }
  for (int i = threadIdx.x; i < 256 * 16; i += kConsumers * 32) {
    const uint32_t b = static_cast<uint32_t>(i) / 16;
    *reinterpret_cast<float2*>(lut + lut_entry(b) + (i % 16) * 8) = make_float2(kNf4Code[b >> 4], kNf4Code[b & 15]);
  }
  consumers_sync();
  consume<MT, EPI>(a, epi, slices, stages, lut, red, smem + dynamic_fixed_bytes(MT), full, empty);
#endif
}

bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Fills group_begin and launches; a has been validated.
template <int MT, int EPI>
cudaError_t launch(Nf4GemvConcatArgs& a, const EpilogueArgs& epi, cudaStream_t stream) {
  int groups = 0;
  for (int p = 0; p < a.parts; ++p) {
    a.group_begin[p] = groups;
    groups += (a.part[p].w.n + 15) / 16;
  }
  a.group_begin[a.parts] = groups;
  int dev = 0, sms = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  const int stages = std::min(kMaxStages, (optin - kLutBytes - dynamic_fixed_bytes(MT)) / kStageBytes);
  if (stages < kMinStages) return cudaErrorInvalidConfiguration;
  const int bytes = dynamic_fixed_bytes(MT) + stages * kStageBytes;
  static int attribute_bytes = 0;  // per instantiation: raised once, before the first launch that needs it
  if (bytes > attribute_bytes) {
    e = cudaFuncSetAttribute(gemv_nf4_kernel<MT, EPI>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return e;
    attribute_bytes = bytes;
  }
  gemv_nf4_kernel<MT, EPI><<<std::min(groups, sms), kThreads, bytes, stream>>>(a, epi, stages);
  return cudaGetLastError();
}

template <int MT>
cudaError_t launch_epi(Nf4GemvConcatArgs& a, const EpilogueArgs& epi, cudaStream_t stream) {
  switch (epi.kind) {
    case Epilogue::kNone: return launch<MT, 0>(a, epi, stream);
    case Epilogue::kGeluTanh: return launch<MT, 1>(a, epi, stream);
    case Epilogue::kGateResidual: return launch<MT, 2>(a, epi, stream);
    case Epilogue::kQkNormRope: break;  // sm90 only
  }
  return cudaErrorInvalidValue;
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
  Nf4GemvConcatArgs one;
  one.a = a.a;
  one.lda = a.lda;
  one.m = a.m;
  one.c = a.c;
  one.ldc = a.ldc;
  one.parts = 1;
  one.part[0].w = a.w;
  one.part[0].bias = a.epi.bias;
  return a.m <= 8 ? sm80::launch_epi<1>(one, a.epi, stream) : sm80::launch_epi<2>(one, a.epi, stream);
}

cudaError_t gemv_nf4_concat(const Nf4GemvConcatArgs& args, cudaStream_t stream) {
  if (args.m == 0) return cudaSuccess;
  if (args.m < 0 || args.m > 16 || args.parts < 1 || args.parts > kNf4GemvConcatMaxParts || !args.a || !args.c ||
      args.lda % 8 || args.ldc % 8 || !sm80::is_aligned16(args.a) || !sm80::is_aligned16(args.c))
    return cudaErrorInvalidValue;
  const int k = args.part[0].w.k;
  for (int p = 0; p < args.parts; ++p) {
    const Nf4GemvPart& part = args.part[p];
    Nf4GemmArgs one;
    one.a = args.a;
    one.lda = args.lda;
    one.m = args.m;
    one.w = part.w;
    one.c = args.c + part.col;
    one.ldc = args.ldc;
    one.epi.bias = part.bias;
    // Each part alone must be a valid gemv_nf4 launch whose columns lie inside out's row.
    if (part.w.k != k || part.col < 0 || part.col % 8 || part.col + part.w.n > args.ldc || !nf4_args_valid(one))
      return cudaErrorInvalidValue;
  }
  Nf4GemvConcatArgs a = args;
  const EpilogueArgs none;
  return a.m <= 8 ? sm80::launch<1, 0>(a, none, stream) : sm80::launch<2, 0>(a, none, stream);
}

}  // namespace fluxk
