// Flash attention forward for Hopper (FlashAttention-3 style), head_dim 128, non-causal, bf16 in
// and out, fp32 softmax statistics and accumulation.
//
// CTA = one (batch, head, 128-query tile), 384 threads:
//   warpgroup 0: one thread loads the Q tile once and streams 128-key K and V tiles with TMA
//                (4D tensor maps over [B, H, L, 128] with arbitrary strides; 128-byte swizzle; out
//                of range rows read as zero) into a 2-stage ring (separate "full" barriers for K
//                and V, one "empty" barrier per stage).
//   warpgroups 1-2: 64 query rows each. S = Q·Kᵀ with wgmma (A = Q, B = K, both K-major in
//                shared memory), online softmax in registers (exp2 with the scale folded in), then
//                O += P·V with P taken from registers (the S accumulator layout is the wgmma A
//                fragment layout) and V read MN-major (transposed B).
// Variants (AttentionVariant): kSimple runs S, softmax, P·V in order per block and lets the two
// consumer warpgroups overlap each other freely; kPipelined overlaps the softmax of block j with
// P·V of block j-1 inside each warpgroup (FA3's intra-warpgroup pipelining); kPingPong adds FA3's
// warpgroup alternation on top: the warpgroups take turns issuing their matrix products (two
// named barriers), so one's softmax runs while the other's products occupy the tensor cores.
// attention_fwd_sm90 uses kPingPong (the fastest measured, with three K/V stages below).
// Split last round: CTAs run one unit each in launch order, so a unit count just over a multiple of the SM count
// leaves the last round mostly idle (1x24x1536, the 512² step: 288 units = 2.18 rounds of 132). With a workspace,
// the leftover units' key blocks are cut into `split` ranges, one CTA each; a piece leaves its unnormalised O rows
// and their (max, sum) in the workspace, and attention_merge_kernel combines the pieces in order (the same result
// every run for a shape and SM count).
#include <algorithm>

#include "hopper.cuh"
#include "kernels.h"
#include "tensor_map.h"

namespace fluxk {
namespace sm90 {
namespace {

constexpr int kBM = 128;  // query rows per CTA
constexpr int kBN = 128;  // keys per block
constexpr int kD = 128;
constexpr int kThreads = 384;
constexpr int kTileBytes = kBN * kD * 2;  // 32 KB: two 128-row x 64-dim swizzled halves
constexpr int kHalfBytes = kTileBytes / 2;
// Three K/V stages (224 KB with Q). The pipelined and ping-pong schedules keep the two warpgroups a block apart;
// with two stages the one ahead probably waited for a refill that needs the other's release. Measured on an H200
// (2026-11-26, bench/kernels/results/*-attention-stages): ping-pong 453 -> 569 TFLOP/s at 24x4608x4608, pipelined
// 453 -> 556, the simple schedule 514 either way.
constexpr int kStages = 3;
constexpr int kSmemBytes = kTileBytes * (1 + 2 * kStages) + 8 * (1 + 3 * kStages) + 1024;
static_assert(kSmemBytes <= 232448, "shared memory budget");

struct AttnParams {
  __nv_bfloat16* o;
  int64_t o_stride[3];
  int heads, seq_q, seq_kv, q_tiles, kv_blocks;
  float scale_log2;
  int whole;       // CTAs [0, whole) each run unit blockIdx.x over every key block
  int split;       // CTAs from `whole` on: pieces per leftover unit (0: none)
  float* part_o;   // [piece][128 rows][128 dims] unnormalised O
  float2* part_ml; // [piece][128 rows] (row max in log2 units with the scale folded in, row sum)
};

// The split of the last round for this launch on `sms` SMs (one CTA per SM): leftover units at most half a round,
// each cut into as many key ranges as fill the SMs, each range at least one key block.
struct AttnSplit {
  int whole = 0, split = 0, pieces = 0;
  size_t bytes = 0;
};
AttnSplit plan_attention_split(long long units, int kv_blocks, int sms) {
  AttnSplit plan;
  plan.whole = static_cast<int>(units);
  const long long leftover = units % sms;
  if (units < sms || leftover == 0 || leftover > sms / 2) return plan;
  const int split = static_cast<int>(std::min<long long>(kv_blocks, sms / leftover));
  if (split < 2) return plan;
  plan.whole = static_cast<int>(units - leftover);
  plan.split = split;
  plan.pieces = static_cast<int>(leftover) * split;
  plan.bytes = static_cast<size_t>(plan.pieces) * kBM * (kD * sizeof(float) + sizeof(float2));
  return plan;
}

#if FLUXK_SM90_DEVICE
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// S = Q_rows · K_blockᵀ for this warpgroup's 64 rows (8 k16 steps over the head dim).
__device__ __forceinline__ void issue_qk(float (&s)[64], uint32_t q_base, uint32_t k_base) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    const uint32_t off = (kk / 4) * kHalfBytes + (kk % 4) * 32;
    WgmmaSS<128, 0>::run(s, make_smem_desc(q_base + off, 16, 1024), make_smem_desc(k_base + off, 16, 1024),
                         kk > 0 ? 1 : 0);
  }
  wgmma_commit();
}

// O += P · V_block: P from registers (8 k16 slices of keys), V MN-major (LBO = 64-dim half stride).
__device__ __forceinline__ void issue_pv(float (&o)[64], const uint32_t (&p)[32], uint32_t v_base) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    WgmmaRS<128, 1>::run(o, &p[4 * kk], make_smem_desc(v_base + kk * 16 * 128, kHalfBytes, 1024), 1);
  }
  wgmma_commit();
}

// Online-softmax step on a fresh score block: masks keys >= valid, updates the running row max m
// (log2 domain, scale folded in), turns s into unnormalised probabilities in place, returns the
// factor by which earlier O and l must be rescaled for each of the thread's two rows.
__device__ __forceinline__ void softmax_block(float (&s)[64], float (&m)[2], float (&alpha)[2], float scale_log2,
                                              int valid, int c) {
  if (valid < kBN) {
#pragma unroll
    for (int jn = 0; jn < 16; ++jn) {
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        if (8 * jn + 2 * c + (h & 1) >= valid) s[4 * jn + h] = -INFINITY;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int jn = 0; jn < 16; ++jn) mx = fmaxf(mx, fmaxf(s[4 * jn + 2 * r], s[4 * jn + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
    const float m_new = fmaxf(m[r], mx * scale_log2);
    alpha[r] = ex2(m[r] - m_new);
    m[r] = m_new;
#pragma unroll
    for (int jn = 0; jn < 16; ++jn) {
      s[4 * jn + 2 * r] = ex2(fmaf(s[4 * jn + 2 * r], scale_log2, -m_new));
      s[4 * jn + 2 * r + 1] = ex2(fmaf(s[4 * jn + 2 * r + 1], scale_log2, -m_new));
    }
  }
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Row sums of the probabilities (thread-partial; reduced across the quad at the end) and their
// bf16 A fragments for P·V: slice kk covers keys 16kk..16kk+15 = accumulator n8 blocks 2kk, 2kk+1.
__device__ __forceinline__ void probs_to_fragments(const float (&s)[64], float (&l)[2], const float (&alpha)[2],
                                                   uint32_t (&p)[32]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = 0.f;
#pragma unroll
    for (int jn = 0; jn < 16; ++jn) sum += s[4 * jn + 2 * r] + s[4 * jn + 2 * r + 1];
    l[r] = l[r] * alpha[r] + sum;
  }
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    p[4 * kk + 0] = pack2(s[8 * kk + 0], s[8 * kk + 1]);
    p[4 * kk + 1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);
    p[4 * kk + 2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);
    p[4 * kk + 3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

__device__ __forceinline__ void rescale_o(float (&o)[64], const float (&alpha)[2]) {
#pragma unroll
  for (int jn = 0; jn < 16; ++jn) {
    o[4 * jn + 0] *= alpha[0];
    o[4 * jn + 1] *= alpha[0];
    o[4 * jn + 2] *= alpha[1];
    o[4 * jn + 3] *= alpha[1];
  }
}
#endif

template <int kVariant>
__global__ void __launch_bounds__(kThreads, 1)
    attention_kernel(const __grid_constant__ CUtensorMap tma_q, const __grid_constant__ CUtensorMap tma_k,
                     const __grid_constant__ CUtensorMap tma_v, const AttnParams p) {
#if FLUXK_SM90_DEVICE
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_q = smem;
  uint8_t* s_k = s_q + kTileBytes;
  uint8_t* s_v = s_k + kStages * kTileBytes;
  uint64_t* q_full = reinterpret_cast<uint64_t*>(s_v + kStages * kTileBytes);
  uint64_t* k_full = q_full + 1;
  uint64_t* v_full = k_full + kStages;
  uint64_t* empty = v_full + kStages;

  // This CTA's unit and key blocks [kv0, kv1): a whole unit, or one piece of a leftover unit.
  int unit = blockIdx.x, kv0 = 0, kv1 = p.kv_blocks, piece = -1;
  if (static_cast<int>(blockIdx.x) >= p.whole) {
    piece = blockIdx.x - p.whole;
    unit = p.whole + piece / p.split;
    const int r = piece % p.split;
    kv0 = r * p.kv_blocks / p.split;
    kv1 = (r + 1) * p.kv_blocks / p.split;
  }
  const int q_tile = unit % p.q_tiles;
  const int bh = unit / p.q_tiles;
  const int head = bh % p.heads;
  const int batch = bh / p.heads;
  const int wg = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&empty[s], 8);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (tid == 0) {
      prefetch_tensor_map(&tma_q);
      prefetch_tensor_map(&tma_k);
      prefetch_tensor_map(&tma_v);
      mbar_arrive_expect_tx(q_full, kTileBytes);
      tma_load_4d(s_q, &tma_q, q_full, 0, q_tile * kBM, head, batch);
      tma_load_4d(s_q + kHalfBytes, &tma_q, q_full, 64, q_tile * kBM, head, batch);
      int stage = 0;
      uint32_t phase = 0;
      for (int j = kv0; j < kv1; ++j) {
        mbar_wait(&empty[stage], phase ^ 1);
        mbar_arrive_expect_tx(&k_full[stage], kTileBytes);
        tma_load_4d(s_k + stage * kTileBytes, &tma_k, &k_full[stage], 0, j * kBN, head, batch);
        tma_load_4d(s_k + stage * kTileBytes + kHalfBytes, &tma_k, &k_full[stage], 64, j * kBN, head, batch);
        mbar_arrive_expect_tx(&v_full[stage], kTileBytes);
        tma_load_4d(s_v + stage * kTileBytes, &tma_v, &v_full[stage], 0, j * kBN, head, batch);
        tma_load_4d(s_v + stage * kTileBytes + kHalfBytes, &tma_v, &v_full[stage], 64, j * kBN, head, batch);
        next_stage<kStages>(stage, phase);
      }
    }
  } else {
    setmaxnreg_inc<240>();
    const int cw = wg - 1;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int c = lane % 4;
    const uint32_t q_base = smem_addr(s_q) + cw * 64 * 128;
    float o[64];
    float s[64];
    uint32_t pf[32];
    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.f, 0.f};
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < 64; ++i) reg_fence(o[i]);

    mbar_wait(q_full, 0);
    int stage = 0;
    uint32_t phase = 0;
    constexpr bool kPing = kVariant == static_cast<int>(AttentionVariant::kPingPong);
    // Turn-taking for kPingPong: warpgroup cw waits on barrier 1+cw before issuing and then hands
    // the turn to the other one; warpgroup 0 starts; the second warpgroup does not hand over after
    // its last issue, so every barrier generation has exactly 128 + 128 participants.
    auto turn_wait = [&]() {
      if (kPing) named_barrier_sync(1 + cw, 256);
    };
    auto turn_pass = [&](bool last) {
      if (kPing && !(cw == 1 && last)) named_barrier_arrive(1 + (cw ^ 1), 256);
    };
    if (kPing && cw == 1) named_barrier_arrive(1, 256);

    if (kVariant == static_cast<int>(AttentionVariant::kSimple)) {
      for (int j = kv0; j < kv1; ++j) {
        mbar_wait(&k_full[stage], phase);
        issue_qk(s, q_base, smem_addr(s_k + stage * kTileBytes));
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 64; ++i) reg_fence(s[i]);
        softmax_block(s, m, alpha, p.scale_log2, p.seq_kv - j * kBN, c);
        probs_to_fragments(s, l, alpha, pf);
        rescale_o(o, alpha);
        mbar_wait(&v_full[stage], phase);
        issue_pv(o, pf, smem_addr(s_v + stage * kTileBytes));
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 64; ++i) reg_fence(o[i]);
#pragma unroll
        for (int i = 0; i < 32; ++i) reg_fence(pf[i]);
        if (lane == 0) mbar_arrive(&empty[stage]);
        next_stage<kStages>(stage, phase);
      }
    } else {
      // The first block: scores and probabilities only.
      mbar_wait(&k_full[stage], phase);
      turn_wait();
      issue_qk(s, q_base, smem_addr(s_k + stage * kTileBytes));
      turn_pass(false);
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) reg_fence(s[i]);
      softmax_block(s, m, alpha, p.scale_log2, p.seq_kv - kv0 * kBN, c);
      probs_to_fragments(s, l, alpha, pf);
      int prev = stage;
      uint32_t prev_phase = phase;
      next_stage<kStages>(stage, phase);
      for (int j = kv0 + 1; j < kv1; ++j) {
        mbar_wait(&k_full[stage], phase);
        mbar_wait(&v_full[prev], prev_phase);
        turn_wait();
        issue_qk(s, q_base, smem_addr(s_k + stage * kTileBytes));
        issue_pv(o, pf, smem_addr(s_v + prev * kTileBytes));
        turn_pass(false);
        wgmma_wait<1>();  // scores of block j are ready; P·V of block j-1 may still run
#pragma unroll
        for (int i = 0; i < 64; ++i) reg_fence(s[i]);
        softmax_block(s, m, alpha, p.scale_log2, p.seq_kv - j * kBN, c);
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 64; ++i) reg_fence(o[i]);
#pragma unroll
        for (int i = 0; i < 32; ++i) reg_fence(pf[i]);
        if (lane == 0) mbar_arrive(&empty[prev]);
        rescale_o(o, alpha);
        probs_to_fragments(s, l, alpha, pf);
        prev = stage;
        prev_phase = phase;
        next_stage<kStages>(stage, phase);
      }
      mbar_wait(&v_full[prev], prev_phase);
      turn_wait();
      issue_pv(o, pf, smem_addr(s_v + prev * kTileBytes));
      turn_pass(true);
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) reg_fence(o[i]);
#pragma unroll
      for (int i = 0; i < 32; ++i) reg_fence(pf[i]);
      if (lane == 0) mbar_arrive(&empty[prev]);
    }

    // Normalise and store: o[4jn + h] is row (16*warp + lane/4 + 8*(h/2)), dim (8jn + 2c + h%2).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
      l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
    }
    const int local0 = cw * 64 + warp * 16 + lane / 4;
    if (piece >= 0) {
      float* part = p.part_o + (static_cast<int64_t>(piece) * kBM + local0) * kD;
#pragma unroll
      for (int jn = 0; jn < 16; ++jn) {
        const int col = 8 * jn + 2 * c;
        *reinterpret_cast<float2*>(part + col) = make_float2(o[4 * jn + 0], o[4 * jn + 1]);
        *reinterpret_cast<float2*>(part + 8 * kD + col) = make_float2(o[4 * jn + 2], o[4 * jn + 3]);
      }
      if (c == 0) {
        p.part_ml[piece * kBM + local0] = make_float2(m[0], l[0]);
        p.part_ml[piece * kBM + local0 + 8] = make_float2(m[1], l[1]);
      }
      return;
    }
    const float inv0 = 1.f / l[0];
    const float inv1 = 1.f / l[1];
    const int row0 = q_tile * kBM + local0;
    __nv_bfloat16* o_base = p.o + static_cast<int64_t>(batch) * p.o_stride[0] + static_cast<int64_t>(head) * p.o_stride[1];
#pragma unroll
    for (int jn = 0; jn < 16; ++jn) {
      const int col = 8 * jn + 2 * c;
      if (row0 < p.seq_q)
        *reinterpret_cast<uint32_t*>(o_base + static_cast<int64_t>(row0) * p.o_stride[2] + col) =
            pack2(o[4 * jn + 0] * inv0, o[4 * jn + 1] * inv0);
      if (row0 + 8 < p.seq_q)
        *reinterpret_cast<uint32_t*>(o_base + static_cast<int64_t>(row0 + 8) * p.o_stride[2] + col) =
            pack2(o[4 * jn + 2] * inv1, o[4 * jn + 3] * inv1);
    }
  }
#endif
}

// Combines the pieces of each leftover unit: one warp per query row, 4 dims per lane; pieces in key order.
__global__ void __launch_bounds__(256) attention_merge_kernel(const AttnParams p) {
#if FLUXK_SM90_DEVICE
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int local = blockIdx.y * 8 + warp;
  const int unit = p.whole + blockIdx.x;
  const int q_tile = unit % p.q_tiles;
  const int bh = unit / p.q_tiles;
  const int row = q_tile * kBM + local;
  if (row >= p.seq_q) return;
  const int first = blockIdx.x * p.split;
  float mx = -INFINITY;
  for (int i = 0; i < p.split; ++i) mx = fmaxf(mx, p.part_ml[(first + i) * kBM + local].x);
  float sum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int i = 0; i < p.split; ++i) {
    const float2 ml = p.part_ml[(first + i) * kBM + local];
    const float w = ex2(ml.x - mx);
    sum += ml.y * w;
    const float4 v =
        *reinterpret_cast<const float4*>(p.part_o + (static_cast<int64_t>(first + i) * kBM + local) * kD + 4 * lane);
    acc.x += v.x * w;
    acc.y += v.y * w;
    acc.z += v.z * w;
    acc.w += v.w * w;
  }
  const float inv = 1.f / sum;
  __nv_bfloat16* out = p.o + static_cast<int64_t>(bh / p.heads) * p.o_stride[0] +
                       static_cast<int64_t>(bh % p.heads) * p.o_stride[1] + static_cast<int64_t>(row) * p.o_stride[2] +
                       4 * lane;
  reinterpret_cast<uint32_t*>(out)[0] = pack2(acc.x * inv, acc.y * inv);
  reinterpret_cast<uint32_t*>(out)[1] = pack2(acc.z * inv, acc.w * inv);
#endif
}

cudaError_t encode_bhld(CUtensorMap* map, const __nv_bfloat16* base, const int64_t (&stride)[3], int batch, int heads,
                        int seq) {
  const uint64_t dims[4] = {static_cast<uint64_t>(kD), static_cast<uint64_t>(seq), static_cast<uint64_t>(heads),
                            static_cast<uint64_t>(batch)};
  const uint64_t strides[3] = {static_cast<uint64_t>(stride[2]) * 2, static_cast<uint64_t>(stride[1]) * 2,
                               static_cast<uint64_t>(stride[0]) * 2};
  const uint32_t box[4] = {64, 128, 1, 1};
  return encode_tensor_map(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, base, dims, strides, box,
                           CU_TENSOR_MAP_SWIZZLE_128B);
}

}  // namespace

cudaError_t attention_fwd_sm90_variant(const AttentionArgs& a, cudaStream_t stream, AttentionVariant variant) {
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return cudaSuccess;
  if (!a.q || !a.k || !a.v || !a.o || a.head_dim != kD || a.seq_kv <= 0 || a.batch < 0 || a.heads < 0 ||
      a.seq_q < 0)
    return cudaErrorInvalidValue;
  for (int i = 0; i < 3; ++i) {
    if (a.q_stride[i] % 8 || a.k_stride[i] % 8 || a.v_stride[i] % 8 || a.o_stride[i] % 2) return cudaErrorInvalidValue;
  }
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o)) return cudaErrorInvalidValue;
  if (!device_is_sm90()) return cudaErrorNotSupported;
  CUtensorMap tq, tk, tv;
  cudaError_t e = encode_bhld(&tq, a.q, a.q_stride, a.batch, a.heads, a.seq_q);
  if (e != cudaSuccess) return e;
  e = encode_bhld(&tk, a.k, a.k_stride, a.batch, a.heads, a.seq_kv);
  if (e != cudaSuccess) return e;
  e = encode_bhld(&tv, a.v, a.v_stride, a.batch, a.heads, a.seq_kv);
  if (e != cudaSuccess) return e;
  AttnParams p;
  p.o = a.o;
  for (int i = 0; i < 3; ++i) p.o_stride[i] = a.o_stride[i];
  p.heads = a.heads;
  p.seq_q = a.seq_q;
  p.seq_kv = a.seq_kv;
  p.q_tiles = (a.seq_q + kBM - 1) / kBM;
  p.kv_blocks = (a.seq_kv + kBN - 1) / kBN;
  const float scale = a.scale != 0.f ? a.scale : 0.08838834764831845f;  // 1/sqrt(128)
  p.scale_log2 = scale * 1.4426950408889634f;
  const long long blocks = static_cast<long long>(p.q_tiles) * a.heads * a.batch;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  int sms = 0;
  e = device_sm_count(&sms);
  if (e != cudaSuccess) return e;
  AttnSplit plan = plan_attention_split(blocks, p.kv_blocks, sms);
  if (!a.workspace || !aligned16(a.workspace) || a.workspace_bytes < plan.bytes) {
    plan = AttnSplit();
    plan.whole = static_cast<int>(blocks);
  }
  p.whole = plan.whole;
  p.split = plan.split;
  p.part_o = static_cast<float*>(a.workspace);
  p.part_ml = reinterpret_cast<float2*>(p.part_o + static_cast<int64_t>(plan.pieces) * kBM * kD);
  auto kernel = variant == AttentionVariant::kSimple      ? attention_kernel<0>
                : variant == AttentionVariant::kPipelined ? attention_kernel<1>
                                                          : attention_kernel<2>;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (e != cudaSuccess) return e;
  kernel<<<static_cast<unsigned>(plan.whole + plan.pieces), kThreads, kSmemBytes, stream>>>(tq, tk, tv, p);
  e = cudaGetLastError();
  if (e != cudaSuccess || !plan.pieces) return e;
  attention_merge_kernel<<<dim3(static_cast<unsigned>(plan.pieces / plan.split), kBM / 8), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace sm90

size_t attention_fwd_sm90_workspace_bytes(const AttentionArgs& a) {
  if (a.batch <= 0 || a.heads <= 0 || a.seq_q <= 0 || a.seq_kv <= 0 || a.head_dim != sm90::kD ||
      !sm90::device_is_sm90())
    return 0;
  int sms = 0;
  if (sm90::device_sm_count(&sms) != cudaSuccess) return 0;
  const long long units = static_cast<long long>((a.seq_q + sm90::kBM - 1) / sm90::kBM) * a.heads * a.batch;
  return sm90::plan_attention_split(units, (a.seq_kv + sm90::kBN - 1) / sm90::kBN, sms).bytes;
}

cudaError_t attention_fwd_sm90(const AttentionArgs& a, cudaStream_t stream) {
  return sm90::attention_fwd_sm90_variant(a, stream, AttentionVariant::kPingPong);
}

}  // namespace fluxk
