// Fused ops of the Flux transformer (CPU references in cpu/fused.cpp).
// layer_norm_modulate: one block per row; rows of up to 4096 values stay in registers between the mean, the
// variance and the output pass, so the row is read from memory once and written once. Napkin math at 1024²:
// [4608, 3072] bf16 = 28 MB in + 28 MB out ≈ 20 µs at 3 TB/s, against ~60 µs for the unfused layerNorm + modulate
// (two extra passes over the tensor).
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

constexpr int kNormThreads = 256;

// PER > 0: each thread keeps PER values of the row in registers (C <= PER * kNormThreads); PER == 0 re-reads x.
template <class T, int PER>
__global__ void __launch_bounds__(kNormThreads)
    layer_norm_modulate_kernel(const T* x, T* out, int64_t rows, int64_t C, const T* shift, const T* scale,
                               int64_t rows_per_group, float eps) {
  __shared__ float red[32];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float v[PER > 0 ? PER : 1];
    float sum = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        v[j] = i < C ? to_f(xr[i]) : 0.f;
        sum += v[j];
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) sum += to_f(xr[i]);
    }
    const float mean = block_sum<kNormThreads>(sum, red) / float(C);
    float sq = 0.f;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        const float d = v[j] - mean;
        if (i < C) sq += d * d;
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) {
        const float d = to_f(xr[i]) - mean;
        sq += d * d;
      }
    }
    const float rstd = rsqrtf(block_sum<kNormThreads>(sq, red) / float(C) + eps);
    const T* sh = shift + (row / rows_per_group) * C;
    const T* sc = scale + (row / rows_per_group) * C;
    T* o = out + row * C;
    if constexpr (PER > 0) {
#pragma unroll
      for (int j = 0; j < PER; j++) {
        const int64_t i = tid + int64_t(j) * kNormThreads;
        if (i < C) o[i] = from_f<T>((v[j] - mean) * rstd * (1.f + to_f(sc[i])) + to_f(sh[i]));
      }
    } else {
      for (int64_t i = tid; i < C; i += kNormThreads) {
        o[i] = from_f<T>((to_f(xr[i]) - mean) * rstd * (1.f + to_f(sc[i])) + to_f(sh[i]));
      }
    }
  }
}

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

}  // namespace

void layer_norm_modulate(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* shift,
                         const void* scale, int64_t rows_per_group, float eps, cudaStream_t s) {
  const unsigned grid = rows_grid(rows, 1);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    auto args = [&](auto kernel) {
      kernel<<<grid, kNormThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), rows, C,
                                           static_cast<const T*>(shift), static_cast<const T*>(scale), rows_per_group,
                                           eps);
    };
    if (C <= 4 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 4>);
    } else if (C <= 8 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 8>);
    } else if (C <= 16 * kNormThreads) {
      args(layer_norm_modulate_kernel<T, 16>);
    } else {
      args(layer_norm_modulate_kernel<T, 0>);
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
