// extern "C" shims over native/src/sm90/kernels.h so bench.py can drive the kernels with ctypes on
// torch tensors (raw device pointers + the current stream). Return values are cudaError_t codes.
#include <cuda_runtime.h>

#include <algorithm>

#include "../../native/src/sm90/kernels.h"

using namespace fluxk;

namespace {
EpilogueArgs make_epi(int kind, const void* bias, const void* residual, long long ldr, const void* gate,
                      long long ldg, int rows_per_batch) {
  EpilogueArgs e;
  e.kind = static_cast<Epilogue>(kind);
  e.bias = static_cast<const __nv_bfloat16*>(bias);
  e.residual = static_cast<const __nv_bfloat16*>(residual);
  e.ldr = ldr;
  e.gate = static_cast<const __nv_bfloat16*>(gate);
  e.ldg = ldg;
  e.gate_rows_per_batch = rows_per_batch;
  return e;
}

GemmArgs make_gemm(const void* a, long long lda, const void* w, long long ldw, void* c, long long ldc, int m, int n,
                   int k, int epi, const void* bias, const void* residual, long long ldr, const void* gate,
                   long long ldg, int rows_per_batch, int tile_n, int cluster, int schedule) {
  GemmArgs g;
  g.a = static_cast<const __nv_bfloat16*>(a);
  g.lda = lda;
  g.w = static_cast<const __nv_bfloat16*>(w);
  g.ldw = ldw;
  g.c = static_cast<__nv_bfloat16*>(c);
  g.ldc = ldc;
  g.m = m;
  g.n = n;
  g.k = k;
  g.epi = make_epi(epi, bias, residual, ldr, gate, ldg, rows_per_batch);
  g.tile_n = tile_n;
  g.cluster = cluster;
  g.schedule = static_cast<GemmSchedule>(schedule);
  return g;
}

// Whether the sm90 GEMMs and attention get their split workspace (fk_set_split), as the addon gives it, and the size
// the last call got (fk_last_split_bytes: 0 means that call ran whole tiles or units only).
bool g_split = true;
size_t g_last_split_bytes = 0;

// The split workspace (gemm_*_sm90_workspace_bytes), kept across calls as the addon's caching allocator keeps its
// blocks, so timings see no allocation. Grown outside any timed region by the first call of a shape.
void* split_workspace(size_t bytes) {
  static void* block = nullptr;
  static size_t capacity = 0;
  if (bytes > capacity) {
    cudaDeviceSynchronize();
    cudaFree(block);
    block = nullptr;
    capacity = 0;
    if (cudaMalloc(&block, bytes) != cudaSuccess) return nullptr;
    capacity = bytes;
  }
  return block;
}

template <class Args>
void use_split_workspace(Args& g, size_t bytes) {
  g.workspace_bytes = g_split ? bytes : 0;
  g.workspace = g.workspace_bytes ? split_workspace(g.workspace_bytes) : nullptr;
  if (!g.workspace) g.workspace_bytes = 0;
  g_last_split_bytes = g.workspace_bytes;
}

// backend: 0 = dispatch, 1 = sm90 (wgmma), 2 = sm80 (mma.sync), 3 = gemv (m <= 16)
int run_gemm_bf16(int backend, GemmArgs g, cudaStream_t s) {
  if (backend == 0 || backend == 1) use_split_workspace(g, gemm_bf16_sm90_workspace_bytes(g));
  switch (backend) {
    case 0: return gemm_bf16(g, s);
    case 1: return gemm_bf16_sm90(g, s);
    case 2: return gemm_bf16_sm80(g, s);
    case 3: return gemv_bf16(g, s);
  }
  return cudaErrorInvalidValue;
}

Nf4Weight make_nf4_weight(const void* packed, int n, int k, const void* absmax, const void* absmax_q,
                          const void* absmax_code, const void* nested_absmax, float nested_offset) {
  Nf4Weight w;
  w.packed = static_cast<const uint8_t*>(packed);
  w.n = n;
  w.k = k;
  w.absmax = static_cast<const float*>(absmax);
  w.absmax_q = static_cast<const uint8_t*>(absmax_q);
  w.absmax_code = static_cast<const float*>(absmax_code);
  w.nested_absmax = static_cast<const float*>(nested_absmax);
  w.nested_offset = nested_offset;
  return w;
}
}  // namespace

extern "C" {

// 0: the sm90 GEMMs run whole tiles only (no split workspace), 1: as the addon runs them (the default).
void fk_set_split(int on) { g_split = on != 0; }
unsigned long long fk_last_split_bytes() { return g_last_split_bytes; }

const char* fk_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

// backend: 0 = dispatch, 1 = sm90 (wgmma), 2 = sm80 (mma.sync), 3 = gemv (m <= 16); schedule: GemmSchedule (sm90)
int fk_gemm_bf16(int backend, const void* a, long long lda, const void* w, long long ldw, void* c, long long ldc,
                 int m, int n, int k, int epi, const void* bias, const void* residual, long long ldr,
                 const void* gate, long long ldg, int rows_per_batch, int tile_n, int cluster, int schedule,
                 void* stream) {
  const GemmArgs g = make_gemm(a, lda, w, ldw, c, ldc, m, n, k, epi, bias, residual, ldr, gate, ldg, rows_per_batch,
                               tile_n, cluster, schedule);
  return run_gemm_bf16(backend, g, static_cast<cudaStream_t>(stream));
}

// fk_gemm_bf16 with A in two parts (GemmArgs::a2): columns [0, k_split) of A from a (lda), [k_split, k) from a2
// (lda2), multiplied as their concatenation. The kernels accept it on the sm90 ping-pong schedule only.
int fk_gemm_bf16_two_part(int backend, const void* a, long long lda, const void* a2, long long lda2, int k_split,
                          const void* w, long long ldw, void* c, long long ldc, int m, int n, int k, int epi,
                          const void* bias, const void* residual, long long ldr, const void* gate, long long ldg,
                          int rows_per_batch, int schedule, void* stream) {
  GemmArgs g = make_gemm(a, lda, w, ldw, c, ldc, m, n, k, epi, bias, residual, ldr, gate, ldg, rows_per_batch, 0, 0,
                         schedule);
  g.a2 = static_cast<const __nv_bfloat16*>(a2);
  g.lda2 = lda2;
  g.k_split = k_split;
  return run_gemm_bf16(backend, g, static_cast<cudaStream_t>(stream));
}

// backend: 0 = dispatch, 1 = sm90 (wgmma), 2 = sm80 (mma.sync), 3 = gemv (m <= 16); 4 = hold these arguments as a
// pair's first product (nothing launched), 5 = gemm_nf4_sm90_pair of the held product and this one
int fk_gemm_nf4(int backend, const void* a, long long lda, const void* packed, int n, int k, const void* absmax,
                const void* absmax_q, const void* absmax_code, const void* nested_absmax, float nested_offset,
                void* c, long long ldc, int m, int epi, const void* bias, const void* residual, long long ldr,
                const void* gate, long long ldg, int rows_per_batch, int tile_m, int cluster, void* stream) {
  Nf4GemmArgs g;
  g.a = static_cast<const __nv_bfloat16*>(a);
  g.lda = lda;
  g.w = make_nf4_weight(packed, n, k, absmax, absmax_q, absmax_code, nested_absmax, nested_offset);
  g.c = static_cast<__nv_bfloat16*>(c);
  g.ldc = ldc;
  g.m = m;
  g.epi = make_epi(epi, bias, residual, ldr, gate, ldg, rows_per_batch);
  g.tile_m = tile_m;
  g.cluster = cluster;
  static Nf4GemmArgs held;
  if (backend == 4) {
    held = g;
    return cudaSuccess;
  }
  if (backend == 0 || backend == 1) use_split_workspace(g, gemm_nf4_sm90_workspace_bytes(g));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (backend == 5) {
    Nf4GemmArgs first = held;
    use_split_workspace(first, gemm_nf4_sm90_pair_workspace_bytes(first, g));
    return gemm_nf4_sm90_pair(first, g, s);
  }
  switch (backend) {
    case 0: return gemm_nf4(g, s);
    case 1: return gemm_nf4_sm90(g, s);
    case 2: return gemm_nf4_sm80(g, s);
    case 3: return gemv_nf4(g, s);
  }
  return cudaErrorInvalidValue;
}

// gemv_nf4_concat over `parts` weights (arrays of their pointers and sizes; absmax or the double-quant triple per
// part), launched kNf4GemvConcatMaxParts parts at a time as the addon's route does: part i's outputs in columns
// [col_i, col_i + n_i) of c, col_i the sum of the previous n.
int fk_gemv_nf4_concat(int parts, const void* a, long long lda, int m, void* c, long long ldc, int k,
                       const void* const* packed, const int* n, const void* const* absmax,
                       const void* const* absmax_q, const void* const* absmax_code, const void* const* nested_absmax,
                       const float* nested_offset, const void* const* bias, void* stream) {
  Nf4GemvConcatArgs g;
  g.a = static_cast<const __nv_bfloat16*>(a);
  g.lda = lda;
  g.m = m;
  g.c = static_cast<__nv_bfloat16*>(c);
  g.ldc = ldc;
  long long col = 0;
  for (int first = 0; first < parts; first += kNf4GemvConcatMaxParts) {
    g.parts = std::min(kNf4GemvConcatMaxParts, parts - first);
    for (int p = 0; p < g.parts; ++p) {
      const int i = first + p;
      g.part[p].w = make_nf4_weight(packed[i], n[i], k, absmax[i], absmax_q[i], absmax_code[i], nested_absmax[i],
                                    nested_offset[i]);
      g.part[p].bias = static_cast<const __nv_bfloat16*>(bias[i]);
      g.part[p].col = col;
      col += n[i];
    }
    const cudaError_t e = gemv_nf4_concat(g, static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// The QKV projection of one token stream with the kQkNormRope epilogue: a [m, k] times the weight [3·heads·128, k]
// (backend 1: bf16 w/ldw, gemm_bf16_sm90 as dispatched; 3 / 4: the same forced onto the ping-pong schedule in 2-CTA
// clusters / independent CTAs; backend 2: NF4 packed/absmax..., gemm_nf4_sm90), q, k, v
// [m / tokens, joint_tokens, heads, 128] written at rows joint_offset + l; C is not written.
int fk_gemm_qk_norm_rope(int backend, const void* a, long long lda, const void* w, long long ldw, const void* packed,
                         const void* absmax, const void* absmax_q, const void* absmax_code, const void* nested_absmax,
                         float nested_offset, const void* bias, const void* norm_q, const void* norm_k,
                         const void* rope_cos, const void* rope_sin, void* q_out, void* k_out, void* v_out, int m,
                         int k, int heads, int tokens, int joint_tokens, int joint_offset, float eps, void* stream) {
  EpilogueArgs e = make_epi(static_cast<int>(Epilogue::kQkNormRope), bias, nullptr, 0, nullptr, 0, 1);
  e.q = static_cast<__nv_bfloat16*>(q_out);
  e.k = static_cast<__nv_bfloat16*>(k_out);
  e.v = static_cast<__nv_bfloat16*>(v_out);
  e.norm_q = static_cast<const __nv_bfloat16*>(norm_q);
  e.norm_k = static_cast<const __nv_bfloat16*>(norm_k);
  e.rope_cos = static_cast<const float*>(rope_cos);
  e.rope_sin = static_cast<const float*>(rope_sin);
  e.heads = heads;
  e.tokens = tokens;
  e.joint_tokens = joint_tokens;
  e.joint_offset = joint_offset;
  e.eps = eps;
  const int n = 3 * 128 * heads;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (backend == 1 || backend == 3 || backend == 4) {
    const int cluster = backend == 3 ? 2 : backend == 4 ? 1 : 0;
    GemmArgs g = make_gemm(a, lda, w, ldw, nullptr, 0, m, n, k, 0, nullptr, nullptr, 0, nullptr, 0, 1, 0, cluster,
                           backend == 1 ? 0 : 2);
    g.epi = e;
    use_split_workspace(g, gemm_bf16_sm90_workspace_bytes(g));
    return gemm_bf16_sm90(g, s);
  }
  if (backend == 2) {
    Nf4GemmArgs g;
    g.a = static_cast<const __nv_bfloat16*>(a);
    g.lda = lda;
    g.w = make_nf4_weight(packed, n, k, absmax, absmax_q, absmax_code, nested_absmax, nested_offset);
    g.m = m;
    g.epi = e;
    use_split_workspace(g, gemm_nf4_sm90_workspace_bytes(g));
    return gemm_nf4_sm90(g, s);
  }
  return cudaErrorInvalidValue;
}

// backend: 0 = dispatch (sm90: ping-pong), 1 = sm90 pipelined, 2 = sm80, 3 = sm90 simple, 4 = sm90 pipelined +
// ping-pong.
// strides: q(b,h,l), k(b,h,l), v(b,h,l), o(b,h,l) in elements.
int fk_attention(int backend, const void* q, const void* k, const void* v, void* o, int batch, int heads, int seq_q,
                 int seq_kv, const long long* strides, float scale, void* stream) {
  AttentionArgs a;
  a.q = static_cast<const __nv_bfloat16*>(q);
  a.k = static_cast<const __nv_bfloat16*>(k);
  a.v = static_cast<const __nv_bfloat16*>(v);
  a.o = static_cast<__nv_bfloat16*>(o);
  a.batch = batch;
  a.heads = heads;
  a.seq_q = seq_q;
  a.seq_kv = seq_kv;
  for (int i = 0; i < 3; ++i) {
    a.q_stride[i] = strides[i];
    a.k_stride[i] = strides[3 + i];
    a.v_stride[i] = strides[6 + i];
    a.o_stride[i] = strides[9 + i];
  }
  a.scale = scale;
  if (backend != 2) use_split_workspace(a, attention_fwd_sm90_workspace_bytes(a));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (backend) {
    case 0: return attention_fwd(a, s);
    case 1: return sm90::attention_fwd_sm90_variant(a, s, AttentionVariant::kPipelined);
    case 2: return attention_fwd_sm80(a, s);
    case 3: return sm90::attention_fwd_sm90_variant(a, s, AttentionVariant::kSimple);
    case 4: return sm90::attention_fwd_sm90_variant(a, s, AttentionVariant::kPingPong);
  }
  return cudaErrorInvalidValue;
}

}  // extern "C"
