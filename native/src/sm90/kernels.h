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
//   kQkNormRope:   the fused QKV projection of one token stream of Flux's joint attention (N = 3·heads·128,
//                  columns (part, head, d), part 0 q, 1 k, 2 v), written straight into the joint attention
//                  inputs q, k, v [B, joint_tokens, heads, 128] at rows joint_offset + l (row r = b·tokens + l):
//                  y = bf16(acc + bias[c]) as a bf16 projection stores it; q and k rows are RMS-normed over d
//                  with norm_q / norm_k and eps, then rotated by Flux's interleaved RoPE (rope_cos / rope_sin
//                  [tokens, 128] float32), rounded once; v rows are y. Bitwise what the addon's joint_qkv
//                  computes from the stored projection. C (c / ldc) is unused. sm90 only: the ping-pong bf16
//                  GEMM and the NF4 GEMM (cluster 0/1); the other paths decline it.
// bias may be null (no bias). out is rounded to bf16 once, at the end.
enum class Epilogue : int { kNone = 0, kGeluTanh = 1, kGateResidual = 2, kQkNormRope = 3 };

struct EpilogueArgs {
  Epilogue kind = Epilogue::kNone;
  const __nv_bfloat16* bias = nullptr;      // [N]
  const float* bias_f32 = nullptr;          // [N], float32 output (GemmArgs::c_f32) only
  const __nv_bfloat16* residual = nullptr;  // [M, ldr]; may alias the output (read before written)
  int64_t ldr = 0;
  const __nv_bfloat16* gate = nullptr;      // [M / gate_rows_per_batch, ldg]
  int64_t ldg = 0;
  int gate_rows_per_batch = 1;
  // kQkNormRope only
  __nv_bfloat16* q = nullptr;  // [B, joint_tokens, heads, 128] each, 16-byte aligned
  __nv_bfloat16* k = nullptr;
  __nv_bfloat16* v = nullptr;
  const __nv_bfloat16* norm_q = nullptr;  // [128]
  const __nv_bfloat16* norm_k = nullptr;
  const float* rope_cos = nullptr;  // [tokens, 128]
  const float* rope_sin = nullptr;
  int heads = 0, tokens = 0, joint_tokens = 0, joint_offset = 0;
  float eps = 0.f;
};

// The kQkNormRope arguments for an M x N product (what every path that runs it requires).
inline bool qk_norm_rope_args_valid(const EpilogueArgs& e, int m, int n) {
  const auto aligned = [](const void* p) { return p && (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  if (!aligned(e.q) || !aligned(e.k) || !aligned(e.v) || !aligned(e.norm_q) || !aligned(e.norm_k) ||
      !aligned(e.rope_cos) || !aligned(e.rope_sin))
    return false;
  if (e.heads < 1 || static_cast<int64_t>(n) != 3 * 128 * static_cast<int64_t>(e.heads)) return false;
  if (e.tokens < 1 || m % e.tokens != 0 || e.joint_offset < 0 || e.joint_offset > e.joint_tokens - e.tokens)
    return false;
  return !(e.bias && (reinterpret_cast<uintptr_t>(e.bias) & 15));
}

// sm90 bf16 GEMM schedules (docs/kernels.md). kCooperative: both consumer warpgroups share a
// 128 x tile_n tile, then both run the epilogue. kPingPong: each consumer warpgroup owns whole
// 128 x 128 tiles and they alternate, so one's epilogue overlaps the other's main loop (bf16
// output, a_parts 1). kWide: three consumer warpgroups share 192 x 192 tiles (bf16 output, a_parts 1, not the QK
// epilogue; cluster 2 pairs them). kAuto picks by measurement.
enum class GemmSchedule : int { kAuto = 0, kCooperative = 1, kPingPong = 2, kWide = 3 };

// C[M,N] = epilogue(A[M,K] · W[N,K]ᵀ). Row-major, unit stride along K and N.
// Requires K % 8 == 0, N % 8 == 0, lda/ldw/ldc/ldr multiples of 8, 16-byte aligned pointers.
struct GemmArgs {
  const __nv_bfloat16* a = nullptr;
  int64_t lda = 0;
  const __nv_bfloat16* w = nullptr;
  int64_t ldw = 0;
  __nv_bfloat16* c = nullptr;
  int64_t ldc = 0;
  // Instead of c: C in float32, acc + bias_f32 stored unrounded (epilogue kNone; cluster 0 or 1).
  float* c_f32 = nullptr;
  int m = 0, n = 0, k = 0;
  // A holds a_parts bf16 parts of every 64-column block of one operand side by side: columns
  // [64·(b·a_parts + p), +64) are part p of k-block b (zero past k), so A is [M, a_parts·K64] with
  // K64 = k rounded up to 64 and lda >= that, and every part multiplies the same W block:
  // C = Σ_p A_p·Wᵀ in one fp32 accumulator (the split float32 operand of gemm_f32_bf16w). 1: plain A.
  int a_parts = 1;
  // A in two parts along K, multiplied as their concatenation without building it: columns [0, k_split) of A are
  // a's (lda), columns [k_split, k) are a2's (lda2). k_split % 64 == 0; a2 16-byte aligned, lda2 % 8 == 0.
  // Flux's single-block proj_out over [attention | MLP]. sm90 ping-pong only (bf16 output, m >= 512); other
  // paths decline it.
  const __nv_bfloat16* a2 = nullptr;
  int64_t lda2 = 0;
  int k_split = 0;
  EpilogueArgs epi;
  int tile_n = 0;   // sm90: 0 picks a tile width; 128, 192 or 256 force one (for benchmarks; with a forced
                    // kPingPong schedule, 128 or 192, 128 only for kQkNormRope)
  // sm90: 2 = CTA pairs with vertically adjacent tiles sharing W tiles by TMA multicast, 1 = independent CTAs,
  // 0 = by measurement (docs/kernels.md): pairs for ping-pong GEMMs of >= 4096 rows with the plain or QK-norm/RoPE
  // epilogue, independent CTAs otherwise.
  int cluster = 0;
  GemmSchedule schedule = GemmSchedule::kAuto;  // sm90: force a schedule (benchmarks); kAuto: ping-pong
                                                // for m >= 512, except that c_f32, a_parts > 1 or a
                                                // forced tile_n mean kCooperative
  // sm90 ping-pong with independent CTAs: the split last round's workspace (split_k.cuh), as Nf4GemmArgs's.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

cudaError_t gemm_bf16(const GemmArgs& args, cudaStream_t stream);
cudaError_t gemm_bf16_sm90(const GemmArgs& args, cudaStream_t stream);
size_t gemm_bf16_sm90_workspace_bytes(const GemmArgs& args);  // 0: no split pays (or not sm90, or not ping-pong)
cudaError_t gemm_bf16_sm80(const GemmArgs& args, cudaStream_t stream);
// The checks every gemm_bf16 path makes before enqueuing (cudaErrorInvalidValue when they fail).
cudaError_t gemm_bf16_check(const GemmArgs& args);
// The skinny path, m <= 16, any sm_80+ (streams W once: Flux's modulation linears at M = 1): gemm_bf16_check's
// requirements plus lda, ldw >= k, ldc >= n; bf16 output, a_parts 1; kNone, kGeluTanh or kGateResidual.
// tile_n, cluster and schedule are ignored.
cudaError_t gemv_bf16(const GemmArgs& args, cudaStream_t stream);

// C[M,N] (float32) = X[M,K] (float32) · W[N,K]ᵀ (bf16) + bias (float32): the float32 GEMM of a weight
// whose values are bf16, on bf16 tensor cores. X is split exactly into three bf16 parts by truncation
// (x1 = the top 8 significant bits of x, x2 = the next 8 of x − x1, x3 = x − x1 − x2, which fits in 8
// bits), so every product xp·w is exact and the fp32 accumulator sums them: the float32 result up to
// summation order. Exceptions: non-finite x gives x1 = x and zero tails (inf·w as float32 gives);
// tails below bf16's subnormal step 2^-133 are lost (|x| < 2^-110: an absolute error < 2^-133·|w|).
// workspace: split_f32_workspace_elems(m, k) bf16 values (the parts, laid out as GemmArgs::a_parts
// = 3 wants). K % 8 == 0, N % 8 == 0, ldw/ldc multiples of 8; x rows of ldx floats, 16-byte aligned
// pointers. The float32 split is written, then one GEMM of K' = 3·K64 runs (docs/kernels.md).
struct GemmF32Args {
  const float* x = nullptr;
  int64_t ldx = 0;
  const __nv_bfloat16* w = nullptr;
  int64_t ldw = 0;
  const float* bias = nullptr;  // [N] or null
  float* c = nullptr;
  int64_t ldc = 0;
  int m = 0, n = 0, k = 0;
  __nv_bfloat16* workspace = nullptr;
};

inline int64_t split_f32_ld(int64_t k) { return 3 * ((k + 63) / 64 * 64); }  // row length of the parts
inline int64_t split_f32_workspace_elems(int64_t m, int64_t k) { return m * split_f32_ld(k); }
cudaError_t gemm_f32_bf16w(const GemmF32Args& args, cudaStream_t stream);
cudaError_t gemm_f32_bf16w_sm90(const GemmF32Args& args, cudaStream_t stream);
cudaError_t gemm_f32_bf16w_sm80(const GemmF32Args& args, cudaStream_t stream);
// The split alone: x [M,K] float32 → out [M, 3·K64] bf16 in the a_parts = 3 layout (any sm_80+).
cudaError_t split_f32_bf16x3(const float* x, int64_t ldx, int m, int k, __nv_bfloat16* out, cudaStream_t stream);
// Checks f, splits x into f.workspace and fills *gemm: the bf16 GEMM over the parts (a_parts 3, float32 store) that
// the gemm_f32_bf16w_* entry points then run. Nothing is enqueued when m or n is 0.
cudaError_t split_f32_gemm_args(const GemmF32Args& f, GemmArgs* gemm, cudaStream_t stream);

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
  // gemm_nf4_sm90 only (gemv_nf4 and gemm_nf4_sm80 refuse it): A in two parts along K, as GemmArgs::a2: columns
  // [0, k_split) of A are a's (lda >= k_split), columns [k_split, w.k) are a2's (lda2). k_split % 64 == 0; a2 16-byte
  // aligned, lda2 % 8 == 0; not with kQkNormRope.
  const __nv_bfloat16* a2 = nullptr;
  int64_t lda2 = 0;
  int k_split = 0;
  // sm90, independent CTAs: where the tiles' last round would leave SMs idle, the K range of that round's tiles is
  // split over all SMs (stream-K, split_k.cuh), the pieces' float32 sums meeting in this workspace of
  // gemm_nf4_sm90_workspace_bytes(args) bytes (16-byte aligned; its counters are zeroed on the stream). Null keeps
  // whole tiles. The split depends only on the shape and the SM count, and pieces are added in K order: the same
  // inputs give the same bits on the same GPU model.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

cudaError_t gemm_nf4(const Nf4GemmArgs& args, cudaStream_t stream);       // m <= 16: gemv_nf4
cudaError_t gemm_nf4_sm90(const Nf4GemmArgs& args, cudaStream_t stream);  // large m, wgmma
size_t gemm_nf4_sm90_workspace_bytes(const Nf4GemmArgs& args);            // 0: no split pays (or not sm90)
cudaError_t gemm_nf4_sm80(const Nf4GemmArgs& args, cudaStream_t stream);  // large m, mma.sync
cudaError_t gemv_nf4(const Nf4GemmArgs& args, cudaStream_t stream);       // m <= 16, any sm_80+
// Two products of the same K in one launch of the sm90 kernel, their tiles sharing the rounds: the same N and
// epilogue kind (Flux's double blocks: the image and text streams through their own weights; at 512² the text
// stream's 512 rows alone fill a round and a sliver), or the same M with a kQkNormRope then a kGeluTanh epilogue (a
// single block's QKV projection and MLP up of one x). Each is computed as gemm_nf4_sm90 computes it, except that
// where the last round's tiles are split along K the pieces are the pair's: float32 sums in another order there.
// Token tiles of 256, no activations in two parts, no clusters; the split workspace is a's
// (gemm_nf4_sm90_pair_workspace_bytes).
cudaError_t gemm_nf4_sm90_pair(const Nf4GemmArgs& a, const Nf4GemmArgs& b, cudaStream_t stream);
size_t gemm_nf4_sm90_pair_workspace_bytes(const Nf4GemmArgs& a, const Nf4GemmArgs& b);
bool nf4_args_valid(const Nf4GemmArgs& args);  // the argument checks every NF4 launcher makes (sm80/gemv_nf4.cu)

// Several NF4 linears of the same x side by side in one launch of the skinny kernel: columns [col, col + w.n) of
// C[m, ldc] = x · dequant(w)ᵀ + bias for each part (Flux's adaptive-norm projections of silu(temb): 77 GEMVs a
// step, each too short to reach the bandwidth one long launch does). Every output has the bits gemv_nf4 gives it.
struct Nf4GemvPart {
  Nf4Weight w;                             // w.k equal across parts
  const __nv_bfloat16* bias = nullptr;     // [w.n] or null
  int64_t col = 0;                         // first output column; % 8 == 0
};
constexpr int kNf4GemvConcatMaxParts = 32;  // keeps the kernel's parameters under the classic 4 KB
struct Nf4GemvConcatArgs {
  const __nv_bfloat16* a = nullptr;  // [m, lda], 16-byte aligned
  int64_t lda = 0;
  int m = 0;                         // <= 16
  __nv_bfloat16* c = nullptr;        // [m, ldc], 16-byte aligned
  int64_t ldc = 0;
  int parts = 0;                     // 1 .. kNf4GemvConcatMaxParts
  Nf4GemvPart part[kNf4GemvConcatMaxParts];
  int cta_begin[kNf4GemvConcatMaxParts + 1] = {};  // set by gemv_nf4_concat
};
cudaError_t gemv_nf4_concat(const Nf4GemvConcatArgs& args, cudaStream_t stream);  // any sm_80+

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
  // sm90: where the (batch, head, 128-query) units leave the last round of SMs at most half busy, the leftover
  // units' key blocks are split over the idle SMs and merged by a second kernel, the pieces meeting in this
  // workspace of attention_fwd_sm90_workspace_bytes(args) bytes (16-byte aligned). Null runs whole units only.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

cudaError_t attention_fwd(const AttentionArgs& args, cudaStream_t stream);
cudaError_t attention_fwd_sm90(const AttentionArgs& args, cudaStream_t stream);  // the fastest variant measured
size_t attention_fwd_sm90_workspace_bytes(const AttentionArgs& args);           // 0: no split pays (or not sm90)

// The sm90 schedules (docs/kernels.md), selectable for benchmarks.
enum class AttentionVariant : int { kSimple = 0, kPipelined = 1, kPingPong = 2 };
namespace sm90 {
cudaError_t attention_fwd_sm90_variant(const AttentionArgs& args, cudaStream_t stream, AttentionVariant variant);
}
cudaError_t attention_fwd_sm80(const AttentionArgs& args, cudaStream_t stream);

}  // namespace fluxk
