// NF4-weight x bf16-activation GEMM for Hopper, large M: C[M,N] = epilogue(A[M,K] · dequant(W)ᵀ).
//
// The product is computed transposed, Cᵀ = W · Aᵀ, so that the dequantized weight is the wgmma
// A operand, which may live in registers: consumers turn packed NF4 bytes straight into bf16
// fragments (never through shared memory, never as a bf16 copy in global memory), while the
// activations (the wgmma B operand) stream through TMA with 128-byte swizzle.
//
// CTA (persistent, 384 threads), tile = 128 weight rows x BT tokens, k-block 64:
//   warpgroup 0: warp 0 lane 0 issues TMA for the activation tile [BT x 64] and the packed weight
//                tile [128 rows x 32 bytes]; warps 1-3 compute the 128 per-row absmax values of the
//                k-block (plain or double quant) into shared memory. Both feed the stage's "full"
//                mbarrier (1 transaction arrival + 96 thread arrivals).
//   warpgroups 1-2: each owns 64 weight rows. Per k-block a thread reads its two rows' packed bytes
//                (2 x 32 B) and scales, builds the 16 bf16x2 A fragments of the next k-block while
//                the 4 wgmma.m64nBTk16 of the current one run (fragments double-buffered), then
//                releases the stage. The epilogue transposes through padded shared memory so the
//                global stores are 16-byte rows of C.
// With CL = 2, clusters of two CTAs take adjacent weight blocks of the same token block: each
// loads its own packed weight tile and half of the activation tile, multicast to both.
// With CL = 1 and a workspace, the last round's tiles are split along K (split_k.cuh). Activations in two parts along
// K (Nf4GemmArgs::a2: the single blocks' proj_out over [attention | MLP]) come from two tensor maps, k-block by k-block.
#include "cluster_launch.h"
#include "epilogue.cuh"
#include "hopper.cuh"
#include "kernels.h"
#include "nf4.cuh"
#include "split_k.cuh"
#include "tensor_map.h"

namespace fluxk {
namespace sm90 {
namespace {

constexpr int kRows = 128;  // weight rows per tile (2 consumer warpgroups x 64)
constexpr int kBK = 64;
constexpr int kThreads = 384;
constexpr int kGroupM = 8;
constexpr int kStagePitch = 144;  // bytes per token row of the epilogue staging (64 bf16 + 16 pad)

template <int BT>
struct Nf4Config {
  static constexpr int kStages = BT == 256 ? 4 : (BT == 192 ? 5 : 6);
  static constexpr int kXBytes = BT * kBK * 2;
  static constexpr int kWBytes = kRows * kBK / 2;
  static constexpr int kScaleBytes = kRows * 4;
  static constexpr int kStagingBytes = 2 * BT * kStagePitch;
  static constexpr int kLutBytes = 16 * 32 * 4;
  static constexpr int kSmemBytes =
      kLutBytes + kStages * (kXBytes + kWBytes + kScaleBytes) + kStagingBytes + 2 * kStages * 8 + 2048;
  static_assert(kSmemBytes <= 232448, "shared memory budget");
  static_assert(kXBytes % 1024 == 0, "swizzle atoms need 1024-byte alignment");
};

// One product of a launch. A pair launch (gemm_nf4_sm90_pair) runs two of the same K as one list of units, so that
// their tiles share the rounds: Flux's image and text streams through their own weights (same N and epilogue), or a
// single block's QKV projection and MLP up of the same x (N 9216 and 12288, epilogues QK-norm/RoPE and GELU).
struct Nf4Problem {
  __nv_bfloat16* c;
  int64_t ldc;
  int m, n, tiles_m, tiles_n;
  int units_n;  // a unit is CL adjacent weight blocks, one per CTA of a cluster
  Nf4Weight w;
  EpilogueArgs epi;
};

struct Nf4Params {
  Nf4Problem prob[2];      // prob[1]: a pair launch's second product
  int k, k_blocks;
  int x_split_blocks;      // k-blocks from the first part of the activations (k_blocks if one)
  int num_units;
  int units0;              // units [0, units0) are prob[0]'s tiles, the rest prob[1]'s
  SplitSchedule split;
  float4* partials;   // slot c + j: CTA c's piece of split tile j, [2 consumer halves][BT / 8][128 threads]
  uint32_t* arrived;  // [sk_tiles][2]: later pieces of split tile j whose half is in its slot
};

__host__ __device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int& tm, int& tn) {
  const int per_group = kGroupM * tiles_n;
  const int group = t / per_group;
  const int first_m = group * kGroupM;
  const int group_m = tiles_m - first_m < kGroupM ? tiles_m - first_m : kGroupM;
  const int r = t - group * per_group;
  tm = first_m + r % group_m;
  tn = r / group_m;
}

#if FLUXK_SM90_DEVICE
// Which product unit `unit` belongs to (always the first unless PAIR) and its tile there.
template <bool PAIR>
__device__ __forceinline__ int unit_tile(const Nf4Params& p, int unit, int& tm, int& tu) {
  const int second = PAIR && unit >= p.units0;
  tile_coords(second ? unit - p.units0 : unit, p.prob[second].tiles_m, p.prob[second].units_n, tm, tu);
  return second;
}

// The lane-replicated code book sits at a 2048-byte aligned shared address: entry i of lane l at byte 128·i + 4·l,
// so a code's address is (code << 7) | lane_addr. A rotation brings either nibble of the thread's byte of a packed
// word to bits 7-10 (rotr by 8c - 3 for the high nibble, 8c - 7 for the low one, mod 32), and one LOP3 masks it
// and ORs the lane's column in: 2 instructions per lookup address. The consumers' dequantization is what the tensor
// cores wait for: ncu, H100, 2026-11-26, byte shifts, nibble masks and index multiplies made it 231 instructions per
// k-block and warp with the tensor pipe 62% busy; 163 with these addresses, 68% busy
// (bench/kernels/results/2026-11-26-h100-{b4f0872,36cc9f4}-ncu-nf4.txt).
struct LutLane {
  uint32_t addr;        // shared address of this lane's column (bits 7-10 clear)
  uint32_t rot_hi, rot_lo;
};

__device__ __forceinline__ float lut_code(uint32_t word, uint32_t rot, uint32_t lane_addr) {
  const uint32_t addr = (__funnelshift_r(word, word, rot) & 0x780u) | lane_addr;
  float v;
  asm("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
  return v;
}

// The thread's byte of `word` (two codes, the first in the high nibble) times s, as a bf16x2 with the first value
// in the low half: nf4_pair's values.
__device__ __forceinline__ uint32_t nf4_pair_of_word(uint32_t word, float s, const LutLane& l) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lut_code(word, l.rot_hi, l.addr) * s, lut_code(word, l.rot_lo, l.addr) * s);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Builds the A fragments of one k-block for this thread's rows g and g+8 (of its warp's 16):
// fragment (kk, i) covers k = 16kk .. 16kk+15; registers 4kk+0/1 hold k pair (2c, 2c+1) of rows
// g / g+8, registers 4kk+2/3 the pair (2c+8, 2c+9). Pair (2c, 2c+1) of k16 slice kk is byte
// 8kk + c of the row's 32 packed bytes, i.e. byte c of 32-bit word 2kk; pair (2c+8, 2c+9) is byte
// c of word 2kk+1.
__device__ __forceinline__ void build_fragments(uint32_t (&f)[16], const uint8_t* w_stage, const float* scale_stage,
                                                int row0, const LutLane& lut) {
  const uint4 r0a = *reinterpret_cast<const uint4*>(w_stage + row0 * 32);
  const uint4 r0b = *reinterpret_cast<const uint4*>(w_stage + row0 * 32 + 16);
  const uint4 r1a = *reinterpret_cast<const uint4*>(w_stage + (row0 + 8) * 32);
  const uint4 r1b = *reinterpret_cast<const uint4*>(w_stage + (row0 + 8) * 32 + 16);
  const float s0 = scale_stage[row0];
  const float s1 = scale_stage[row0 + 8];
  const uint32_t w0[8] = {r0a.x, r0a.y, r0a.z, r0a.w, r0b.x, r0b.y, r0b.z, r0b.w};
  const uint32_t w1[8] = {r1a.x, r1a.y, r1a.z, r1a.w, r1b.x, r1b.y, r1b.z, r1b.w};
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    f[4 * kk + 0] = nf4_pair_of_word(w0[2 * kk], s0, lut);
    f[4 * kk + 1] = nf4_pair_of_word(w1[2 * kk], s1, lut);
    f[4 * kk + 2] = nf4_pair_of_word(w0[2 * kk + 1], s0, lut);
    f[4 * kk + 3] = nf4_pair_of_word(w1[2 * kk + 1], s1, lut);
  }
}
#endif

constexpr int kQkEpi = static_cast<int>(Epilogue::kQkNormRope);
template <int E>
struct EpiKind {
  static constexpr int value = E;
};
constexpr int kQkBarrier = 3;  // both consumer warpgroups (1 + cw are each one's own)

#if FLUXK_SM90_DEVICE
// kQkNormRope on a tile: its 128 weight rows are one head's dims of q, k or v (tn = part · heads + head), staged by
// the two consumer warpgroups as [token][64 dims] halves. 16 lanes per token, lane `sub` owning dims 8·sub .. +7:
// joint_qkv's own row layout for bf16 at D = 128 (16 lanes, 8 values each), so sums and results are bitwise its.
// Tokens go in batches of 2 per lane (4 spill at BT = 256) whose table rows are read-only loads issued before the
// batch's first store: the compiler keeps plain loads behind stores it cannot prove disjoint, one L2 round trip per
// token. ct: the thread's index among the 256 consumer threads.
template <int BT>
__device__ __forceinline__ void nf4_qk_norm_rope(const EpilogueArgs& e, const uint8_t* staging, int tm, int tn, int m,
                                                 int ct) {
  constexpr int kBatch = 2;
  static_assert(BT % (16 * kBatch) == 0, "whole batches of tokens");
  const int part = tn / e.heads;
  const int head = tn - part * e.heads;
  __nv_bfloat16* out = part == 0 ? e.q : part == 1 ? e.k : e.v;
  const int sub = ct % 16;
  const uint8_t* src = staging + (sub / 8) * BT * kStagePitch + (sub % 8) * 16;
  const uint4 w_raw = part < 2 ? *reinterpret_cast<const uint4*>((part == 0 ? e.norm_q : e.norm_k) + 8 * sub)
                               : make_uint4(0u, 0u, 0u, 0u);
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w_raw);
  for (int first = ct / 16; first < BT; first += 16 * kBatch) {
    uint4 raw[kBatch];
    uint4* dst[kBatch];
    bool valid[kBatch];
    float4 cs[kBatch][2], sn[kBatch][2];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int tok = first + 16 * u;
      const int row = tm * BT + tok;
      valid[u] = row < m;
      raw[u] = *reinterpret_cast<const uint4*>(src + tok * kStagePitch);
      const int l = valid[u] ? row % e.tokens : 0;
      const int64_t joint_row = static_cast<int64_t>(row / e.tokens) * e.joint_tokens + e.joint_offset + l;
      dst[u] = reinterpret_cast<uint4*>(out + (joint_row * e.heads + head) * 128 + 8 * sub);
      if (part < 2) {
        const float4* c = reinterpret_cast<const float4*>(e.rope_cos + static_cast<int64_t>(l) * 128 + 8 * sub);
        const float4* sv = reinterpret_cast<const float4*>(e.rope_sin + static_cast<int64_t>(l) * 128 + 8 * sub);
        cs[u][0] = __ldg(c);
        cs[u][1] = __ldg(c + 1);
        sn[u][0] = __ldg(sv);
        sn[u][1] = __ldg(sv + 1);
      }
    }
    if (part == 2) {
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (valid[u]) *dst[u] = raw[u];
      continue;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&raw[u]);
      float x[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        x[2 * i] = __low2float(x2[i]);
        x[2 * i + 1] = __high2float(x2[i]);
      }
      float sq = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) sq = qk_square_add(sq, x[i]);
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) sq = __fadd_rn(sq, __shfl_xor_sync(0xffffffffu, sq, o));
      const float rstd = qk_rstd(sq, 128.f, e.eps);
      const float cf[8] = {cs[u][0].x, cs[u][0].y, cs[u][0].z, cs[u][0].w, cs[u][1].x, cs[u][1].y, cs[u][1].z, cs[u][1].w};
      const float sf[8] = {sn[u][0].x, sn[u][0].y, sn[u][0].z, sn[u][0].w, sn[u][1].x, sn[u][1].y, sn[u][1].z, sn[u][1].w};
      uint32_t y[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float y0, y1;
        qk_norm_rope_pair(x[2 * i], x[2 * i + 1], rstd, __low2float(w2[i]), __high2float(w2[i]), cf[2 * i],
                          cf[2 * i + 1], sf[2 * i], sf[2 * i + 1], y0, y1);
        y[i] = pack_bf16x2(y0, y1);
      }
      if (valid[u]) *dst[u] = make_uint4(y[0], y[1], y[2], y[3]);
    }
  }
}
#endif

// PAIR: units from units0 on are prob[1]'s, whose activations and weights come through tma_x2 and tma_w2 (a pair
// has no activations in two parts) and whose epilogue is EPI2.
template <int BT, int EPI, int CL, bool PAIR, int EPI2 = EPI>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_nf4_kernel(const __grid_constant__ CUtensorMap tma_x, const __grid_constant__ CUtensorMap tma_x2,
                    const __grid_constant__ CUtensorMap tma_w, const __grid_constant__ CUtensorMap tma_w2,
                    const __grid_constant__ Nf4Params p) {
#if FLUXK_SM90_DEVICE
  using Cfg = Nf4Config<BT>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((2048 - (smem_addr(smem_raw) & 2047)) & 2047);
  float* s_lut = reinterpret_cast<float*>(smem);  // 2048-byte aligned (LutLane), then 1024-aligned swizzle atoms
  uint8_t* s_x = smem + Cfg::kLutBytes;
  uint8_t* s_w = s_x + Cfg::kStages * Cfg::kXBytes;
  float* s_scale = reinterpret_cast<float*>(s_w + Cfg::kStages * Cfg::kWBytes);
  uint8_t* s_stage_out = reinterpret_cast<uint8_t*>(s_scale + Cfg::kStages * kRows);
  uint64_t* full = reinterpret_cast<uint64_t*>(s_stage_out + Cfg::kStagingBytes);
  uint64_t* empty = full + Cfg::kStages;

  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32;
  const int lane = tid % 32;

  fill_lane_lut(s_lut, threadIdx.x, kThreads);
  init_ring_barriers<Cfg::kStages, CL>(full, empty, 1 + 96, 8 * CL);
  const uint32_t rank = CL > 1 ? cluster_ctarank() : 0;
  const int cluster_id = blockIdx.x / CL;
  const int num_clusters = gridDim.x / CL;

  const int k_blocks_row = p.k / kBK;  // absmax blocks per weight row

  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (warp == 0) {
      if (lane == 0) {
        prefetch_tensor_map(&tma_x);
        if (PAIR || p.x_split_blocks < p.k_blocks) prefetch_tensor_map(&tma_x2);
        prefetch_tensor_map(&tma_w);
        if (PAIR) prefetch_tensor_map(&tma_w2);
        int stage = 0;
        uint32_t phase = 0;
        const int pieces = pieces_of(p.split, cluster_id, num_clusters);
        for (int i = 0; i < pieces; ++i) {
          const Piece w = piece_of(p.split, cluster_id, num_clusters, i);
          int tm, tu;
          const int product = unit_tile<PAIR>(p, w.unit, tm, tu);
          const int tn = tu * CL + rank;
          const CUtensorMap* w_map = product ? &tma_w2 : &tma_w;
          for (int kb = w.kb0; kb < w.kb1; ++kb) {
            mbar_wait(&empty[stage], phase ^ 1);
            mbar_arrive_expect_tx(&full[stage], Cfg::kXBytes + Cfg::kWBytes);
            const bool second = kb >= p.x_split_blocks;
            const CUtensorMap* map = (product || second) ? &tma_x2 : &tma_x;
            const int x_col = (second ? kb - p.x_split_blocks : kb) * kBK;
            if (CL == 1) {
              tma_load_2d(s_x + stage * Cfg::kXBytes, map, &full[stage], x_col, tm * BT);
            } else {
              tma_load_2d_multicast(s_x + stage * Cfg::kXBytes + rank * (BT / 2) * 128, map, &full[stage], x_col,
                                    tm * BT + rank * (BT / 2), static_cast<uint16_t>(0x3));
            }
            tma_load_2d(s_w + stage * Cfg::kWBytes, w_map, &full[stage], kb * (kBK / 2), tn * kRows);
            next_stage<Cfg::kStages>(stage, phase);
          }
        }
      }
    } else {
      // Warps 1-3: the k-block's absmax of each of the tile's 128 rows.
      const int st = tid - 32;
      int stage = 0;
      uint32_t phase = 0;
      const int pieces = pieces_of(p.split, cluster_id, num_clusters);
      for (int i = 0; i < pieces; ++i) {
        const Piece w = piece_of(p.split, cluster_id, num_clusters, i);
        int tm, tu;
        const Nf4Problem& pr = p.prob[unit_tile<PAIR>(p, w.unit, tm, tu)];
        const int tn = tu * CL + rank;
        for (int kb = w.kb0; kb < w.kb1; ++kb) {
          const int n0 = tn * kRows + st;
          const int n1 = n0 + 96;
          const float v0 = n0 < pr.n ? nf4_absmax(pr.w, static_cast<int64_t>(n0) * k_blocks_row + kb) : 0.f;
          const float v1 =
              (st < 32 && n1 < pr.n) ? nf4_absmax(pr.w, static_cast<int64_t>(n1) * k_blocks_row + kb) : 0.f;
          mbar_wait(&empty[stage], phase ^ 1);
          s_scale[stage * kRows + st] = v0;
          if (st < 32) s_scale[stage * kRows + st + 96] = v1;
          mbar_arrive(&full[stage]);
          next_stage<Cfg::kStages>(stage, phase);
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int cw = wg - 1;
    const int g = lane / 4;
    const int c = lane % 4;
    const int row0 = cw * 64 + warp * 16 + g;  // this thread's first weight row in the tile
    const LutLane lut{smem_addr(s_lut) + 4u * lane, static_cast<uint32_t>(8 * c - 3) & 31u,
                      static_cast<uint32_t>(8 * c - 7) & 31u};
    uint8_t* staging = s_stage_out + cw * BT * kStagePitch;
    int stage = 0;
    uint32_t phase = 0;
    float acc[BT / 2];
    uint32_t fa[16], fb[16];

    auto issue = [&](const uint32_t(&f)[16], int st) {
      const uint32_t x_base = smem_addr(s_x + st * Cfg::kXBytes);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) WgmmaRS<BT, 0>::run(acc, &f[4 * kk], make_smem_desc(x_base + kk * 32, 16, 1024), 1);
      wgmma_commit();
    };

    auto release = [&](int s) {
      if (lane == 0) {
        mbar_arrive(&empty[s]);
        if (CL > 1) mbar_arrive_cluster(&empty[s], rank ^ 1);
      }
    };
    const int pieces = pieces_of(p.split, cluster_id, num_clusters);
    for (int i = 0; i < pieces; ++i) {
      const Piece w = piece_of(p.split, cluster_id, num_clusters, i);
      int tm, tu;
      const int product = unit_tile<PAIR>(p, w.unit, tm, tu);
      const Nf4Problem& pr = p.prob[product];
      const int tn = tu * CL + rank;
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) acc[i] = 0.f;
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) reg_fence(acc[i]);

      // Two k-blocks' wgmma groups in flight: a k-block's group is queued behind the previous one before that one is
      // waited for, so the tensor cores never drain between k-blocks (both warpgroups reaching wait_group 0 at the same
      // time left them idle for the wake-up and the next issue). A fragment buffer is rebuilt once its group retired.
      mbar_wait(&full[stage], phase);
      build_fragments(fa, s_w + stage * Cfg::kWBytes, s_scale + stage * kRows, row0, lut);
      issue(fa, stage);
      int pending = stage;  // the stage the older queued group reads
      next_stage<Cfg::kStages>(stage, phase);
      int kb = w.kb0 + 1;
      auto step = [&](uint32_t(&next)[16], uint32_t(&older)[16]) {
        mbar_wait(&full[stage], phase);
        build_fragments(next, s_w + stage * Cfg::kWBytes, s_scale + stage * kRows, row0, lut);
        issue(next, stage);
        wgmma_wait<1>();
#pragma unroll
        for (int i = 0; i < 16; ++i) reg_fence(older[i]);
        release(pending);
        pending = stage;
        next_stage<Cfg::kStages>(stage, phase);
        return ++kb < w.kb1;
      };
      while (kb < w.kb1 && step(fb, fa) && step(fa, fb)) {
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        reg_fence(fa[i]);
        reg_fence(fb[i]);
      }
      release(pending);
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) reg_fence(acc[i]);

      if (w.role != kWholeTile) {
        // Slot layout: each thread's accumulators as float4s, 128 threads side by side (512-byte rows per warpgroup).
        constexpr int kQuads = BT / 8;
        if (w.role == kLaterPiece) {
          float4* slot = p.partials + (static_cast<int64_t>(cluster_id + w.split_tile) * 2 + cw) * kQuads * 128 + tid;
#pragma unroll
          for (int q = 0; q < kQuads; ++q)
            __stcg(slot + q * 128, make_float4(acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]));
          named_barrier_sync(1 + cw, 128);
          if (tid == 0) red_release_add(&p.arrived[2 * w.split_tile + cw], 1u);
          continue;
        }
        const int later = later_pieces(p.split, cluster_id, w.split_tile);
        if (tid == 0) wait_count(&p.arrived[2 * w.split_tile + cw], static_cast<uint32_t>(later));
        named_barrier_sync(1 + cw, 128);
#pragma unroll 1
        for (int d = 1; d <= later; ++d) {
          const float4* slot =
              p.partials + (static_cast<int64_t>(cluster_id + d + w.split_tile) * 2 + cw) * kQuads * 128 + tid;
#pragma unroll
          for (int q = 0; q < kQuads; ++q) {
            const float4 v = __ldcg(slot + q * 128);
            acc[4 * q] += v.x;
            acc[4 * q + 1] += v.y;
            acc[4 * q + 2] += v.z;
            acc[4 * q + 3] += v.w;
          }
        }
      }

      // The tile's epilogue: the product's kind, EPI, or a pair's second product's EPI2.
      const auto finish = [&](auto kind) {
        constexpr int E = decltype(kind)::value;
        // acc[4j + h]: weight row (row0 - cw*64) + 8*(h/2) of this warpgroup's 64, token 8j + 2c + h%2.
        // Stage as [token][64 weight rows] bf16 (pitch 144 B: conflict-free 2-byte writes, aligned
        // 16-byte reads), then write 16-byte pieces of C rows.
        const int local0 = warp * 16 + g;
        const int n_first = tn * kRows + cw * 64;
        const float b0 =
            (pr.epi.bias && n_first + local0 < pr.n) ? __bfloat162float(pr.epi.bias[n_first + local0]) : 0.f;
        const float b1 =
            (pr.epi.bias && n_first + local0 + 8 < pr.n) ? __bfloat162float(pr.epi.bias[n_first + local0 + 8]) : 0.f;
        __nv_bfloat16* stg = reinterpret_cast<__nv_bfloat16*>(staging);
#pragma unroll
        for (int j = 0; j < BT / 8; ++j) {
          const int tok = 8 * j + 2 * c;
          stg[tok * (kStagePitch / 2) + local0] = __float2bfloat16_rn(epilogue_pointwise<E>(acc[4 * j + 0], b0));
          stg[(tok + 1) * (kStagePitch / 2) + local0] =
              __float2bfloat16_rn(epilogue_pointwise<E>(acc[4 * j + 1], b0));
          stg[tok * (kStagePitch / 2) + local0 + 8] =
              __float2bfloat16_rn(epilogue_pointwise<E>(acc[4 * j + 2], b1));
          stg[(tok + 1) * (kStagePitch / 2) + local0 + 8] =
              __float2bfloat16_rn(epilogue_pointwise<E>(acc[4 * j + 3], b1));
        }
        if constexpr (E == kQkEpi) {
          named_barrier_sync(kQkBarrier, 256);
          nf4_qk_norm_rope<BT>(pr.epi, s_stage_out, tm, tn, pr.m, cw * 128 + tid);
          named_barrier_sync(kQkBarrier, 256);
          return;
        }
        named_barrier_sync(1 + cw, 128);
        for (int idx = tid; idx < BT * 8; idx += 128) {
          const int tok = idx >> 3;
          const int ch = idx & 7;
          const int row = tm * BT + tok;
          const int col = n_first + ch * 8;
          if (row < pr.m && col < pr.n) {
            uint4 v = *reinterpret_cast<const uint4*>(staging + tok * kStagePitch + ch * 16);
            if (E == static_cast<int>(Epilogue::kGateResidual)) {
              const uint4 r =
                  *reinterpret_cast<const uint4*>(pr.epi.residual + static_cast<int64_t>(row) * pr.epi.ldr + col);
              const uint4 gt = *reinterpret_cast<const uint4*>(
                  pr.epi.gate + static_cast<int64_t>(row / pr.epi.gate_rows_per_batch) * pr.epi.ldg + col);
              const __nv_bfloat162* vv = reinterpret_cast<const __nv_bfloat162*>(&v);
              const __nv_bfloat162* rr = reinterpret_cast<const __nv_bfloat162*>(&r);
              const __nv_bfloat162* gg = reinterpret_cast<const __nv_bfloat162*>(&gt);
              uint32_t out[4];
#pragma unroll
              for (int q = 0; q < 4; ++q) {
                out[q] = pack_bf16x2(__low2float(rr[q]) + __low2float(gg[q]) * __low2float(vv[q]),
                                     __high2float(rr[q]) + __high2float(gg[q]) * __high2float(vv[q]));
              }
              v = make_uint4(out[0], out[1], out[2], out[3]);
            }
            *reinterpret_cast<uint4*>(pr.c + static_cast<int64_t>(row) * pr.ldc + col) = v;
          }
        }
        named_barrier_sync(1 + cw, 128);
      };
      if constexpr (EPI2 == EPI) {
        finish(EpiKind<EPI>{});
      } else if (product) {
        finish(EpiKind<EPI2>{});
      } else {
        finish(EpiKind<EPI>{});
      }
    }
  }
  if (CL > 1) {
    __syncwarp();
    cluster_sync();  // no CTA leaves while its peer may still multicast into it or arrive on it
  }
#endif
}

// The split plan of a launch of tiles_m token tiles of bt (a pair's two products counted together) by n x k
// (independent CTAs), for last rounds at most half busy
// (H100, 2026-11-26, adjacent bench.py rows, whole -> split: 512x12288x3072, 60 of 132 SMs busy, 0.092 -> 0.080 ms;
// 1536x12288x3072, 48 busy, 0.228 -> 0.216; 4608x12288x3072, 12 busy, 0.681 -> 0.632; 4096x9216x3072, 96 busy, no
// gain: 0.395 -> 0.420, within the pairs' noise; docs/kernels.md).
SplitPlan nf4_split_plan(int tiles_m, int tiles_n, int k, int bt, int sms, bool allowed) {
  // With no whole round, pieces of fewer than 32 k-blocks on average lost to whole narrower tiles: H100, ab.py,
  // 512x3072x3072 + gate, 48 tiles of 256 tokens split 0.0418 ms, 96 whole tiles of 128 0.0359, where 70-block pieces
  // (512x12288x3072 + gate) won (bench/kernels/results/2026-11-26-h100-1ff51ea-nf4-token-tiles.txt).
  if (tiles_m * tiles_n < sms && static_cast<int64_t>(tiles_m) * tiles_n * (k / kBK) < 32LL * sms) allowed = false;
  // A pair's units are walked as one product's here: the L2 footprint of its split tiles (the second product's last
  // ones) is an estimate there.
  const auto coords = [&](int u, int* r, int* c) { tile_coords(u, tiles_m, tiles_n, *r, *c); };
  const auto footprint = [&](int first, int count) {
    int rows = 0, cols = 0;
    distinct_blocks(first, count, tiles_m, tiles_n, coords, &rows, &cols);
    // token blocks of bf16 activations, weight blocks of packed codes and float32 absmax
    return static_cast<size_t>(rows) * bt * k * 2 + static_cast<size_t>(cols) * kRows * (k / 2 + k / 64 * 4);
  };
  return plan_split(tiles_m * tiles_n, k / kBK, sms, static_cast<size_t>(kRows) * bt * sizeof(float), 2, allowed,
                    sms / 2, device_l2_bytes(), footprint);
}

int tiles_of(int m, int bt) { return (m + bt - 1) / bt; }

// The workspace a split at this token tile needs is there (gemm_nf4_sm90_workspace_bytes sized it).
bool split_fits(const Nf4GemmArgs& a, int tiles_m, int tiles_n, int bt, int sms) {
  if (!a.workspace || !aligned16(a.workspace) || (a.cluster && a.cluster != 1)) return false;
  const SplitPlan plan = nf4_split_plan(tiles_m, tiles_n, a.w.k, bt, sms, true);
  return plan.s.sk_tiles > 0 && a.workspace_bytes >= plan.bytes;
}

cudaError_t encode_weight_map(CUtensorMap* map, const Nf4Weight& w) {
  const uint64_t dims[2] = {static_cast<uint64_t>(w.k / 2), static_cast<uint64_t>(w.n)};
  const uint64_t strides[1] = {static_cast<uint64_t>(w.k / 2)};
  const uint32_t box[2] = {kBK / 2, kRows};
  return encode_tensor_map(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, w.packed, dims, strides, box,
                           CU_TENSOR_MAP_SWIZZLE_NONE);
}

Nf4Problem problem_of(const Nf4GemmArgs& a, int bt, int cl) {
  const int tiles_n = (a.w.n + kRows - 1) / kRows;
  return {a.c, a.ldc, a.m, a.w.n, tiles_of(a.m, bt), tiles_n, (tiles_n + cl - 1) / cl, a.w, a.epi};
}

// The tile counts a launch's split plan is made for: one product's, or a pair's together (same N: token tiles added;
// same M: weight tiles added; pair_valid admits no other pair).
void launch_tiles(const Nf4GemmArgs& a, const Nf4GemmArgs* b, int bt, int* tiles_m, int* tiles_n) {
  *tiles_m = tiles_of(a.m, bt);
  *tiles_n = (a.w.n + kRows - 1) / kRows;
  if (!b) return;
  if (b->w.n == a.w.n) *tiles_m += tiles_of(b->m, bt);
  else *tiles_n += (b->w.n + kRows - 1) / kRows;
}

// One product (b null), or the pair a, b (PAIR: CL 1, pair_valid, b's epilogue kind EPI2); the split workspace is a's.
template <int BT, int EPI, int CL, bool PAIR, int EPI2 = EPI>
cudaError_t launch(const Nf4GemmArgs& a, const Nf4GemmArgs* b, cudaStream_t stream, int sms) {
  using Cfg = Nf4Config<BT>;
  CUtensorMap tma_x, tma_x2, tma_w, tma_w2;
  cudaError_t e = encode_bf16_2d_sw128(&tma_x, a.a, a.m, a.a2 ? a.k_split : a.w.k, a.lda, BT / CL);
  if (e != cudaSuccess) return e;
  tma_x2 = tma_x;
  if (a.a2) {
    e = encode_bf16_2d_sw128(&tma_x2, a.a2, a.m, a.w.k - a.k_split, a.lda2, BT / CL);
    if (e != cudaSuccess) return e;
  }
  if (PAIR) {
    e = encode_bf16_2d_sw128(&tma_x2, b->a, b->m, b->w.k, b->lda, BT);
    if (e != cudaSuccess) return e;
  }
  e = encode_weight_map(&tma_w, a.w);
  if (e != cudaSuccess) return e;
  tma_w2 = tma_w;
  if (PAIR) {
    e = encode_weight_map(&tma_w2, b->w);
    if (e != cudaSuccess) return e;
  }
  Nf4Params p;
  p.prob[0] = problem_of(a, BT, CL);
  p.prob[1] = PAIR ? problem_of(*b, BT, CL) : p.prob[0];
  p.k = a.w.k;
  p.k_blocks = a.w.k / kBK;
  p.x_split_blocks = a.a2 ? a.k_split / kBK : p.k_blocks;
  p.units0 = p.prob[0].tiles_m * p.prob[0].units_n;
  p.num_units = p.units0 + (PAIR ? p.prob[1].tiles_m * p.prob[1].units_n : 0);
  int tiles_m = 0, tiles_n = 0;
  launch_tiles(a, PAIR ? b : nullptr, BT, &tiles_m, &tiles_n);
  SplitPlan plan =
      nf4_split_plan(tiles_m, tiles_n, a.w.k, BT, sms, CL == 1 && split_fits(a, tiles_m, tiles_n, BT, sms));
  if (CL > 1) plan.s.dp_units = p.num_units;
  p.split = plan.s;
  p.arrived = plan.s.sk_tiles ? static_cast<uint32_t*>(a.workspace) : nullptr;
  p.partials =
      plan.s.sk_tiles ? reinterpret_cast<float4*>(static_cast<uint8_t*>(a.workspace) + plan.counter_bytes) : nullptr;
  auto kernel = gemm_nf4_kernel<BT, EPI, CL, PAIR, EPI2>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  if (CL == 1) {
    if (plan.s.sk_tiles) {
      e = cudaMemsetAsync(p.arrived, 0, plan.counter_bytes, stream);
      if (e != cudaSuccess) return e;
    }
    kernel<<<plan.grid, kThreads, Cfg::kSmemBytes, stream>>>(tma_x, tma_x2, tma_w, tma_w2, p);
    return cudaGetLastError();
  }
  static int max_clusters = 0;
  return launch_clusters(kernel, kThreads, CL, p.num_units, Cfg::kSmemBytes, sms, &max_clusters, stream, tma_x, tma_x2,
                         tma_w, tma_w2, p);
}

template <int BT, int CL, bool PAIR>
cudaError_t launch_epi(const Nf4GemmArgs& a, const Nf4GemmArgs* b, cudaStream_t stream, int sms) {
  switch (a.epi.kind) {
    case Epilogue::kNone: return launch<BT, 0, CL, PAIR>(a, b, stream, sms);
    case Epilogue::kGeluTanh: return launch<BT, 1, CL, PAIR>(a, b, stream, sms);
    case Epilogue::kGateResidual: return launch<BT, 2, CL, PAIR>(a, b, stream, sms);
    case Epilogue::kQkNormRope:
      if constexpr (CL == 1) return launch<BT, kQkEpi, 1, PAIR>(a, b, stream, sms);
      break;
  }
  return cudaErrorInvalidValue;
}

template <int BT>
cudaError_t launch_cluster(const Nf4GemmArgs& a, cudaStream_t stream, int sms) {
  // Clusters are opt-in: measured 1.6-1.8x slower than independent CTAs (H200, 2026-11-25).
  const int cl = a.cluster ? a.cluster : 1;
  if (cl == 1) return launch_epi<BT, 1, false>(a, nullptr, stream, sms);
  if (cl == 2) return launch_epi<BT, 2, false>(a, nullptr, stream, sms);
  return cudaErrorInvalidValue;
}

// Token-tile rates relative to 256 from the H200 sweep of 2026-11-25 (M=4608, K=3072, N=12288:
// 516 / 458 / 354 TFLOP/s): a wider tile re-dequantizes each weight value fewer times.
int pick_tile_m(int m, int n, int k, int sms, bool split) {
  const int widths[3] = {256, 192, 128};
  const double rate[3] = {1.0, 0.88, 0.68};
  int best = 256;
  double best_cost = 1e30;
  for (int i = 0; i < 3; ++i) {
    const int tiles_m = tiles_of(m, widths[i]);
    const int tiles_n = (n + kRows - 1) / kRows;
    const double rounds =
        split_rounds(nf4_split_plan(tiles_m, tiles_n, k, widths[i], sms, split), tiles_m * tiles_n, sms);
    const double cost = rounds * widths[i] / rate[i];
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = widths[i];
    }
  }
  return best;
}

int token_tile(const Nf4GemmArgs& a, int sms) {
  if (a.tile_m) return a.tile_m;
  const int split = pick_tile_m(a.m, a.w.n, a.w.k, sms, true);
  const int tiles_n = (a.w.n + kRows - 1) / kRows;
  if (split_fits(a, tiles_of(a.m, split), tiles_n, split, sms)) return split;
  return pick_tile_m(a.m, a.w.n, a.w.k, sms, false);
}

// A pair runs in tiles of 256 tokens, which every product of Flux's double blocks takes alone (512 to 4096 rows).
constexpr int kPairTile = 256;

// The pairs a launch takes: the same N (image and text streams: any same epilogue) or the same M (a single block's QKV
// and MLP up: QK-norm/RoPE then GELU).
bool pair_valid(const Nf4GemmArgs& a, const Nf4GemmArgs& b) {
  const bool streams = a.w.n == b.w.n && a.epi.kind == b.epi.kind;
  const bool qkv_mlp =
      a.m == b.m && a.epi.kind == Epilogue::kQkNormRope && b.epi.kind == Epilogue::kGeluTanh;
  return nf4_args_valid(a) && nf4_args_valid(b) && a.m > 0 && b.m > 0 && (streams || qkv_mlp) && a.w.k == b.w.k &&
         a.w.k % 32 == 0 && !a.a2 && !b.a2 && (!a.cluster || a.cluster == 1) && (!b.cluster || b.cluster == 1) &&
         (!a.tile_m || a.tile_m == kPairTile) && aligned16(a.w.packed) && aligned16(b.w.packed);
}

}  // namespace
}  // namespace sm90

cudaError_t gemm_nf4_sm90(const Nf4GemmArgs& a, cudaStream_t stream) {
  using namespace sm90;
  if (a.m == 0 || a.w.n == 0) return cudaSuccess;
  if (!nf4_args_valid(a)) return cudaErrorInvalidValue;
  if (a.w.k % 32) return cudaErrorInvalidValue;
  if (!aligned16(a.w.packed)) return cudaErrorInvalidValue;
  if (!device_is_sm90()) return cudaErrorNotSupported;
  int sms = 0;
  cudaError_t e = device_sm_count(&sms);
  if (e != cudaSuccess) return e;
  const int tile_m = token_tile(a, sms);
  switch (tile_m) {
    case 256: return launch_cluster<256>(a, stream, sms);
    case 192: return launch_cluster<192>(a, stream, sms);
    case 128: return launch_cluster<128>(a, stream, sms);
  }
  return cudaErrorInvalidValue;
}

size_t gemm_nf4_sm90_workspace_bytes(const Nf4GemmArgs& a) {
  using namespace sm90;
  if (a.m <= 0 || a.w.n <= 0 || a.w.k < kBK || (a.cluster && a.cluster != 1) || !device_is_sm90()) return 0;
  int sms = 0;
  if (device_sm_count(&sms) != cudaSuccess) return 0;
  const int bt = a.tile_m ? a.tile_m : pick_tile_m(a.m, a.w.n, a.w.k, sms, true);
  return nf4_split_plan(tiles_of(a.m, bt), (a.w.n + kRows - 1) / kRows, a.w.k, bt, sms, true).bytes;
}

cudaError_t gemm_nf4_sm90_pair(const Nf4GemmArgs& a, const Nf4GemmArgs& b, cudaStream_t stream) {
  using namespace sm90;
  if (!pair_valid(a, b)) return cudaErrorInvalidValue;
  if (!device_is_sm90()) return cudaErrorNotSupported;
  int sms = 0;
  cudaError_t e = device_sm_count(&sms);
  if (e != cudaSuccess) return e;
  if (a.epi.kind != b.epi.kind) return launch<kPairTile, kQkEpi, 1, true, 1>(a, &b, stream, sms);
  return launch_epi<kPairTile, 1, true>(a, &b, stream, sms);
}

size_t gemm_nf4_sm90_pair_workspace_bytes(const Nf4GemmArgs& a, const Nf4GemmArgs& b) {
  using namespace sm90;
  if (!pair_valid(a, b) || a.w.k < kBK || !device_is_sm90()) return 0;
  int sms = 0;
  if (device_sm_count(&sms) != cudaSuccess) return 0;
  int tiles_m = 0, tiles_n = 0;
  launch_tiles(a, &b, kPairTile, &tiles_m, &tiles_n);
  return nf4_split_plan(tiles_m, tiles_n, a.w.k, kPairTile, sms, true).bytes;
}

}  // namespace fluxk
