// fluxk: the transformer's hot kernels (bf16 GEMM, NF4-weight GEMM/GEMV, flash attention forward).
//
// Launcher contract (every function below): arguments are checked, nothing is allocated, the host
// never synchronises, work is enqueued on `stream` only, so calls may be captured in a CUDA graph.
// Errors come back as cudaError_t (cudaErrorInvalidValue for unsupported shapes/alignments,
// cudaErrorNotSupported when no kernel for this device was compiled in). The *_sm90 entry points
// need an sm_90 device and a build with -gencode=arch=compute_90a,code=sm_90a; the *_sm80 ones
// run on any sm_80+ device (mma.sync). The unsuffixed ones pick the best path for the device.
// docs/kernels.md describes shapes, layouts, numerics and measured speed.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace fluxk {

// What the GEMM epilogue does with acc = A·Wᵀ (fp32), per output element (row r, column c):
//   kNone:         out = acc + bias[c]
//   kGeluTanh:     out = gelu_tanh(acc + bias[c])
//   kGateResidual: out = residual[r, c] + gate[r / gate_rows_per_batch, c] * (acc + bias[c])
// bias may be null (no bias). out is rounded to bf16 once, at the end.
enum class Epilogue : int { kNone = 0, kGeluTanh = 1, kGateResidual = 2 };

struct EpilogueArgs {
  Epilogue kind = Epilogue::kNone;
  const __nv_bfloat16* bias = nullptr;      // [N]
  const __nv_bfloat16* residual = nullptr;  // [M, ldr]; may alias the output (read before written)
  int64_t ldr = 0;
  const __nv_bfloat16* gate = nullptr;      // [M / gate_rows_per_batch, ldg]
  int64_t ldg = 0;
  int gate_rows_per_batch = 1;
};

// C[M,N] = epilogue(A[M,K] · W[N,K]ᵀ). Row-major, unit stride along K and N.
// Requires K % 8 == 0, N % 8 == 0, lda/ldw/ldc/ldr multiples of 8, 16-byte aligned pointers.
struct GemmArgs {
  const __nv_bfloat16* a = nullptr;
  int64_t lda = 0;
  const __nv_bfloat16* w = nullptr;
  int64_t ldw = 0;
  __nv_bfloat16* c = nullptr;
  int64_t ldc = 0;
  int m = 0, n = 0, k = 0;
  EpilogueArgs epi;
  int tile_n = 0;   // sm90: 0 picks a tile width; 128, 192 or 256 force one (for benchmarks)
  int cluster = 0;  // sm90: 0 or 1 = independent CTAs; 2 = CTA pairs sharing W tiles by TMA multicast
                    // (correct, but measured slower: docs/kernels.md)
};

cudaError_t gemm_bf16(const GemmArgs& args, cudaStream_t stream);
cudaError_t gemm_bf16_sm90(const GemmArgs& args, cudaStream_t stream);
cudaError_t gemm_bf16_sm80(const GemmArgs& args, cudaStream_t stream);

// A bitsandbytes NF4 weight W[N,K]: the flattened N*K values, two 4-bit codes per byte, the first
// value in the high nibble; one float32 absmax per 64 consecutive values of that flattened order.
// Double quant: absmax[b] = absmax_code[absmax_q[b]] * nested_absmax[b / 256] + nested_offset.
struct Nf4Weight {
  const uint8_t* packed = nullptr;      // N*K/2 bytes
  int n = 0, k = 0;                     // K % 64 == 0, N % 8 == 0
  const float* absmax = nullptr;        // [N*K/64] float32 (plain quant), or null with double quant
  const uint8_t* absmax_q = nullptr;    // [N*K/64] 8-bit codes (double quant)
  const float* absmax_code = nullptr;   // [256] (bitsandbytes' nested_quant_map)
  const float* nested_absmax = nullptr; // [ceil(N*K/64 / 256)]
  float nested_offset = 0.f;
};

// C[M,N] = epilogue(A[M,K] · dequant(W)ᵀ); the weight is dequantized on the fly (never stored as
// bf16): each value is rounded to bf16 after code*absmax in fp32, exactly as bitsandbytes does.
struct Nf4GemmArgs {
  const __nv_bfloat16* a = nullptr;
  int64_t lda = 0;
  Nf4Weight w;
  __nv_bfloat16* c = nullptr;
  int64_t ldc = 0;
  int m = 0;
  EpilogueArgs epi;
  int tile_m = 0;   // sm90: 0 picks; 128, 192 or 256 force the token tile (benchmarks)
  int cluster = 0;  // sm90: 0 or 1 = independent CTAs; 2 = CTA pairs sharing activation tiles by TMA
                    // multicast (correct, but measured slower: docs/kernels.md)
};

cudaError_t gemm_nf4(const Nf4GemmArgs& args, cudaStream_t stream);       // m <= 16: gemv_nf4
cudaError_t gemm_nf4_sm90(const Nf4GemmArgs& args, cudaStream_t stream);  // large m, wgmma
cudaError_t gemm_nf4_sm80(const Nf4GemmArgs& args, cudaStream_t stream);  // large m, mma.sync
cudaError_t gemv_nf4(const Nf4GemmArgs& args, cudaStream_t stream);       // m <= 16, any sm_80+

// O = softmax(Q·Kᵀ · scale) · V per (batch, head); non-causal; head_dim 128; bf16 in and out,
// fp32 softmax statistics and accumulation. Tensors are [B, H, L, 128] in logical order with
// arbitrary strides in elements for b, h and l (the head dim is contiguous), so [B, L, H, D] and
// fused-QKV layouts work without copies. Strides must be multiples of 8.
struct AttentionArgs {
  const __nv_bfloat16* q = nullptr;
  const __nv_bfloat16* k = nullptr;
  const __nv_bfloat16* v = nullptr;
  __nv_bfloat16* o = nullptr;
  int batch = 0, heads = 0, seq_q = 0, seq_kv = 0, head_dim = 128;
  int64_t q_stride[3] = {0, 0, 0};  // {batch, head, token}
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  int64_t o_stride[3] = {0, 0, 0};
  float scale = 0.f;  // 0 means 1/sqrt(head_dim)
};

cudaError_t attention_fwd(const AttentionArgs& args, cudaStream_t stream);
cudaError_t attention_fwd_sm90(const AttentionArgs& args, cudaStream_t stream);  // the fastest variant measured

// The sm90 schedules (docs/kernels.md), selectable for benchmarks.
enum class AttentionVariant : int { kSimple = 0, kPipelined = 1, kPingPong = 2 };
namespace sm90 {
cudaError_t attention_fwd_sm90_variant(const AttentionArgs& args, cudaStream_t stream, AttentionVariant variant);
}
cudaError_t attention_fwd_sm80(const AttentionArgs& args, cudaStream_t stream);

}  // namespace fluxk
