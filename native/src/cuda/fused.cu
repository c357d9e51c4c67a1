// Fused ops of the Flux transformer (CPU references in cpu/fused.cpp).
// layer_norm_modulate: a warp per row (a group of G < 32 lanes for rows of ≤ 16 pieces), 16-byte loads and stores (8
// bf16) where C % 8 == 0 and the pointers are aligned, single values otherwise; rows of up to 4096 values stay in
// registers as stored (Flux's 3072 bf16: 12 vectors, 48 registers a lane) between the mean, the variance and the
// output pass; both statistics are reduced by shuffles (no shared memory, no barrier); the shift/scale rows are read
// as vectors in the output pass (12 KB, shared by all rows of a batch: L1/L2 hits).
// Napkin math at 1024² on an H100: [4608, 3072] bf16 = 28.3 MB in + 28.3 MB out = 56.6 MB, 16.9 µs at the 3.35 TB/s
// peak, ~19.5 µs at the ~2.9 TB/s a copy reaches: ≤ ~22 µs expected with launch and tail. Enough in flight: 90
// registers a lane (ptxas, sm_90a) → 5 blocks of 4 warps per SM, up to 20 rows of 6 KB loading per SM (~15 MB on
// the GPU) against the ~3 MB (2.9 TB/s × ~1 µs) that keeps HBM3 busy; ~13 instructions per value, ~6 µs of issue
// on the whole GPU, hidden under the transfer. The block-per-row kernel this replaces (256 threads of 2-byte
// accesses, two shared-memory reductions per row) measured 47.7 µs there, 1.19 TB/s
// (bench/results/profiles/2026-11-26-h100-97df9f2-gelu-fdividef.log); this one 24 µs (0.935 ms for 38 calls, H100,
// bench/results/profiles/2026-11-26-h100-9e2e8ed-qkv-epilogue.log).
// qk_norm_rope: a group of G lanes per (token, head) row of D (G = 16 for D = 128 in bf16: two rows per warp); a
// lane owns pieces of E contiguous values (16-byte loads and stores; E even, so whole interleaved pairs and the
// rotation needs no exchange between lanes), the sum of squares is reduced over the group by shuffles, and q/k are
// read and written once instead of three times (rmsNorm, rope, copies).
// joint_qkv: the same rows straight from the fused QKV projections of every token stream into the joint attention
// inputs q, k, v [B, ΣL, H, D]: a group reads a (token, head)'s q, k and v pieces at once, writes q and k normed and
// rotated (the row routine of qk_norm_rope, so both agree bitwise) and v copied, each stream's rows at its offset,
// which replaces 2 qkNormRope + 3 concat launches per block (the concat of [context; x] read and wrote q, k and v
// again). Napkin math at 1024² (B 1, 512 + 4096 tokens, 24 × 128, bf16): reads 4608 × 9216 × 2 B = 85 MB of
// projections, writes 85 MB, the float32 cos/sin rows (4.7 MB) come from L2 for the 24 heads of a token: ~175 MB,
// ~58 µs at 3 TB/s (H100), ~40 µs at 4.4 TB/s (H200); measured before (bench/results/profiles, H200): qkNormRope ×4 ~200 µs + concat ×3 ~570 µs
// per double block. In single blocks v, formerly a view of its own GEMM's output, is now copied too (+57 MB).
#include <cmath>
#include <type_traits>

#include "../sm90/epilogue.cuh"
#include "common.cuh"

namespace fl::cuda {

namespace {

// ---- rows of QK-norm + RoPE ----------------------------------------------------------------------------------
// Geometry of a row of D values among lanes: pieces of E contiguous values (E = 16 bytes of T where D allows, else
// one pair), G lanes per row (a power of two ≤ 32: 32 / G rows per warp), lane j of a group owning pieces j + G·c for
// c < CH. The plan depends on (dtype, D) only: qk_norm_rope and joint_qkv pick the same one, hence the same
// summation order and the same bits.
struct RowPlan {
  int E, G, pieces, CH;
};

RowPlan row_plan(DType dt, int64_t D) {
  const int vec = dt == DType::F32 ? 4 : 8;
  RowPlan p{};
  p.E = D % vec == 0 ? vec : 2;
  p.pieces = int(D / p.E);
  p.G = 1;
  while (p.G < 32 && p.G < p.pieces) p.G *= 2;
  const int per_lane = (p.pieces + p.G - 1) / p.G;
  p.CH = 1;
  while (p.CH < per_lane) p.CH *= 2;
  return p;
}

// E values at p into float. `aligned`: p is aligned to min(16, E·sizeof(T)) bytes (every base pointer 16-byte
// aligned, offsets multiples of E), so one or two vector loads fetch them.
template <class T, int E>
__device__ __forceinline__ void load_vals(const T* p, float (&out)[E], bool aligned) {
  constexpr int kBytes = E * int(sizeof(T));
  if (aligned) {
    if constexpr (kBytes % 16 == 0) {
      uint4 raw[kBytes / 16];
#pragma unroll
      for (int i = 0; i < kBytes / 16; i++) raw[i] = reinterpret_cast<const uint4*>(p)[i];
      const T* t = reinterpret_cast<const T*>(raw);
#pragma unroll
      for (int e = 0; e < E; e++) out[e] = to_f(t[e]);
      return;
    } else if constexpr (kBytes == 8) {
      const uint2 raw = *reinterpret_cast<const uint2*>(p);
      const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < E; e++) out[e] = to_f(t[e]);
      return;
    } else if constexpr (kBytes == 4) {
      const uint32_t raw = *reinterpret_cast<const uint32_t*>(p);
      const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < E; e++) out[e] = to_f(t[e]);
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < E; e++) out[e] = to_f(p[e]);
}

// Norm weights and cos/sin tables may be any float dtype (float32 tables from FluxPosEmbed): a uniform branch.
template <int E>
__device__ __forceinline__ void load_table(const void* base, DType dt, int64_t i, float (&out)[E], bool aligned) {
  switch (dt) {
    case DType::BF16: load_vals<__nv_bfloat16, E>(static_cast<const __nv_bfloat16*>(base) + i, out, aligned); break;
    case DType::F16: load_vals<__half, E>(static_cast<const __half*>(base) + i, out, aligned); break;
    default: load_vals<float, E>(static_cast<const float*>(base) + i, out, aligned); break;
  }
}

// E raw values from src to dst (v's rows: a copy, no conversion).
template <class T, int E>
__device__ __forceinline__ void copy_vals(const T* src, T* dst, bool aligned) {
  constexpr int kBytes = E * int(sizeof(T));
  if (aligned) {
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
      for (int i = 0; i < kBytes / 16; i++) reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
      return;
    } else if constexpr (kBytes == 8) {
      *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
      return;
    } else if constexpr (kBytes == 4) {
      *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < E; e++) dst[e] = src[e];
}

template <class T, int E>
__device__ __forceinline__ void store_vals(T* p, const float (&v)[E], bool aligned) {
  constexpr int kBytes = E * int(sizeof(T));
  if (aligned && kBytes % 4 == 0) {
    alignas(16) T t[E];
#pragma unroll
    for (int e = 0; e < E; e++) t[e] = from_f<T>(v[e]);
    copy_vals<T, E>(t, p, true);
    return;
  }
#pragma unroll
  for (int e = 0; e < E; e++) p[e] = from_f<T>(v[e]);
}

// A lane's pieces of one row (zeros for pieces beyond the row, or when !valid).
template <class T, int E, int CH>
__device__ __forceinline__ void load_row(const T* row, float (&v)[CH][E], int sub, int G, int pieces, bool valid,
                                         bool aligned) {
#pragma unroll
  for (int c = 0; c < CH; c++) {
    const int piece = sub + G * c;
    if (valid && piece < pieces) {
      load_vals<T, E>(row + int64_t(piece) * E, v[c], aligned);
    } else {
#pragma unroll
      for (int e = 0; e < E; e++) v[c][e] = 0.f;
    }
  }
}

template <int E, int CH>
__device__ __forceinline__ void load_row_table(const void* base, DType dt, int64_t row_start, float (&v)[CH][E],
                                               int sub, int G, int pieces, bool valid, bool aligned) {
#pragma unroll
  for (int c = 0; c < CH; c++) {
    const int piece = sub + G * c;
    if (valid && piece < pieces) {
      load_table<E>(base, dt, row_start + int64_t(piece) * E, v[c], aligned);
    } else {
#pragma unroll
      for (int e = 0; e < E; e++) v[c][e] = 0.f;
    }
  }
}

// rmsNorm over the row (sum of squares: a lane's pieces in order, then the group's shuffle tree), × w, then Flux's
// interleaved rotation, with fluxk's epilogue functions: the GEMM epilogue kQkNormRope sums squares in this order
// and so computes these rows bitwise alike. One rounding to T. Every lane of the warp must call it (shuffles),
// valid row or not.
template <class T, int E, int CH>
__device__ __forceinline__ void norm_rope_store(const float (&x)[CH][E], const float (&w)[CH][E],
                                                const float (&cs)[CH][E], const float (&sn)[CH][E], T* out, int sub,
                                                int G, int pieces, int64_t D, float eps, bool valid, bool aligned) {
  float sq = 0.f;
#pragma unroll
  for (int c = 0; c < CH; c++) {
#pragma unroll
    for (int e = 0; e < E; e++) sq = fluxk::qk_square_add(sq, x[c][e]);
  }
  for (int o = G / 2; o > 0; o >>= 1) sq = __fadd_rn(sq, __shfl_xor_sync(kFullMask, sq, o));
  const float rstd = fluxk::qk_rstd(sq, float(D), eps);
  if (!valid) return;
#pragma unroll
  for (int c = 0; c < CH; c++) {
    const int piece = sub + G * c;
    if (piece >= pieces) continue;
    float y[E];
#pragma unroll
    for (int e = 0; e < E; e += 2) {
      fluxk::qk_norm_rope_pair(x[c][e], x[c][e + 1], rstd, w[c][e], w[c][e + 1], cs[c][e], cs[c][e + 1], sn[c][e],
                               sn[c][e + 1], y[e], y[e + 1]);
    }
    store_vals<T, E>(out + int64_t(piece) * E, y, aligned);
  }
}

constexpr int kRowWarps = 8;

// x, out [rows of D] (row r at token-position (r / H) % L). A warp handles 32 / G rows per step.
template <class T, int E, int CH>
__global__ void __launch_bounds__(kRowWarps * 32)
    qk_norm_rope_kernel(const T* x, T* out, int64_t rows, int64_t L, int64_t H, int64_t D, int G, int pieces,
                        const void* w, DType pdt, const void* cos, const void* sin, DType cdt, float eps,
                        bool aligned, bool w_aligned) {
  const int lane = threadIdx.x % 32, sub = lane % G;
  const int rows_per_warp = 32 / G;
  float wt[CH][E];
  load_row_table<E, CH>(w, pdt, 0, wt, sub, G, pieces, true, w_aligned);
  const int64_t warps = int64_t(gridDim.x) * kRowWarps;
  for (int64_t first = (int64_t(blockIdx.x) * kRowWarps + threadIdx.x / 32) * rows_per_warp; first < rows;
       first += warps * rows_per_warp) {
    const int64_t row = first + lane / G;
    const bool valid = row < rows;
    const int64_t l = valid ? (row / H) % L : 0;
    float v[CH][E], cs[CH][E], sn[CH][E];
    load_row<T, E, CH>(x + row * D, v, sub, G, pieces, valid, aligned);
    load_row_table<E, CH>(cos, cdt, l * D, cs, sub, G, pieces, valid, aligned);
    load_row_table<E, CH>(sin, cdt, l * D, sn, sub, G, pieces, valid, aligned);
    norm_rope_store<T, E, CH>(v, wt, cs, sn, out + row * D, sub, G, pieces, D, eps, valid, aligned);
  }
}

// Up to kJointStreams streams per launch, passed by value; blocks [block_start[s], block_start[s+1]) serve stream s.
constexpr int kJointStreams = 4;
struct JointLaunch {
  JointQkvStream stream[kJointStreams];
  int64_t block_start[kJointStreams + 1];
  int count;
  bool weights_aligned;
};

// A block owns kRowWarps · 32 / G consecutive (token, head) rows of one stream; each row's q, k and v pieces are
// loaded together (48 bytes per lane in flight for bf16 at D = 128) before any result is written.
template <class T, int E, int CH>
__global__ void __launch_bounds__(kRowWarps * 32)
    joint_qkv_kernel(JointLaunch a, T* q, T* k, T* v, int64_t B, int64_t Ltot, int64_t H, int64_t D, int G,
                     int pieces, float eps, bool aligned) {
  int s = 0;
  while (s + 1 < a.count && int64_t(blockIdx.x) >= a.block_start[s + 1]) s++;
  const JointQkvStream& st = a.stream[s];
  const int lane = threadIdx.x % 32, sub = lane % G;
  const int rows_per_warp = 32 / G;
  float wq[CH][E], wk[CH][E];
  load_row_table<E, CH>(st.norm_q, st.norm_q_dtype, 0, wq, sub, G, pieces, true, a.weights_aligned);
  load_row_table<E, CH>(st.norm_k, st.norm_k_dtype, 0, wk, sub, G, pieces, true, a.weights_aligned);
  const int64_t rows = B * st.L * H;
  const int64_t row = ((int64_t(blockIdx.x) - a.block_start[s]) * kRowWarps + threadIdx.x / 32) * rows_per_warp + lane / G;
  const bool valid = row < rows;
  const int64_t h = row % H, token = row / H, l = valid ? token % st.L : 0, b = token / st.L;
  const int64_t HD = H * D;
  const T* in = static_cast<const T*>(st.qkv) + token * 3 * HD + h * D;
  const int64_t o = ((b * Ltot + st.offset + l) * H + h) * D;
  float xq[CH][E], xk[CH][E], cs[CH][E], sn[CH][E];
  load_row<T, E, CH>(in, xq, sub, G, pieces, valid, aligned);
  load_row<T, E, CH>(in + HD, xk, sub, G, pieces, valid, aligned);
  if (valid) {
#pragma unroll
    for (int c = 0; c < CH; c++) {
      const int piece = sub + G * c;
      if (piece < pieces) copy_vals<T, E>(in + 2 * HD + int64_t(piece) * E, v + o + int64_t(piece) * E, aligned);
    }
  }
  load_row_table<E, CH>(st.cos, st.table_dtype, l * D, cs, sub, G, pieces, valid, aligned);
  load_row_table<E, CH>(st.sin, st.table_dtype, l * D, sn, sub, G, pieces, valid, aligned);
  norm_rope_store<T, E, CH>(xq, wq, cs, sn, q + o, sub, G, pieces, D, eps, valid, aligned);
  norm_rope_store<T, E, CH>(xk, wk, cs, sn, k + o, sub, G, pieces, D, eps, valid, aligned);
}

// Calls f(integral_constant<E>, integral_constant<CH>) for the plan (E: 16 bytes of T, or one pair).
template <class T, class F>
void with_row_plan(const RowPlan& p, F&& f) {
  constexpr int kVec = 16 / int(sizeof(T));
  auto by_ch = [&](auto e) {
    // D <= 512: at most 512 / (32·E) pieces per lane, so larger CH are never instantiated
    constexpr int kMaxCh = 512 / (32 * decltype(e)::value);
    if (p.CH == 1) return f(e, std::integral_constant<int, 1>{});
    if constexpr (kMaxCh >= 2) {
      if (p.CH == 2) return f(e, std::integral_constant<int, 2>{});
    }
    if constexpr (kMaxCh >= 4) {
      if (p.CH == 4) return f(e, std::integral_constant<int, 4>{});
    }
    if constexpr (kMaxCh >= 8) {
      if (p.CH == 8) return f(e, std::integral_constant<int, 8>{});
    }
    fail(cat("fused rows: no kernel for ", p.CH, " pieces of ", decltype(e)::value, " values per lane"));
  };
  if (p.E == kVec) {
    by_ch(std::integral_constant<int, kVec>{});
  } else {
    by_ch(std::integral_constant<int, 2>{});
  }
}

bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

template <class T>
__global__ void timestep_embedding_kernel(const T* t, int64_t B, int64_t dim, bool flip, float neg_log, float denom,
                                          float scale, float* out) {
  const int64_t half = dim / 2;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < B * half;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / half, i = idx % half;
    // torch's float32 steps (see cpu/fused.cpp); __fmul_rn/__fdiv_rn keep them separately rounded
    const float exponent = __fdiv_rn(__fmul_rn(neg_log, float(i)), denom);
    // exp through double and one rounding: the float32 value libm's expf gives (to its last bit, almost always),
    // so CPU and GPU agree; expf's 2-ulp error would move arguments near 1000 by 1e-4
    const float freq = float(exp(double(exponent)));
    const float arg = __fmul_rn(scale, __fmul_rn(to_f(t[b]), freq));
    float s, c;
    sincosf(arg, &s, &c);
    float* row = out + b * dim;
    row[flip ? half + i : i] = s;
    row[flip ? i : half + i] = c;
    if (i == 0 && dim % 2) row[dim - 1] = 0.f;
  }
}

unsigned rows_grid(int64_t rows, int64_t per_block) {
  const int64_t blocks = (rows + per_block - 1) / per_block;
  return unsigned(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

// ---- rows of layer norm + modulation -------------------------------------------------------------------------
// G lanes per row (a power of two ≤ 32: 32 / G rows per warp), lane j of a group owning pieces j + G·c of E
// contiguous values: E = 16 bytes of T where C % E == 0 and x, out, shift, scale are 16-byte aligned (then every
// row and every parameter row is too), else E = 1 (odd C, offset views). G < 32 only for rows of ≤ 16 pieces.
constexpr int kLnmWarps = 4;
// Pieces a lane keeps in registers: at most 128 values (C ≤ 4096 at 32 lanes; Flux's 3072 bf16 is 12 vectors), and
// at most 32 single values on the E = 1 path (odd shapes: C ≤ 1024 in registers; longer rows re-read).
template <int E>
constexpr int lnm_max_pieces() {
  return 128 / E < 32 ? 128 / E : 32;
}

// Blocks per SM promised to ptxas (__launch_bounds__): a budget of the row as stored (16-bit values two to a
// register on the 16-byte path) plus 48 registers. Left alone, ptxas hoisted the output pass's shift/scale loads as
// far as registers allowed and chose anywhere from 80 to 235 registers, spilling in some instantiations; with the
// budget Flux's 3072 bf16 takes 90 (5 blocks, 20 warps an SM) and no instantiation spills (sm_90a, sm_80).
template <class T, int E, int NV>
constexpr int lnm_min_blocks() {
  const int row_regs = E == 1 ? NV : NV * E * int(sizeof(T)) / 4;
  const int blocks = 65536 / (kLnmWarps * 32 * (row_regs + 48));
  return blocks < 1 ? 1 : blocks > 8 ? 8 : blocks;
}

// A piece as stored: one T, or 16 bytes.
template <class T, int E>
using LnmPiece = std::conditional_t<E == 1, T, uint4>;

template <class T, int E>
__device__ __forceinline__ LnmPiece<T, E> load_piece(const T* p) {
  static_assert(E == 1 || E * sizeof(T) == 16, "a piece is one value or 16 bytes");
  if constexpr (E == 1) {
    return *p;
  } else {
    return *reinterpret_cast<const uint4*>(p);
  }
}

template <class T, int E>
__device__ __forceinline__ LnmPiece<T, E> zero_piece() {
  if constexpr (E == 1) {
    return from_f<T>(0.f);
  } else {
    return make_uint4(0u, 0u, 0u, 0u);
  }
}

// Two 16-bit floats of a 32-bit word (the first in the low half, as in memory); exact.
template <class T>
__device__ __forceinline__ float2 unpack2(uint32_t w) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  } else {
    return __half22float2(__halves2half2(__ushort_as_half(uint16_t(w)), __ushort_as_half(uint16_t(w >> 16))));
  }
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return uint32_t(__bfloat16_as_ushort(h.x)) | uint32_t(__bfloat16_as_ushort(h.y)) << 16;
  } else {
    const __half2 h = __floats2half2_rn(a, b);
    return uint32_t(__half_as_ushort(h.x)) | uint32_t(__half_as_ushort(h.y)) << 16;
  }
}

template <class T, int E>
__device__ __forceinline__ void unpack_piece(const LnmPiece<T, E>& p, float (&f)[E]) {
  if constexpr (E == 1) {
    f[0] = to_f(p);
  } else if constexpr (std::is_same_v<T, float>) {
    f[0] = __uint_as_float(p.x), f[1] = __uint_as_float(p.y), f[2] = __uint_as_float(p.z), f[3] = __uint_as_float(p.w);
  } else {
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 v = unpack2<T>(w[i]);
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  }
}

// Rounds each value once to T (round to nearest even, as from_f).
template <class T, int E>
__device__ __forceinline__ LnmPiece<T, E> pack_piece(const float (&f)[E]) {
  if constexpr (E == 1) {
    return from_f<T>(f[0]);
  } else if constexpr (std::is_same_v<T, float>) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  } else {
    return make_uint4(pack2<T>(f[0], f[1]), pack2<T>(f[2], f[3]), pack2<T>(f[4], f[5]), pack2<T>(f[6], f[7]));
  }
}

template <class T, int E>
__device__ __forceinline__ void store_piece(T* p, const LnmPiece<T, E>& v) {
  if constexpr (E == 1) {
    *p = v;
  } else {
    *reinterpret_cast<uint4*>(p) = v;
  }
}

// (x − mean)·rstd·(1 + scale) + shift in float32 for a piece, one rounding to T.
template <class T, int E>
__device__ __forceinline__ void modulate_piece(const LnmPiece<T, E>& xp, const T* sh, const T* sc, T* o, float mean,
                                               float rstd) {
  float xv[E], s[E], k[E], y[E];
  unpack_piece<T, E>(xp, xv);
  unpack_piece<T, E>(load_piece<T, E>(sh), s);
  unpack_piece<T, E>(load_piece<T, E>(sc), k);
#pragma unroll
  for (int e = 0; e < E; e++) y[e] = (xv[e] - mean) * rstd * (1.f + k[e]) + s[e];
  store_piece<T, E>(o, pack_piece<T, E>(y));
}

__device__ __forceinline__ float group_sum(float v, int G) {
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// NV > 0: a lane's NV pieces stay in registers between the mean, the variance and the output pass (x read once).
// NV == 0: each pass re-reads the row (L1/L2 serve the repeats). Statistics in float32: the mean first, then the
// mean of squared deviations from it. Every lane of a warp runs the loop the same number of times (the shuffles);
// lanes past the last row load nothing and store nothing. `g` (lanes per row) is read for NV == 1 only: longer rows
// take the whole warp, a compile-time 32, so a lane's pieces sit at constant offsets from its first one.
template <class T, int E, int NV>
__global__ void __launch_bounds__(kLnmWarps * 32, (lnm_min_blocks<T, E, NV>()))
    layer_norm_modulate_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t rows, int64_t C, int g,
                               int64_t pieces, const T* __restrict__ shift, const T* __restrict__ scale,
                               int64_t rows_per_group, float eps) {
  const int G = NV == 1 ? g : 32;
  const int lane = threadIdx.x % 32, sub = lane % G;
  const int rows_per_warp = 32 / G;
  const int64_t step = int64_t(gridDim.x) * kLnmWarps * rows_per_warp;
  for (int64_t first = (int64_t(blockIdx.x) * kLnmWarps + threadIdx.x / 32) * rows_per_warp; first < rows;
       first += step) {
    const int64_t row = first + lane / G;
    const bool valid = row < rows;
    const int64_t r = valid ? row : 0;
    const int64_t lane_offset = r * C + int64_t(sub) * E;
    const int64_t param_offset = (r / rows_per_group) * C + int64_t(sub) * E;
    const T* xl = x + lane_offset;
    T* ol = out + lane_offset;
    const T* shl = shift + param_offset;
    const T* scl = scale + param_offset;
    if constexpr (NV > 0) {
      LnmPiece<T, E> v[NV];
      float sum = 0.f;
#pragma unroll
      for (int c = 0; c < NV; c++) {
        v[c] = valid && sub + int64_t(G) * c < pieces ? load_piece<T, E>(xl + c * G * E) : zero_piece<T, E>();
        float f[E];
        unpack_piece<T, E>(v[c], f);
#pragma unroll
        for (int e = 0; e < E; e++) sum += f[e];
      }
      const float mean = group_sum(sum, G) / float(C);
      float sq = 0.f;
#pragma unroll
      for (int c = 0; c < NV; c++) {
        if (sub + int64_t(G) * c >= pieces) continue;
        float f[E];
        unpack_piece<T, E>(v[c], f);
#pragma unroll
        for (int e = 0; e < E; e++) {
          const float d = f[e] - mean;
          sq += d * d;
        }
      }
      const float rstd = rsqrtf(group_sum(sq, G) / float(C) + eps);
      if (!valid) continue;
#pragma unroll
      for (int c = 0; c < NV; c++) {
        const int off = c * G * E;
        if (sub + int64_t(G) * c < pieces) modulate_piece<T, E>(v[c], shl + off, scl + off, ol + off, mean, rstd);
      }
    } else {
      const int64_t mine = valid ? pieces - sub : 0;
      float sum = 0.f;
#pragma unroll 4
      for (int64_t i = 0; i < mine; i += G) {
        float f[E];
        unpack_piece<T, E>(load_piece<T, E>(xl + i * E), f);
#pragma unroll
        for (int e = 0; e < E; e++) sum += f[e];
      }
      const float mean = group_sum(sum, G) / float(C);
      float sq = 0.f;
#pragma unroll 4
      for (int64_t i = 0; i < mine; i += G) {
        float f[E];
        unpack_piece<T, E>(load_piece<T, E>(xl + i * E), f);
#pragma unroll
        for (int e = 0; e < E; e++) {
          const float d = f[e] - mean;
          sq += d * d;
        }
      }
      const float rstd = rsqrtf(group_sum(sq, G) / float(C) + eps);
#pragma unroll 2
      for (int64_t i = 0; i < mine; i += G) {
        modulate_piece<T, E>(load_piece<T, E>(xl + i * E), shl + i * E, scl + i * E, ol + i * E, mean, rstd);
      }
    }
  }
}

// The plan for C (G lanes per row, the fewest instantiated pieces per lane that hold the row, or 0: re-read).
template <class T, int E>
void launch_layer_norm_modulate(const T* x, T* out, int64_t rows, int64_t C, const T* shift, const T* scale,
                                int64_t rows_per_group, float eps, cudaStream_t s) {
  const int64_t pieces = C / E;
  int G = 1;
  while (G < 32 && G < pieces) G *= 2;
  const int64_t per_lane = (pieces + G - 1) / G;
  const unsigned grid = rows_grid(rows, int64_t(kLnmWarps) * (32 / G));
  auto go = [&](auto nv) {
    layer_norm_modulate_kernel<T, E, decltype(nv)::value><<<grid, kLnmWarps * 32, 0, s>>>(
        x, out, rows, C, G, pieces, shift, scale, rows_per_group, eps);
  };
  constexpr int kMax = lnm_max_pieces<E>();
  if (per_lane <= 1) return go(std::integral_constant<int, 1>{});
  if (per_lane <= 2) return go(std::integral_constant<int, 2>{});
  if (per_lane <= 4) return go(std::integral_constant<int, 4>{});
  if (per_lane <= 8) return go(std::integral_constant<int, 8>{});
  if (per_lane <= 12) return go(std::integral_constant<int, 12>{});
  if (per_lane <= 16) return go(std::integral_constant<int, 16>{});
  if constexpr (kMax >= 24) {
    if (per_lane <= 24) return go(std::integral_constant<int, 24>{});
  }
  if constexpr (kMax >= 32) {
    if (per_lane <= 32) return go(std::integral_constant<int, 32>{});
  }
  go(std::integral_constant<int, 0>{});
}

}  // namespace

void layer_norm_modulate(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* shift,
                         const void* scale, int64_t rows_per_group, float eps, cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    constexpr int kVec = 16 / int(sizeof(T));
    const T* px = static_cast<const T*>(x);
    const T* psh = static_cast<const T*>(shift);
    const T* psc = static_cast<const T*>(scale);
    T* po = static_cast<T*>(out);
    if (C % kVec == 0 && aligned16({x, out, shift, scale})) {
      launch_layer_norm_modulate<T, kVec>(px, po, rows, C, psh, psc, rows_per_group, eps, s);
    } else {
      launch_layer_norm_modulate<T, 1>(px, po, rows, C, psh, psc, rows_per_group, eps, s);
    }
  });
}

void qk_norm_rope(const void* x, void* out, DType dt, int64_t rows, int64_t L, int64_t H, int64_t D, const void* w,
                  DType pdt, const void* cos, const void* sin, DType cdt, float eps, cudaStream_t s) {
  FL_CHECK(D % 2 == 0 && D <= 512, "ops.qkNormRope: head dim ", D, " must be even and at most 512 on CUDA");
  const RowPlan plan = row_plan(dt, D);
  const bool aligned = aligned16({x, out, cos, sin});
  const bool w_aligned = aligned16({w});
  const unsigned grid = rows_grid(rows, int64_t(kRowWarps) * (32 / plan.G));
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    with_row_plan<T>(plan, [&](auto e, auto ch) {
      constexpr int E = decltype(e)::value, CH = decltype(ch)::value;
      qk_norm_rope_kernel<T, E, CH><<<grid, kRowWarps * 32, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out),
                                                                     rows, L, H, D, plan.G, plan.pieces, w, pdt, cos,
                                                                     sin, cdt, eps, aligned, w_aligned);
    });
  });
}

void joint_qkv(const JointQkvStream* streams, int count, DType dt, int64_t B, int64_t Ltot, int64_t H, int64_t D,
               float eps, void* q, void* k, void* v, cudaStream_t s) {
  FL_CHECK(D % 2 == 0 && D <= 512, "ops.jointQkv: head dim ", D, " must be even and at most 512 on CUDA");
  const RowPlan plan = row_plan(dt, D);
  const int64_t rows_per_block = int64_t(kRowWarps) * (32 / plan.G);
  for (int first = 0; first < count; first += kJointStreams) {
    JointLaunch a{};
    a.count = 0;
    a.weights_aligned = true;
    bool aligned = aligned16({q, k, v});
    int64_t blocks = 0;
    for (int i = first; i < count && i < first + kJointStreams; i++) {
      const JointQkvStream& st = streams[i];
      const int64_t rows = B * st.L * H;
      if (rows == 0) continue;
      aligned = aligned && aligned16({st.qkv, st.cos, st.sin});
      a.weights_aligned = a.weights_aligned && aligned16({st.norm_q, st.norm_k});
      a.stream[a.count] = st;
      a.block_start[a.count] = blocks;
      blocks += (rows + rows_per_block - 1) / rows_per_block;
      a.count++;
    }
    if (a.count == 0) continue;
    a.block_start[a.count] = blocks;
    FL_CHECK(blocks < (int64_t(1) << 31), "ops.jointQkv: ", blocks, " blocks exceed CUDA's grid");
    FL_CUDA_FLOAT_SWITCH(dt, T, {
      with_row_plan<T>(plan, [&](auto e, auto ch) {
        constexpr int E = decltype(e)::value, CH = decltype(ch)::value;
        joint_qkv_kernel<T, E, CH><<<unsigned(blocks), kRowWarps * 32, 0, s>>>(
            a, static_cast<T*>(q), static_cast<T*>(k), static_cast<T*>(v), B, Ltot, H, D, plan.G, plan.pieces, eps,
            aligned);
      });
    });
  }
}

void timestep_embedding(const void* t, DType tdt, int64_t B, int64_t dim, bool flip_sin_to_cos,
                        float downscale_freq_shift, float scale, float max_period, float* out, cudaStream_t s) {
  const int64_t half = dim / 2;
  if (half == 0) {
    if (dim == 1) fill(out, DType::F32, B, 0.0, s);
    return;
  }
  const float neg_log = float(-std::log(double(max_period)));
  const float denom = float(double(half) - double(downscale_freq_shift));
  FL_CUDA_FLOAT_SWITCH(tdt, T, {
    timestep_embedding_kernel<T><<<grid_for(B * half, 256), 256, 0, s>>>(static_cast<const T*>(t), B, dim,
                                                                         flip_sin_to_cos, neg_log, denom, scale, out);
  });
}

}  // namespace fl::cuda
