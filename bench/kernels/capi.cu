// extern "C" shims over native/src/sm90/kernels.h so bench.py can drive the kernels with ctypes on
// torch tensors (raw device pointers + the current stream). Return values are cudaError_t codes.
#include <cuda_runtime.h>

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
}  // namespace

extern "C" {

const char* fk_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

// backend: 0 = dispatch, 1 = sm90 (wgmma), 2 = sm80 (mma.sync), 3 = gemv (m <= 16); schedule: GemmSchedule (sm90)
int fk_gemm_bf16(int backend, const void* a, long long lda, const void* w, long long ldw, void* c, long long ldc,
                 int m, int n, int k, int epi, const void* bias, const void* residual, long long ldr,
                 const void* gate, long long ldg, int rows_per_batch, int tile_n, int cluster, int schedule,
                 void* stream) {
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
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (backend) {
    case 0: return gemm_bf16(g, s);
    case 1: return gemm_bf16_sm90(g, s);
    case 2: return gemm_bf16_sm80(g, s);
    case 3: return gemv_bf16(g, s);
  }
  return cudaErrorInvalidValue;
}

// backend: 0 = dispatch, 1 = sm90 (wgmma), 2 = sm80 (mma.sync), 3 = gemv (m <= 16)
int fk_gemm_nf4(int backend, const void* a, long long lda, const void* packed, int n, int k, const void* absmax,
                const void* absmax_q, const void* absmax_code, const void* nested_absmax, float nested_offset,
                void* c, long long ldc, int m, int epi, const void* bias, const void* residual, long long ldr,
                const void* gate, long long ldg, int rows_per_batch, int tile_m, int cluster, void* stream) {
  Nf4GemmArgs g;
  g.a = static_cast<const __nv_bfloat16*>(a);
  g.lda = lda;
  g.w.packed = static_cast<const uint8_t*>(packed);
  g.w.n = n;
  g.w.k = k;
  g.w.absmax = static_cast<const float*>(absmax);
  g.w.absmax_q = static_cast<const uint8_t*>(absmax_q);
  g.w.absmax_code = static_cast<const float*>(absmax_code);
  g.w.nested_absmax = static_cast<const float*>(nested_absmax);
  g.w.nested_offset = nested_offset;
  g.c = static_cast<__nv_bfloat16*>(c);
  g.ldc = ldc;
  g.m = m;
  g.epi = make_epi(epi, bias, residual, ldr, gate, ldg, rows_per_batch);
  g.tile_m = tile_m;
  g.cluster = cluster;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (backend) {
    case 0: return gemm_nf4(g, s);
    case 1: return gemm_nf4_sm90(g, s);
    case 2: return gemm_nf4_sm80(g, s);
    case 3: return gemv_nf4(g, s);
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
