// bf16 GEMM for Hopper: C[M,N] = epilogue(A[M,K] · W[N,K]ᵀ), fp32 accumulation.
//
// Structure (one persistent CTA per SM, 384 threads):
//   warpgroup 0  producer: one thread streams 128x64 tiles of A and BNx64 tiles of W with TMA
//                (128-byte swizzle) into a ring of shared-memory stages, each guarded by a
//                "full" mbarrier (TMA transaction bytes) and an "empty" mbarrier (consumer release).
//   warpgroups 1-2 consumers: each owns 64 rows of the 128-row tile and issues
//                wgmma.m64nBNk16 from shared memory, keeping one k-block of wgmmas in flight
//                while releasing the previous stage; then applies the fused epilogue from
//                registers and stores bf16 to global memory.
// Registers are rebalanced with setmaxnreg (producer 40, consumers 232). Tiles are walked in
// groups of 8 row-blocks so that concurrently running CTAs share A and W tiles in L2.
// With CL = 2 the CTAs run as clusters of two that take vertically adjacent tiles: each CTA loads
// its own A tile and half of the shared W tile, multicast to both, so L2->SM traffic per tile
// drops by a third; a stage is refilled only after the consumers of both CTAs released it.
// F32 stores C in float32 (gemm_f32_bf16w: float32 activations split into a_parts bf16 parts that
// run as a_parts consecutive k-blocks against the same W block, which the second and third reads
// find in L2). The tensor cores add each k16 step into the accumulator with truncation (round
// toward zero), a bias of up to an ulp of the running sum per step: over K = 10240 that would reach
// ~1e-4 relative. So F32 accumulates each W k-block's parts in a fresh register tile and adds it to
// the float32 sum with round-to-nearest (DeepGEMM's promotion), as a float32 GEMM sums; tile 128
// only (2 x 64 accumulators per thread).
#include <algorithm>

#include "cluster_launch.h"
#include "epilogue.cuh"
#include "hopper.cuh"
#include "kernels.h"
#include "split_k.cuh"
#include "tensor_map.h"

namespace fluxk {

namespace sm90 {
namespace {

constexpr int kBM = 128;
constexpr int kBK = 64;
constexpr int kThreads = 384;
constexpr int kGroupM = 8;

template <int BN>
struct GemmConfig {
  static constexpr int kStages = BN == 256 ? 4 : (BN == 192 ? 5 : 6);
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kBBytes = BN * kBK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;
  static_assert(kSmemBytes <= 232448, "shared memory budget");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "swizzle atoms need 1024-byte alignment");
};

struct GemmParams {
  __nv_bfloat16* c;
  float* c_f32;
  int64_t ldc;
  int m, n, k;
  int a_parts;  // k-blocks of A per k-block of W (GemmArgs::a_parts)
  int tiles_m, tiles_n, k_blocks;
  int a_split_blocks;  // ping-pong: k-blocks from the first part of A (GemmArgs::k_split / 64; k_blocks if one)
  int units_m, num_units;  // a unit is CL vertically adjacent tiles, one per CTA of a cluster
  EpilogueArgs epi;
  // Ping-pong: the split last round (split_k.cuh; none with clusters or without a workspace).
  SplitSchedule split;
  float4* partials;   // slot c + j: CTA c's piece of split tile j, [kPpBN / 4 float4][128 threads]
  uint32_t* arrived;  // [sk_tiles]: later pieces of split tile j in their slots
};

template <int GROUP_M = kGroupM>
__host__ __device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int& tm, int& tn) {
  const int per_group = GROUP_M * tiles_n;
  const int group = t / per_group;
  const int first_m = group * GROUP_M;
  const int group_m = tiles_m - first_m < GROUP_M ? tiles_m - first_m : GROUP_M;
  const int r = t - group * per_group;
  tm = first_m + r % group_m;
  tn = r / group_m;
}

template <int BN, int EPI, int CL, bool F32>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_bf16_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_w,
                     const GemmParams p) {
#if FLUXK_SM90_DEVICE
  using Cfg = GemmConfig<BN>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_a = smem;
  uint8_t* s_w = smem + Cfg::kStages * Cfg::kABytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(s_w + Cfg::kStages * Cfg::kBBytes);
  uint64_t* empty = full + Cfg::kStages;

  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;

  // empty: one arrival per consumer warp of every CTA sharing the stage
  init_ring_barriers<Cfg::kStages, CL>(full, empty, 1, 8 * CL);
  const uint32_t rank = CL > 1 ? cluster_ctarank() : 0;
  const int cluster_id = blockIdx.x / CL;
  const int num_clusters = gridDim.x / CL;

  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (tid == 0) {
      prefetch_tensor_map(&tma_a);
      prefetch_tensor_map(&tma_w);
      int stage = 0;
      uint32_t phase = 0;
      for (int t = cluster_id; t < p.num_units; t += num_clusters) {
        int tu, tn;
        tile_coords(t, p.units_m, p.tiles_n, tu, tn);
        const int tm = tu * CL + rank;
        for (int kb = 0; kb < p.k_blocks; ++kb) {
          mbar_wait(&empty[stage], phase ^ 1);
          mbar_arrive_expect_tx(&full[stage], Cfg::kStageBytes);
          tma_load_2d(s_a + stage * Cfg::kABytes, &tma_a, &full[stage], kb * kBK, tm * kBM);
          const int kw = (kb / p.a_parts) * kBK;
          if (CL == 1) {
            tma_load_2d(s_w + stage * Cfg::kBBytes, &tma_w, &full[stage], kw, tn * BN);
          } else {
            tma_load_2d_multicast(s_w + stage * Cfg::kBBytes + rank * (BN / 2) * 128, &tma_w, &full[stage], kw,
                                  tn * BN + rank * (BN / 2), static_cast<uint16_t>(0x3));
          }
          next_stage<Cfg::kStages>(stage, phase);
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int cw = wg - 1;
    const int warp = tid / 32;
    const int lane = tid % 32;
    int stage = 0;
    uint32_t phase = 0;
    float acc[BN / 2];
    float part[F32 ? BN / 2 : 1];  // F32: this W k-block's sum over the parts

    auto release = [&](int s) {
      if (lane == 0) {
        mbar_arrive(&empty[s]);
        if (CL > 1) mbar_arrive_cluster(&empty[s], rank ^ 1);
      }
    };
    for (int t = cluster_id; t < p.num_units; t += num_clusters) {
      int tu, tn;
      tile_coords(t, p.units_m, p.tiles_n, tu, tn);
      const int tm = tu * CL + rank;
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) reg_fence(acc[i]);
      if constexpr (F32) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) part[i] = 0.f;  // overwritten (scale_d 0); defined for the asm operands
      }

      int prev_stage = 0;
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbar_wait(&full[stage], phase);
        const uint32_t a_base = smem_addr(s_a + stage * Cfg::kABytes + cw * 64 * 128);
        const uint32_t w_base = smem_addr(s_w + stage * Cfg::kBBytes);
        wgmma_fence();
        const bool fresh = F32 && kb % p.a_parts == 0;
        const bool promote = F32 && (kb + 1) % p.a_parts == 0;
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) {
          WgmmaSS<BN, 0>::run(F32 ? part : acc, make_smem_desc(a_base + kk * 32, 16, 1024),
                              make_smem_desc(w_base + kk * 32, 16, 1024), fresh && kk == 0 ? 0 : 1);
        }
        wgmma_commit();
        if constexpr (F32) {
          if (promote) {
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) {
              reg_fence(part[i]);
              acc[i] += part[i];
            }
          } else {
            wgmma_wait<1>();
          }
        } else {
          wgmma_wait<1>();
        }
        if (kb > 0) release(prev_stage);
        prev_stage = stage;
        next_stage<Cfg::kStages>(stage, phase);
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) reg_fence(acc[i]);
      if (p.k_blocks > 0) release(prev_stage);

      // Accumulator layout of wgmma m64nNk16: acc[4j + h] holds row (16*warp + lane/4 + 8*(h/2)),
      // column (8j + 2*(lane%4) + h%2) of this warpgroup's 64 x BN block.
      const int row0 = tm * kBM + cw * 64 + warp * 16 + lane / 4;
      const int col_base = tn * BN + 2 * (lane % 4);
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int col = col_base + 8 * j;
        if (F32 && col < p.n) {
          const float b0 = p.epi.bias_f32 ? p.epi.bias_f32[col] : 0.f;
          const float b1 = p.epi.bias_f32 ? p.epi.bias_f32[col + 1] : 0.f;
          if (row0 < p.m) {
            *reinterpret_cast<float2*>(p.c_f32 + static_cast<int64_t>(row0) * p.ldc + col) =
                make_float2(acc[4 * j + 0] + b0, acc[4 * j + 1] + b1);
          }
          if (row0 + 8 < p.m) {
            *reinterpret_cast<float2*>(p.c_f32 + static_cast<int64_t>(row0 + 8) * p.ldc + col) =
                make_float2(acc[4 * j + 2] + b0, acc[4 * j + 3] + b1);
          }
        } else if (col < p.n) {
          if (row0 < p.m) {
            *reinterpret_cast<uint32_t*>(p.c + static_cast<int64_t>(row0) * p.ldc + col) =
                epilogue_pair<EPI>(p.epi, acc[4 * j + 0], acc[4 * j + 1], row0, col);
          }
          if (row0 + 8 < p.m) {
            *reinterpret_cast<uint32_t*>(p.c + static_cast<int64_t>(row0 + 8) * p.ldc + col) =
                epilogue_pair<EPI>(p.epi, acc[4 * j + 2], acc[4 * j + 3], row0 + 8, col);
          }
        }
      }
    }
  }
  if (CL > 1) {
    __syncwarp();
    cluster_sync();  // no CTA leaves while its peer may still multicast into it or arrive on it
  }
#endif
}

// Ping-pong schedule (CUTLASS's KernelTmaWarpSpecializedPingpong idea): each consumer warpgroup
// owns whole 128 x 128 output tiles (two m64n128k16 wgmmas per k16 step, 128 fp32 accumulators per
// thread) and the two take the CTA's tiles alternately. A turn barrier orders their main loops, so
// while one warpgroup runs its epilogue from registers the other keeps the tensor cores busy. The
// producer fills one stage ring in tile order; a consumer's stage/phase counters start at its
// tile's place in that order (skipping the other warpgroup's k-blocks). With CL = 2, CTA pairs walk
// units of two vertically adjacent tiles; each CTA loads its A tile and half of the shared W tile,
// multicast to both, and a stage is refilled once the consuming warpgroups of both CTAs released it.
// BN = 192 (tiles 128 x 192, 2 x 96 accumulators per thread): 17% fewer L2->SM bytes per output than 128 x 128 (22%
// in CTA pairs), the quantity that separates our GEMMs from cuBLAS's 192 x 192 tiles at the card's power cap
// (docs/kernels.md "Where the GEMM time goes"). The QK-norm/RoPE epilogue needs a head (128 columns) per tile.
constexpr int kPpBN = 128;  // the tile width of the QK-norm/RoPE epilogue
template <int BN>
struct PingPongConfig {
  static_assert(BN == 128 || BN == 192, "ping-pong tile widths");
  static constexpr int kStages = BN == 128 ? 7 : 5;
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kWBytes = BN * kBK * 2;
  static constexpr int kSmemBytes = kStages * (kABytes + kWBytes) + 2 * kStages * 8 + 1024;
  static_assert(kSmemBytes <= 232448, "shared memory budget");
  static_assert(kWBytes / 2 % 1024 == 0, "each CTA's multicast half of W starts on a swizzle atom");
};

// Column pairs per thread loaded ahead of their stores in the epilogue: the 128-wide tile's whole row (measured, see
// the epilogue); with the 192-wide tile's 192 accumulators, batches of 8 (of 4 with the residual and gate, where 8
// spilled) leave the registers enough room.
__host__ __device__ constexpr int pingpong_epilogue_batch(int bn, int epi) {
  return bn == 128 ? 16 : epi == static_cast<int>(Epilogue::kGateResidual) ? 4 : 8;
}
constexpr int kTurnBarrier = 1;  // named barriers 1 + cw: warpgroup cw may issue its main loop
constexpr int kPieceBarrier = 3;  // named barriers 3 + cw: warpgroup cw's threads stored (or may read) a split slot
// Rows of tiles walked together. Measured on an H100, 132 SMs (bench/kernels/tile_walk.sh; figures in
// bench/results/profiles/2026-11-26-h100-436fdb2-tile-walk.txt): 6 rows against 8, [4608,3072]x[12288,3072]ᵀ+gelu
// 600 -> 673 TFLOP/s, [4096, ...] 616 -> 673, N = 9216 +5%, the N = 3072 shapes and M ≤ 1536 within noise; 4 came
// close to 6, 9, 12 and 16 behind 8. 6 divides the 132 persistent CTAs, so a CTA's successive tiles (132 apart in
// the walk) keep one row block of A. The NF4 kernel (one tile per CTA, 256-token tiles) measured best at 8.
constexpr int kPpGroupM = 6;

constexpr int kQkEpi = static_cast<int>(Epilogue::kQkNormRope);

#if FLUXK_SM90_DEVICE
// One stage of the ping-pong and wide kernels' producers: A's k-block kb of tile row tm (from the second part of a
// two-part A past a_split_blocks) and W's k-block of tile column tn, all BN rows, or with CL = 2 this CTA's half,
// multicast to the pair (both CTAs' tiles share W's rows).
template <int BM, int BN, int CL>
__device__ __forceinline__ void load_stage(const GemmParams& p, const CUtensorMap* tma_a, const CUtensorMap* tma_a2,
                                           const CUtensorMap* tma_w, uint8_t* s_a, uint8_t* s_w, uint64_t* full,
                                           int kb, int tm, int tn, uint32_t rank) {
  mbar_arrive_expect_tx(full, (BM + BN) * kBK * 2);
  const bool second = kb >= p.a_split_blocks;
  tma_load_2d(s_a, second ? tma_a2 : tma_a, full, (second ? kb - p.a_split_blocks : kb) * kBK, tm * BM);
  if (CL == 1) {
    tma_load_2d(s_w, tma_w, full, kb * kBK, tn * BN);
  } else {
    tma_load_2d_multicast(s_w + rank * (BN / 2) * 128, tma_w, full, kb * kBK, tn * BN + rank * (BN / 2),
                          static_cast<uint16_t>(0x3));
  }
}

// The bias pairs of column pairs j0 .. j0 + B - 1 of a thread's accumulator block (column col_base + 8j).
template <int B>
__device__ __forceinline__ void load_bias_batch(const GemmParams& p, int col_base, int j0, uint32_t (&bias2)[B]) {
#pragma unroll
  for (int j = 0; j < B; ++j) {
    const int col = col_base + 8 * (j0 + j);
    bias2[j] = col < p.n ? load_bias2(p.epi, col) : 0u;
  }
}

// Column pairs j0 .. j0 + B - 1 of one m64 accumulator block (acc[4j + 2r + e]: row row0 + 8r, column
// col_base + 8j + e) through the epilogue into C. A row's residual and gate loads go ahead of its stores: the residual
// may alias the output, so in program order every load would wait behind the previous store (one memory latency per
// pair, longer than the other warpgroup's main loop). Safe since each element is read and then written by the same
// thread.
template <int EPI, int B, int N>
__device__ __forceinline__ void store_rows_batch(const GemmParams& p, const float (&acc)[N], const uint32_t (&bias2)[B],
                                                 int j0, int row0, int col_base) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= p.m) continue;
    uint32_t res2[B], gate2[B];
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int col = col_base + 8 * (j0 + j);
      const bool load = EPI == static_cast<int>(Epilogue::kGateResidual) && col < p.n;
      res2[j] = load ? load_residual2(p.epi, row, col) : 0u;
      gate2[j] = load ? load_gate2(p.epi, row, col) : 0u;
    }
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int col = col_base + 8 * (j0 + j);
      if (col < p.n) {
        const int a = 4 * (j0 + j) + 2 * r;
        *reinterpret_cast<uint32_t*>(p.c + static_cast<int64_t>(row) * p.ldc + col) =
            epilogue_pair_loaded<EPI>(acc[a], acc[a + 1], bias2[j], res2[j], gate2[j]);
      }
    }
  }
}

// kQkNormRope on a ping-pong tile: 128 tokens x one head of q, k or v (tn = part · heads + head). acc[h][4j + 2r + e]
// is row 64h + 16·warp + lane/4 + 8r, column 8j + 2·(lane%4) + e, so a row's 128 values live in a quad of lanes.
// The squares are summed in joint_qkv's order (each piece of 8 columns in column order from the quad's rounded
// values, then the butterfly over the 16 pieces), so rows come out bitwise as the stored projection + joint_qkv.
// Every table value a row needs is loaded (read-only loads) before the row's first store: the compiler keeps plain
// loads behind stores it cannot prove disjoint, and one L2 round trip per column pair (measured: 0.50 → 0.64 ms for
// [4608,3072]x[9216,3072]ᵀ on the H100) would outlast the other warpgroup's tile.
__device__ __forceinline__ void pingpong_qk_norm_rope(const EpilogueArgs& e, const float (&acc)[2][kPpBN / 2],
                                                      const uint32_t (&bias2)[kPpBN / 8], int tm, int tn, int m,
                                                      int warp, int lane) {
  constexpr int kPairs = kPpBN / 8;  // column pairs of a row per lane
  const int part = tn / e.heads;
  const int head = tn - part * e.heads;
  __nv_bfloat16* out = part == 0 ? e.q : part == 1 ? e.k : e.v;
  const int col = 2 * (lane % 4);
  uint32_t y2[4][kPairs];  // rows (h, r) as 2h + r: the column pairs as the bf16 projection stores them
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const __nv_bfloat162 b = bf16x2_from_bits(bias2[j]);
        y2[2 * h + r][j] =
            pack_bf16x2(acc[h][4 * j + 2 * r] + __low2float(b), acc[h][4 * j + 2 * r + 1] + __high2float(b));
      }
  int rows[4];
  __nv_bfloat16* dst[4];
  int tokens[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    rows[i] = tm * kBM + (i / 2) * 64 + warp * 16 + lane / 4 + 8 * (i % 2);
    tokens[i] = rows[i] < m ? rows[i] % e.tokens : 0;
    const int64_t joint_row = static_cast<int64_t>(rows[i] / e.tokens) * e.joint_tokens + e.joint_offset + tokens[i];
    dst[i] = out + (joint_row * e.heads + head) * 128 + col;
  }
  if (part == 2) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (rows[i] >= m) continue;
#pragma unroll
      for (int j = 0; j < kPairs; ++j) *reinterpret_cast<uint32_t*>(dst[i] + 8 * j) = y2[i][j];
    }
    return;
  }
  const __nv_bfloat16* norm = (part == 0 ? e.norm_q : e.norm_k) + col;
  uint32_t w2[kPairs];
#pragma unroll
  for (int j = 0; j < kPairs; ++j) w2[j] = *reinterpret_cast<const uint32_t*>(norm + 8 * j);
  float rstd[4];
  const int quad_base = lane & ~3;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float piece[kPairs];
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      float sq = 0.f;
#pragma unroll
      for (int src = 0; src < 4; ++src) {
        const __nv_bfloat162 x = bf16x2_from_bits(__shfl_sync(0xffffffffu, y2[i][j], quad_base + src));
        sq = qk_square_add(sq, __low2float(x));
        sq = qk_square_add(sq, __high2float(x));
      }
      piece[j] = sq;
    }
    float s8[8], s4[4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s8[j] = __fadd_rn(piece[j], piece[j + 8]);
#pragma unroll
    for (int j = 0; j < 4; ++j) s4[j] = __fadd_rn(s8[j], s8[j + 4]);
    rstd[i] = qk_rstd(__fadd_rn(__fadd_rn(s4[0], s4[2]), __fadd_rn(s4[1], s4[3])), 128.f, e.eps);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2* cs = reinterpret_cast<const float2*>(e.rope_cos + static_cast<int64_t>(tokens[i]) * 128 + col);
    const float2* sn = reinterpret_cast<const float2*>(e.rope_sin + static_cast<int64_t>(tokens[i]) * 128 + col);
    float2 c[kPairs], sv[kPairs];
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      c[j] = __ldg(cs + 4 * j);
      sv[j] = __ldg(sn + 4 * j);
    }
    if (rows[i] >= m) continue;
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const __nv_bfloat162 x = bf16x2_from_bits(y2[i][j]);
      const __nv_bfloat162 wt = bf16x2_from_bits(w2[j]);
      float o0, o1;
      qk_norm_rope_pair(__low2float(x), __high2float(x), rstd[i], __low2float(wt), __high2float(wt), c[j].x, c[j].y,
                        sv[j].x, sv[j].y, o0, o1);
      *reinterpret_cast<uint32_t*>(dst[i] + 8 * j) = pack_bf16x2(o0, o1);
    }
  }
}
#endif

template <int BN, int EPI, int CL>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_bf16_pingpong_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_a2,
                              const __grid_constant__ CUtensorMap tma_w, const GemmParams p) {
#if FLUXK_SM90_DEVICE
  using Cfg = PingPongConfig<BN>;
  static_assert(EPI != kQkEpi || BN == kPpBN, "the QK epilogue takes one head per tile");
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_a = smem;
  uint8_t* s_w = smem + Cfg::kStages * Cfg::kABytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(s_w + Cfg::kStages * Cfg::kWBytes);
  uint64_t* empty = full + Cfg::kStages;

  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;
  const int cluster_id = blockIdx.x / CL;
  const int num_clusters = gridDim.x / CL;
  // This cluster's units (whole, then pieces of split tiles: split_k.cuh); this CTA takes the rank-th tile of each.
  const int local_tiles = pieces_of(p.split, cluster_id, num_clusters);

  // empty: one arrival per warp of the warpgroup that consumes the stage, in every CTA the stage's W half reaches
  init_ring_barriers<Cfg::kStages, CL>(full, empty, 1, 4 * CL);
  const uint32_t rank = CL > 1 ? cluster_ctarank() : 0;

  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (tid == 0) {
      prefetch_tensor_map(&tma_a);
      if (p.a_split_blocks < p.k_blocks) prefetch_tensor_map(&tma_a2);
      prefetch_tensor_map(&tma_w);
      int stage = 0;
      uint32_t phase = 0;
      for (int i = 0; i < local_tiles; ++i) {
        const Piece w = piece_of(p.split, cluster_id, num_clusters, i);
        int tu, tn;
        tile_coords<kPpGroupM / CL>(w.unit, p.units_m, p.tiles_n, tu, tn);
        const int tm = tu * CL + rank;
        for (int kb = w.kb0; kb < w.kb1; ++kb) {
          mbar_wait(&empty[stage], phase ^ 1);
          load_stage<kBM, BN, CL>(p, &tma_a, &tma_a2, &tma_w, s_a + stage * Cfg::kABytes, s_w + stage * Cfg::kWBytes,
                                  &full[stage], kb, tm, tn, rank);
          next_stage<Cfg::kStages>(stage, phase);
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int cw = wg - 1;
    const int warp = tid / 32;
    const int lane = tid % 32;
    float acc[2][BN / 2];  // rows 0-63 and 64-127 of the tile

    // Every turn handed over is taken: warpgroup 1 hands warpgroup 0 its first turn only, and a
    // warpgroup hands over after a tile only when the CTA has a next tile (the other's).
    if (cw == 1) named_barrier_arrive(kTurnBarrier + 0, 256);
    for (int i = cw; i < local_tiles; i += 2) {
      const Piece w = piece_of(p.split, cluster_id, num_clusters, i);
      int tu, tn;
      tile_coords<kPpGroupM / CL>(w.unit, p.units_m, p.tiles_n, tu, tn);
      const int tm = tu * CL + rank;
      int stage = w.ring_start % Cfg::kStages;  // this piece's place in the ring order
      uint32_t phase = static_cast<uint32_t>((w.ring_start / Cfg::kStages) & 1);
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < BN / 2; ++j) acc[h][j] = 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < BN / 2; ++j) reg_fence(acc[h][j]);

      named_barrier_sync(kTurnBarrier + cw, 256);
      int prev_stage = 0;
      for (int kb = w.kb0; kb < w.kb1; ++kb) {
        mbar_wait(&full[stage], phase);
        const uint32_t a_base = smem_addr(s_a + stage * Cfg::kABytes);
        const uint32_t w_base = smem_addr(s_w + stage * Cfg::kWBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) {
          const uint64_t wd = make_smem_desc(w_base + kk * 32, 16, 1024);
          WgmmaSS<BN, 0>::run(acc[0], make_smem_desc(a_base + kk * 32, 16, 1024), wd, 1);
          WgmmaSS<BN, 0>::run(acc[1], make_smem_desc(a_base + 64 * 128 + kk * 32, 16, 1024), wd, 1);
        }
        wgmma_commit();
        wgmma_wait<1>();
        if (kb > w.kb0 && lane == 0) {
          mbar_arrive(&empty[prev_stage]);
          if (CL > 1) mbar_arrive_cluster(&empty[prev_stage], rank ^ 1);
        }
        prev_stage = stage;
        next_stage<Cfg::kStages>(stage, phase);
      }
      // Issued: the other warpgroup's wgmmas may queue behind ours while we finish and store.
      if (i + 1 < local_tiles) named_barrier_arrive(kTurnBarrier + (cw ^ 1), 256);
      wgmma_wait<0>();
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < BN / 2; ++j) reg_fence(acc[h][j]);
      if (lane == 0) {
        mbar_arrive(&empty[prev_stage]);
        if (CL > 1) mbar_arrive_cluster(&empty[prev_stage], rank ^ 1);
      }
      if (CL == 1 && w.role != kWholeTile) {  // clusters are never split
        // Slot layout: each thread's accumulators as float4s, 128 threads side by side.
        constexpr int kQuads = BN / 4;
        if (w.role == kLaterPiece) {
          float4* slot = p.partials + static_cast<int64_t>(cluster_id + w.split_tile) * kQuads * 128 + tid;
#pragma unroll
          for (int q = 0; q < kQuads; ++q) {
            const float* v = &acc[q / (kQuads / 2)][4 * (q % (kQuads / 2))];
            __stcg(slot + q * 128, make_float4(v[0], v[1], v[2], v[3]));
          }
          named_barrier_sync(kPieceBarrier + cw, 128);
          if (tid == 0) red_release_add(&p.arrived[w.split_tile], 1u);
          continue;
        }
        const int later = later_pieces(p.split, cluster_id, w.split_tile);
        if (tid == 0) wait_count(&p.arrived[w.split_tile], static_cast<uint32_t>(later));
        named_barrier_sync(kPieceBarrier + cw, 128);
#pragma unroll 1
        for (int d = 1; d <= later; ++d) {
          const float4* slot = p.partials + static_cast<int64_t>(cluster_id + d + w.split_tile) * kQuads * 128 + tid;
#pragma unroll
          for (int q = 0; q < kQuads; ++q) {
            const float4 v = __ldcg(slot + q * 128);
            float* a = &acc[q / (kQuads / 2)][4 * (q % (kQuads / 2))];
            a[0] += v.x;
            a[1] += v.y;
            a[2] += v.z;
            a[3] += v.w;
          }
        }
      }

      // Accumulator layout of wgmma m64nNk16: acc[h][4j + 2r + e] holds row (64h + 16*warp + lane/4 + 8r),
      // column (8j + 2*(lane%4) + e) of the 128 x BN tile.
      // Loads go in batches ahead of the batch's stores (store_rows_batch).
      const int col_base = tn * BN + 2 * (lane % 4);
      if constexpr (EPI == kQkEpi) {
        uint32_t bias2[kPpBN / 8];
        load_bias_batch(p, col_base, 0, bias2);
        pingpong_qk_norm_rope(p.epi, acc, bias2, tm, tn, p.m, warp, lane);
      } else {
        constexpr int kBatch = pingpong_epilogue_batch(BN, EPI);
#pragma unroll
        for (int j0 = 0; j0 < BN / 8; j0 += kBatch) {
          uint32_t bias2[kBatch];
          load_bias_batch(p, col_base, j0, bias2);
#pragma unroll
          for (int h = 0; h < 2; ++h)
            store_rows_batch<EPI>(p, acc[h], bias2, j0, tm * kBM + h * 64 + warp * 16 + lane / 4, col_base);
        }
      }
    }
  }
  if (CL > 1) {
    __syncwarp();
    cluster_sync();  // no CTA leaves while its peer may still multicast into it or arrive on it
  }
#endif
}

// Wide cooperative schedule (GemmSchedule::kWide): 192 x 192 tiles, the shape of cuBLAS's fastest kernel on these
// GEMMs at the card's power cap (nvjet 192x192, 2x1 clusters; docs/kernels.md "Where the GEMM time goes"). Three
// consumer warpgroups each own 64 rows of the tile (one m64n192k16 per k16 step, 96 accumulators per thread) and
// share every stage, so per output the tile moves 20% fewer bytes from L2 than 128 x 192 (40% in CTA pairs, which
// take vertically adjacent tiles and multicast halves of the shared W tile). The epilogue is not overlapped with a
// main loop: the producer refills the four stages for the next tile meanwhile. Bf16 output, any epilogue but the QK
// one, two-part A (GemmArgs::a2) as the ping-pong kernel reads it; no split last round.
constexpr int kWideBM = 192;
constexpr int kWideBN = 192;
constexpr int kWideConsumers = kWideBM / 64;
constexpr int kWideThreads = (kWideConsumers + 1) * 128;
constexpr int kWideStages = 4;
constexpr int kWideTileBytes = kWideBM * kBK * 2;  // A and W tiles are both 192 x 64
constexpr int kWideSmemBytes = kWideStages * 2 * kWideTileBytes + 2 * kWideStages * 8 + 1024;
static_assert(kWideSmemBytes <= 232448, "shared memory budget");
static_assert(kWideTileBytes / 2 % 1024 == 0, "each CTA's multicast half of W starts on a swizzle atom");

template <int EPI, int CL>
__global__ void __launch_bounds__(kWideThreads, 1)
    gemm_bf16_wide_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_a2,
                          const __grid_constant__ CUtensorMap tma_w, const GemmParams p) {
#if FLUXK_SM90_DEVICE
  static_assert(EPI != kQkEpi, "the QK epilogue takes one head per tile");
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_a = smem;
  uint8_t* s_w = smem + kWideStages * kWideTileBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(s_w + kWideStages * kWideTileBytes);
  uint64_t* empty = full + kWideStages;

  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;
  // empty: every consumer warp of every CTA the stage's W half reaches
  init_ring_barriers<kWideStages, CL>(full, empty, 1, 4 * kWideConsumers * CL);
  const uint32_t rank = CL > 1 ? cluster_ctarank() : 0;
  const int cluster_id = blockIdx.x / CL;
  const int num_clusters = gridDim.x / CL;

  if (wg == 0) {
    // 512 threads: 128 registers each at launch; 3 x 128 x 152 + 128 x 40 fit the 64 K register file.
    setmaxnreg_dec<40>();
    if (tid == 0) {
      prefetch_tensor_map(&tma_a);
      if (p.a_split_blocks < p.k_blocks) prefetch_tensor_map(&tma_a2);
      prefetch_tensor_map(&tma_w);
      int stage = 0;
      uint32_t phase = 0;
      for (int t = cluster_id; t < p.num_units; t += num_clusters) {
        int tu, tn;
        tile_coords<kPpGroupM / CL>(t, p.units_m, p.tiles_n, tu, tn);
        const int tm = tu * CL + rank;
        for (int kb = 0; kb < p.k_blocks; ++kb) {
          mbar_wait(&empty[stage], phase ^ 1);
          load_stage<kWideBM, kWideBN, CL>(p, &tma_a, &tma_a2, &tma_w, s_a + stage * kWideTileBytes,
                                           s_w + stage * kWideTileBytes, &full[stage], kb, tm, tn, rank);
          next_stage<kWideStages>(stage, phase);
        }
      }
    }
  } else {
    setmaxnreg_inc<152>();
    const int cw = wg - 1;
    const int warp = tid / 32;
    const int lane = tid % 32;
    int stage = 0;
    uint32_t phase = 0;
    float acc[kWideBN / 2];
    const auto release = [&](int s) {
      if (lane == 0) {
        mbar_arrive(&empty[s]);
        if (CL > 1) mbar_arrive_cluster(&empty[s], rank ^ 1);
      }
    };
    for (int t = cluster_id; t < p.num_units; t += num_clusters) {
      int tu, tn;
      tile_coords<kPpGroupM / CL>(t, p.units_m, p.tiles_n, tu, tn);
      const int tm = tu * CL + rank;
#pragma unroll
      for (int i = 0; i < kWideBN / 2; ++i) acc[i] = 0.f;
#pragma unroll
      for (int i = 0; i < kWideBN / 2; ++i) reg_fence(acc[i]);
      int prev_stage = 0;
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbar_wait(&full[stage], phase);
        const uint32_t a_base = smem_addr(s_a + stage * kWideTileBytes + cw * 64 * 128);
        const uint32_t w_base = smem_addr(s_w + stage * kWideTileBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) {
          WgmmaSS<kWideBN, 0>::run(acc, make_smem_desc(a_base + kk * 32, 16, 1024),
                                   make_smem_desc(w_base + kk * 32, 16, 1024), 1);
        }
        wgmma_commit();
        wgmma_wait<1>();
        if (kb > 0) release(prev_stage);
        prev_stage = stage;
        next_stage<kWideStages>(stage, phase);
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < kWideBN / 2; ++i) reg_fence(acc[i]);
      if (p.k_blocks > 0) release(prev_stage);

      // This warpgroup's 64 x 192 block, as the ping-pong epilogue stores its blocks and in its batches (larger ones,
      // with the registers rebalanced to fit, measured no faster: results/2026-11-26-h100-26cabe5-wide-epilogue-
      // batches-trial.txt).
      const int col_base = tn * kWideBN + 2 * (lane % 4);
      constexpr int kBatch = pingpong_epilogue_batch(kWideBN, EPI);
#pragma unroll
      for (int j0 = 0; j0 < kWideBN / 8; j0 += kBatch) {
        uint32_t bias2[kBatch];
        load_bias_batch(p, col_base, j0, bias2);
        store_rows_batch<EPI>(p, acc, bias2, j0, tm * kWideBM + cw * 64 + warp * 16 + lane / 4, col_base);
      }
    }
  }
  if (CL > 1) {
    __syncwarp();
    cluster_sync();  // no CTA leaves while its peer may still multicast into it or arrive on it
  }
#endif
}

// The tensor maps and parameters of a ping-pong or wide launch (bf16 output, A in one or two parts) in BM x BN tiles
// walked in units of CL vertically adjacent tiles; W in boxes of BN / CL rows (each CTA of a pair loads its half).
struct TileLaunch {
  CUtensorMap tma_a, tma_a2, tma_w;
  GemmParams p;
};
cudaError_t prepare_tile_launch(const GemmArgs& a, int bm, int bn, int cl, TileLaunch* l) {
  const int k1 = a.a2 ? a.k_split : a.k;
  cudaError_t e = encode_bf16_2d_sw128(&l->tma_a, a.a, a.m, k1, a.lda, bm);
  if (e != cudaSuccess) return e;
  l->tma_a2 = l->tma_a;
  if (a.a2) {
    e = encode_bf16_2d_sw128(&l->tma_a2, a.a2, a.m, a.k - a.k_split, a.lda2, bm);
    if (e != cudaSuccess) return e;
  }
  e = encode_bf16_2d_sw128(&l->tma_w, a.w, a.n, a.k, a.ldw, bn / cl);
  if (e != cudaSuccess) return e;
  GemmParams& p = l->p;
  p = GemmParams{};
  p.c = a.c;
  p.ldc = a.ldc;
  p.m = a.m;
  p.n = a.n;
  p.k = a.k;
  p.a_parts = 1;
  p.tiles_m = (a.m + bm - 1) / bm;
  p.tiles_n = (a.n + bn - 1) / bn;
  p.k_blocks = (a.k + kBK - 1) / kBK;
  p.a_split_blocks = a.a2 ? a.k_split / kBK : p.k_blocks;
  p.units_m = (p.tiles_m + cl - 1) / cl;
  p.num_units = p.units_m * p.tiles_n;
  p.epi = a.epi;
  return cudaSuccess;
}

template <int EPI, int CL>
cudaError_t launch_wide(const GemmArgs& a, cudaStream_t stream, int sms) {
  TileLaunch l;
  cudaError_t e = prepare_tile_launch(a, kWideBM, kWideBN, CL, &l);
  if (e != cudaSuccess) return e;
  const GemmParams& p = l.p;
  auto kernel = gemm_bf16_wide_kernel<EPI, CL>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWideSmemBytes);
  if (e != cudaSuccess) return e;
  if (CL == 1) {
    const int grid = p.num_units < sms ? p.num_units : sms;
    kernel<<<grid, kWideThreads, kWideSmemBytes, stream>>>(l.tma_a, l.tma_a2, l.tma_w, p);
    return cudaGetLastError();
  }
  static int max_clusters = 0;
  return launch_clusters(kernel, kWideThreads, CL, p.num_units, kWideSmemBytes, sms, &max_clusters, stream, l.tma_a,
                         l.tma_a2, l.tma_w, p);
}

template <int CL>
cudaError_t launch_wide_epi(const GemmArgs& a, cudaStream_t stream, int sms) {
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch_wide<0, CL>(a, stream, sms);
    case Epilogue::kGeluTanh: return launch_wide<1, CL>(a, stream, sms);
    case Epilogue::kGateResidual: return launch_wide<2, CL>(a, stream, sms);
    case Epilogue::kQkNormRope: break;
  }
  return cudaErrorInvalidValue;
}

// The ping-pong split's plan for these arguments with independent CTAs (split_k.cuh): after one to three whole rounds
// and for last rounds under 40% busy only. H100, 2026-11-26, ab.py interleaved, whole -> split with no such limits
// (bench/kernels/results/2026-11-26-h100-6792ab4-ab-pingpong-split.txt): 1536x3072x15360 + gate (the 512²
// single-block proj_out, 2 rounds + 24 tiles) 0.295 -> 0.262 ms, 512x9216x3072 (2 + 24) 0.062 -> 0.061; but
// 512x3072x3072 + gate (96 tiles, no whole round) 0.030 -> 0.042, 1024x3072x3072 + gate (1 + 60) 0.049 -> 0.064,
// 1536x9216x3072 (6 + 72) 0.153 -> 0.159, and after many rounds no gain (4608x12288x3072 + gelu, 26 + 24: 0.612 ->
// 0.605).
SplitPlan pingpong_split_plan(const GemmArgs& a, int bn, int sms, bool allowed) {
  const int tiles_m = (a.m + kBM - 1) / kBM, tiles_n = (a.n + bn - 1) / bn;
  const int rounds = tiles_m * tiles_n / sms;
  allowed = allowed && rounds >= 1 && rounds <= 3;
  const auto coords = [&](int u, int* r, int* c) { tile_coords<kPpGroupM>(u, tiles_m, tiles_n, *r, *c); };
  const auto footprint = [&](int first, int count) {
    int rows = 0, cols = 0;
    distinct_blocks(first, count, tiles_m, tiles_n, coords, &rows, &cols);
    return (static_cast<size_t>(rows) * kBM + static_cast<size_t>(cols) * bn) * a.k * 2;
  };
  const size_t tile_f32_bytes = static_cast<size_t>(kBM) * bn * sizeof(float);
  return plan_split(tiles_m * tiles_n, (a.k + kBK - 1) / kBK, sms, tile_f32_bytes, 1, allowed, 2 * sms / 5,
                    device_l2_bytes(), footprint);
}

template <int BN, int EPI, int CL>
cudaError_t launch_pingpong(const GemmArgs& a, cudaStream_t stream, int sms) {
  using Cfg = PingPongConfig<BN>;
  TileLaunch l;
  cudaError_t e = prepare_tile_launch(a, kBM, BN, CL, &l);
  if (e != cudaSuccess) return e;
  GemmParams& p = l.p;
  const bool split_ok = CL == 1 && a.workspace && aligned16(a.workspace);
  SplitPlan plan = pingpong_split_plan(a, BN, sms, split_ok);
  if (plan.s.sk_tiles && a.workspace_bytes < plan.bytes) plan = pingpong_split_plan(a, BN, sms, false);
  if (CL > 1) plan.s.dp_units = p.num_units;
  p.split = plan.s;
  p.arrived = plan.s.sk_tiles ? static_cast<uint32_t*>(a.workspace) : nullptr;
  p.partials =
      plan.s.sk_tiles ? reinterpret_cast<float4*>(static_cast<uint8_t*>(a.workspace) + plan.counter_bytes) : nullptr;
  auto kernel = gemm_bf16_pingpong_kernel<BN, EPI, CL>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  if (CL == 1) {
    if (plan.s.sk_tiles) {
      e = cudaMemsetAsync(p.arrived, 0, plan.counter_bytes, stream);
      if (e != cudaSuccess) return e;
    }
    kernel<<<plan.grid, kThreads, Cfg::kSmemBytes, stream>>>(l.tma_a, l.tma_a2, l.tma_w, p);
    return cudaGetLastError();
  }
  static int max_clusters = 0;
  return launch_clusters(kernel, kThreads, CL, p.num_units, Cfg::kSmemBytes, sms, &max_clusters, stream, l.tma_a,
                         l.tma_a2, l.tma_w, p);
}

template <int BN, int CL>
cudaError_t launch_pingpong_epi(const GemmArgs& a, cudaStream_t stream, int sms) {
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch_pingpong<BN, 0, CL>(a, stream, sms);
    case Epilogue::kGeluTanh: return launch_pingpong<BN, 1, CL>(a, stream, sms);
    case Epilogue::kGateResidual: return launch_pingpong<BN, 2, CL>(a, stream, sms);
    case Epilogue::kQkNormRope:
      if constexpr (BN == kPpBN) return launch_pingpong<BN, kQkEpi, CL>(a, stream, sms);
      break;
  }
  return cudaErrorInvalidValue;
}

template <int CL>
cudaError_t launch_pingpong_width(const GemmArgs& a, int bn, cudaStream_t stream, int sms) {
  return bn == 192 ? launch_pingpong_epi<192, CL>(a, stream, sms) : launch_pingpong_epi<128, CL>(a, stream, sms);
}

template <int BN, int EPI, int CL, bool F32 = false>
cudaError_t launch(const GemmArgs& a, cudaStream_t stream, int sms) {
  using Cfg = GemmConfig<BN>;
  CUtensorMap tma_a, tma_w;
  const int k_blocks_w = (a.k + kBK - 1) / kBK;
  const int a_cols = a.a_parts == 1 ? a.k : a.a_parts * k_blocks_w * kBK;
  cudaError_t e = encode_bf16_2d_sw128(&tma_a, a.a, a.m, a_cols, a.lda, kBM);
  if (e != cudaSuccess) return e;
  e = encode_bf16_2d_sw128(&tma_w, a.w, a.n, a.k, a.ldw, BN / CL);
  if (e != cudaSuccess) return e;

  GemmParams p;
  p.c = a.c;
  p.c_f32 = a.c_f32;
  p.ldc = a.ldc;
  p.m = a.m;
  p.n = a.n;
  p.k = a.k;
  p.a_parts = a.a_parts;
  p.tiles_m = (a.m + kBM - 1) / kBM;
  p.tiles_n = (a.n + BN - 1) / BN;
  p.k_blocks = a.a_parts * k_blocks_w;
  p.units_m = (p.tiles_m + CL - 1) / CL;
  p.num_units = p.units_m * p.tiles_n;
  p.epi = a.epi;

  auto kernel = gemm_bf16_kernel<BN, EPI, CL, F32>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  if (CL == 1) {
    const int grid = p.num_units < sms ? p.num_units : sms;
    kernel<<<grid, kThreads, Cfg::kSmemBytes, stream>>>(tma_a, tma_w, p);
    return cudaGetLastError();
  }
  static int max_clusters = 0;
  return launch_clusters(kernel, kThreads, CL, p.num_units, Cfg::kSmemBytes, sms, &max_clusters, stream, tma_a,
                         tma_w, p);
}

template <int BN, int CL>
cudaError_t launch_epi(const GemmArgs& a, cudaStream_t stream, int sms) {
  if constexpr (CL == 1 && BN == 128) {
    if (a.c_f32) return launch<BN, 0, 1, true>(a, stream, sms);  // gemm_bf16_check: kNone, no cluster
  }
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch<BN, 0, CL>(a, stream, sms);
    case Epilogue::kGeluTanh: return launch<BN, 1, CL>(a, stream, sms);
    case Epilogue::kGateResidual: return launch<BN, 2, CL>(a, stream, sms);
    case Epilogue::kQkNormRope: break;  // ping-pong only
  }
  return cudaErrorInvalidValue;
}

template <int BN>
cudaError_t launch_cluster(const GemmArgs& a, cudaStream_t stream, int sms) {
  // Clusters are opt-in here: 1.3-1.9x slower on every Flux shape until their release arrive was fixed (H200,
  // 2026-11-25), then equal (H100, 128x256: 0.655 ms either way at 4608x3072x12288; docs/kernels.md).
  const int cl = a.cluster ? a.cluster : 1;
  if (cl == 1) return launch_epi<BN, 1>(a, stream, sms);
  if (cl == 2) return launch_epi<BN, 2>(a, stream, sms);
  return cudaErrorInvalidValue;
}

// Picks the tile width that minimises (waves of tiles) x (cost of one tile), where narrower
// tiles pay for their lower arithmetic intensity. Rates relative to 256 from the H200 sweep of
// 2026-11-25 (bench/kernels/results): at equal waves 192 and 128 ran within ~3-5% of 256.
int pick_tile_n(int m, int n, int sms) {
  const int widths[3] = {256, 192, 128};
  const double rate[3] = {1.0, 0.97, 0.95};
  int best = 256;
  double best_cost = 1e30;
  for (int i = 0; i < 3; ++i) {
    const long tiles = static_cast<long>((m + kBM - 1) / kBM) * ((n + widths[i] - 1) / widths[i]);
    const long waves = (tiles + sms - 1) / sms;
    const double cost = static_cast<double>(waves) * widths[i] / rate[i];
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = widths[i];
    }
  }
  return best;
}

// Ping-pong won or tied every Flux GEMM against the cooperative kernel in the same run (H200,
// 2026-11-26, M = 512, 1024, 4096 and 4608, each epilogue; docs/kernels.md), even at M = 512 where
// a CTA has one tile and one consumer warpgroup idles. Below M = 512 nothing was measured, so the
// cooperative kernel (which also serves the M <= 16 bf16-weight GEMVs) stays there.
constexpr int kPingPongMinM = 512;
GemmSchedule pick_schedule(int m) { return m >= kPingPongMinM ? GemmSchedule::kPingPong : GemmSchedule::kCooperative; }

// Ping-pong in CTA pairs sharing W (half the W bytes from L2 per tile): interleaved A/B under sustained load on the
// H100 (bench/kernels/ab.py, 2026-11-26; docs/kernels.md) with clusters off -> on: the QKV projection with the
// QK-norm/RoPE epilogue 0.530 -> 0.496 ms (4608 rows) and 0.483 -> 0.449 (4096), plain 4608x3072x9216 0.473 ->
// 0.444; but gelu went either way, every gate/residual shape lost 3-14% and 512 rows lost 3-7%.
constexpr int kPpClusterMinM = 4096;
int pick_pingpong_cluster(const GemmArgs& a) {
  const bool plain = a.epi.kind == Epilogue::kNone || a.epi.kind == Epilogue::kQkNormRope;
  return plain && a.m >= kPpClusterMinM ? 2 : 1;
}

// The ping-pong tile width: 192 or 128, whichever takes fewer rounds of tiles x tile cost, the split last round
// counted as the fraction of a round it is; the QK-norm/RoPE epilogue takes 128 (a head per tile). Interleaved A/B
// under sustained load (H100, 2026-11-26, bench/kernels/ab.py; results/2026-11-26-h100-47c5339-ab-pingpong-192.txt,
// …-cf25cac-ab-pingpong-tiles.txt), 128 -> 192 wide: 4608x3072x12288 + gelu 0.615 -> 0.564 ms, 4096x3072x12288 +
// gelu 0.548 -> 0.497, 4096x12288x3072 + gate 0.525 -> 0.508, 4608x15360x3072 + gate 0.744 -> 0.721, 4608x3072x9216
// 0.470 -> 0.447 (in pairs), 1024x12288x3072 + gate 0.161 -> 0.130 (1.45 rounds of 128-wide tiles against one of
// 192), 1024x3072x3072 + gate 0.052 -> 0.047; 192 lost where it leaves a round part-filled that 128 fills or splits:
// 512x12288x3072 + gate 0.086 -> 0.111 (96 tiles against 64 for 132 SMs), 1536x15360x3072 + gate 0.265 -> 0.276
// (128's split last round); gelu at 512 / 1024 / 1536 rows tied. Relative rate per output 1.1 for 192: between the
// 3% (gate) and 10% (gelu) gains at equal rounds, the value that orders all of these as measured.
// A GEMM's cost on the ping-pong kernel with tiles 128 x bn, in rounds x tile area (units of 128 x 128) / rate.
double pingpong_cost(const GemmArgs& a, int bn, double rate, int sms) {
  const int tiles = ((a.m + kBM - 1) / kBM) * ((a.n + bn - 1) / bn);
  const bool split = pingpong_split_plan(a, bn, sms, true).s.sk_tiles > 0;
  const double rounds = split ? static_cast<double>(tiles) / sms : static_cast<double>((tiles + sms - 1) / sms);
  return rounds * bn / kPpBN / rate;
}

int pick_pingpong_tile_n(const GemmArgs& a, int sms) {
  if (a.tile_n) return a.tile_n;
  if (a.epi.kind == Epilogue::kQkNormRope) return kPpBN;
  return pingpong_cost(a, 192, 1.1, sms) < pingpong_cost(a, kPpBN, 1.0, sms) ? 192 : kPpBN;
}

// The wide schedule where its rounds of 192 x 192 tiles cost less than the ping-pong tiles', its epilogue (not
// overlapped) counted as 6 more k-blocks, its rate per output that of the 128 x 192 ping-pong tiles. Interleaved A/B
// (H100, 2026-11-26, ab.py; results/2026-11-26-h100-d64ac2b-ab-wide.txt, …-491eac5-ab-wide-proj-out.txt), ping-pong
// as dispatched -> wide: the single-block proj_out 4608x15360x3072 + gate 0.731 / 0.751 -> 0.658 / 0.651 ms (4.4
// rounds of 128 x 192 tiles, 2.9 of 192 x 192), at 1536 rows (the 512² step) 0.270 -> 0.208 (torch's plain matmul
// 0.208); in the step, alternated on one card, bf16 compiled 135.4 -> 131.6 ms at 1024², 44.4 -> 42.3 at 512²;
// the model keeps the ping-pong kernel on the others, which wide lost: 4608x3072x12288 + gelu 0.530 -> 0.611,
// 4096x3072x12288 + gelu 0.492 -> 0.568, 4096x12288x3072 + gate 0.497 -> 0.536, 4096x3072x3072 + gate 0.152 ->
// 0.158, 1536x3072x12288 + gelu 0.189 -> 0.212, 512 rows 0.073 -> 0.096; 4608x3072x9216 tied (0.445 / 0.443).
constexpr int kWideMinM = 1536;
bool pick_wide(const GemmArgs& a, int sms) {
  if (a.tile_n || a.m < kWideMinM || a.epi.kind == Epilogue::kQkNormRope) return false;
  const int tiles = ((a.m + kWideBM - 1) / kWideBM) * ((a.n + kWideBN - 1) / kWideBN);
  const double rounds = static_cast<double>((tiles + sms - 1) / sms);
  const double k_blocks = (a.k + kBK - 1) / kBK;
  const double wide = rounds * (kWideBM * kWideBN) / (kBM * kPpBN) * (k_blocks + 6) / k_blocks / 1.1;
  return wide < std::min(pingpong_cost(a, 192, 1.1, sms), pingpong_cost(a, kPpBN, 1.0, sms));
}

GemmSchedule resolved_schedule(const GemmArgs& a, int sms) {
  if (a.schedule != GemmSchedule::kAuto) return a.schedule;
  if (a.c_f32 || a.a_parts != 1 || a.tile_n) return GemmSchedule::kCooperative;
  const GemmSchedule picked = pick_schedule(a.m);
  return picked == GemmSchedule::kPingPong && pick_wide(a, sms) ? GemmSchedule::kWide : picked;
}

}  // namespace
}  // namespace sm90

cudaError_t gemm_bf16_sm90(const GemmArgs& a, cudaStream_t stream) {
  using namespace sm90;
  if (a.m <= 0 || a.n <= 0 || a.k <= 0) return a.m == 0 || a.n == 0 ? cudaSuccess : cudaErrorInvalidValue;
  const cudaError_t valid = gemm_bf16_check(a);
  if (valid != cudaSuccess) return valid;
  if (!device_is_sm90()) return cudaErrorNotSupported;
  int sms = 0;
  cudaError_t e = device_sm_count(&sms);
  if (e != cudaSuccess) return e;
  if (a.c_f32 && a.tile_n && a.tile_n != 128) return cudaErrorInvalidValue;
  const GemmSchedule schedule = resolved_schedule(a, sms);
  if (schedule == GemmSchedule::kPingPong) {
    const int bn = pick_pingpong_tile_n(a, sms);
    const bool qk = a.epi.kind == Epilogue::kQkNormRope;
    if (a.c_f32 || a.a_parts != 1 || (bn != kPpBN && (bn != 192 || qk)) || a.cluster > 2) return cudaErrorInvalidValue;
    if (a.cluster == 2) return launch_pingpong_width<2>(a, bn, stream, sms);
    if (a.cluster == 1) return launch_pingpong_width<1>(a, bn, stream, sms);
    if (pick_pingpong_cluster(a) == 2) {
      // Pairs picked by measurement: where none fits on this device, independent CTAs do the same work.
      const cudaError_t paired = launch_pingpong_width<2>(a, bn, stream, sms);
      if (paired != cudaErrorNotSupported) return paired;
    }
    return launch_pingpong_width<1>(a, bn, stream, sms);
  }
  if (schedule == GemmSchedule::kWide) {
    if (a.c_f32 || a.a_parts != 1 || a.tile_n || a.cluster > 2 || a.epi.kind == Epilogue::kQkNormRope)
      return cudaErrorInvalidValue;
    if (a.cluster == 2) {
      const cudaError_t paired = launch_wide_epi<2>(a, stream, sms);
      if (paired != cudaErrorNotSupported) return paired;
    }
    return launch_wide_epi<1>(a, stream, sms);
  }
  if (schedule != GemmSchedule::kCooperative || a.a2) return cudaErrorInvalidValue;  // two-part A: ping-pong only
  const int tile_n = a.c_f32 ? 128 : a.tile_n ? a.tile_n : pick_tile_n(a.m, a.n, sms);
  switch (tile_n) {
    case 256: return launch_cluster<256>(a, stream, sms);
    case 192: return launch_cluster<192>(a, stream, sms);
    case 128: return launch_cluster<128>(a, stream, sms);
  }
  return cudaErrorInvalidValue;
}

size_t gemm_bf16_sm90_workspace_bytes(const GemmArgs& a) {
  using namespace sm90;
  if (a.m <= 0 || a.n <= 0 || a.k <= 0 || a.cluster > 1 || !device_is_sm90()) return 0;
  int sms = 0;
  if (device_sm_count(&sms) != cudaSuccess) return 0;
  if (resolved_schedule(a, sms) != GemmSchedule::kPingPong) return 0;
  if (a.cluster == 0 && pick_pingpong_cluster(a) == 2) return 0;
  return pingpong_split_plan(a, pick_pingpong_tile_n(a, sms), sms, true).bytes;
}

// The split (sm80/gemm_sm80.cu, a memory-bound pass) and one wgmma GEMM over K' = 3·K64 with a
// float32 store. Napkin math beside gemm_f32_bf16w_sm80: T5-XXL's wo at 512 tokens ≈ 0.22 ms.
cudaError_t gemm_f32_bf16w_sm90(const GemmF32Args& f, cudaStream_t stream) {
  if (f.m != 0 && f.n != 0 && !sm90::device_is_sm90()) return cudaErrorNotSupported;
  GemmArgs a;
  const cudaError_t e = split_f32_gemm_args(f, &a, stream);
  if (e != cudaSuccess) return e;
  return gemm_bf16_sm90(a, stream);
}

}  // namespace fluxk
