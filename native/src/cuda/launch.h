// Kernel launchers (host functions defined in the .cu files). They enqueue work on `stream` and return; no host
// synchronisation, no allocation except through the caching allocator (workspaces), so a sequence of them can be
// captured in a CUDA graph. Pointers are device pointers; shapes have been checked by the op layer.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "../core/dtype.h"
#include "../ops/types.h"

namespace fl::cuda {

constexpr int kMaxDims = 8;

// Up to 4 operands iterated over one shape, each with its own element strides (0 = broadcast).
struct Strided {
  int nd = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[4][kMaxDims] = {};
};

// ---- elementwise (elementwise.cu) -------------------------------------------------------------------------
void convert(const void* src, DType sd, void* dst, DType dd, int64_t n, cudaStream_t s);
void fill(void* dst, DType dt, int64_t n, double value, cudaStream_t s);
void unary(const void* x, void* y, DType dt, int64_t n, UnaryOp op, float a, float b, cudaStream_t s);
// operands: 0 = out (contiguous), 1 = a, 2 = b
void binary(void* out, const void* a, const void* b, DType dt, const Strided& it, BinaryOp op, cudaStream_t s);
// operands: 0 = out, 1 = x, 2 = shift, 3 = scale
void modulate(void* out, const void* x, const void* shift, const void* scale, DType dt, const Strided& it,
              cudaStream_t s);

// ---- layout (layout.cu) -----------------------------------------------------------------------------------
// operands: 0 = dst, 1 = src
void strided_copy(void* dst, const void* src, DType dt, const Strided& it, cudaStream_t s);
void embedding(const void* weight, DType wdt, int64_t V, int64_t D, const void* ids, DType idt, int64_t n, void* out,
               cudaStream_t s);
void rope(const void* x, void* out, DType dt, int64_t rows, int64_t L, int64_t D, const void* cos, const void* sin,
          DType cdt, cudaStream_t s);
void upsample_nearest2x(const void* x, void* out, DType dt, int64_t planes, int64_t H, int64_t W, cudaStream_t s);

// ---- normalisation (norm.cu) ------------------------------------------------------------------------------
void layer_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, const void* b, DType pdt,
                float eps, cudaStream_t s);
void rms_norm(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* w, DType pdt, float eps,
              cudaStream_t s);
// `workspace` holds group_norm_workspace_floats(...) floats; `silu` applies x·sigmoid(x) after.
int64_t group_norm_workspace_floats(int64_t B, int64_t C, int64_t spatial, int64_t groups);
void group_norm(const void* x, void* out, DType dt, int64_t B, int64_t C, int64_t spatial, int64_t groups,
                const void* w, const void* b, DType pdt, float eps, bool silu, float* workspace, cudaStream_t s);
void softmax(const void* x, void* out, DType dt, int64_t outer, int64_t L, int64_t inner, cudaStream_t s);

// ---- matrix products (gemm_*.cu) -------------------------------------------------------------------------
// out[M,N] = epi(x[M,K] · w[N,K]ᵀ + bias[N]); out, bias, gate and residual in x's dtype (portable tiled GEMM).
void linear(const void* x, DType xdt, const void* w, DType wdt, const void* bias, void* out, int64_t M, int64_t N,
            int64_t K, const LinearEpilogue& epi, cudaStream_t s);
// `w.absmax` must be the decoded float absmax (see nf4_absmax).
void linear_nf4(const void* x, DType xdt, const NF4View& w, const void* bias, void* out, int64_t M, int64_t N,
                int64_t K, const LinearEpilogue& epi, cudaStream_t s);
// Batched out[b] = a[b] · b[b]; batch offsets (in matrices) of a and b follow `batch` (operand 1 = a, 2 = b).
void matmul(const void* a, const void* b, void* out, DType dt, int64_t M, int64_t N, int64_t K, const Strided& batch,
            cudaStream_t s);
// out [B,Cout,OH,OW] = conv(x [B,Cin,H,W], w [Cout,Cin,KH,KW]) + bias; with `upsample` the conv reads x
// upsampled 2x nearest ([B,Cin,2H,2W]; OH/OW follow from that size).
struct ConvShape {
  int64_t B, Cin, H, W, Cout, KH, KW, OH, OW, stride, padding;
  bool upsample = false;
};
// Group norm (+SiLU) of a convolution's input (ops.conv2d's `norm`): groups over Cin, weight/bias of param_dtype.
struct ConvNorm {
  int64_t groups;
  const void* weight;
  const void* bias;
  DType param_dtype;
  float eps;
  bool silu;
};
void conv2d(const void* x, const void* w, const void* bias, void* out, DType dt, const ConvShape& c,
            const ConvNorm* norm, cudaStream_t s);

// ---- attention (attention.cu) -----------------------------------------------------------------------------
struct AttnShape {
  int64_t B, H, Lq, Lk, D;
  int64_t bias_stride[4];  // [b, h, q, k] element strides of the bias (0 = broadcast)
  int64_t mask_stride[4];
  AttnLayout layout;       // all zero: contiguous [B,H,L,D] operands
};
void sdpa(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& a, const void* bias,
          DType bias_dt, const void* mask, DType mask_dt, float scale, cudaStream_t s);

// ---- NF4 (nf4.cu) -----------------------------------------------------------------------------------------
void nf4_quantize(const void* w, DType dt, int64_t n, int64_t blocksize, uint8_t* packed, float* absmax,
                  cudaStream_t s);
// The absmax per block as float (double quant decoded).
void nf4_absmax(const NF4View& v, float* out, cudaStream_t s);
void nf4_dequantize(const NF4View& v, const float* absmax, void* out, DType dt, cudaStream_t s);
void double_quant(const float* absmax, int64_t blocks, int64_t nested_blocksize, const float* dyn_map, uint8_t* codes,
                  float* nested_absmax, float* offset, float* centered_workspace, cudaStream_t s);

// ---- fused ops (fused.cu) ---------------------------------------------------------------------------------
// out = layerNorm(x) (no affine) * (1 + scale[g]) + shift[g] for row r of `rows`, g = r / rows_per_group; shift and
// scale in x's dtype, [groups, C].
void layer_norm_modulate(const void* x, void* out, DType dt, int64_t rows, int64_t C, const void* shift,
                         const void* scale, int64_t rows_per_group, float eps, cudaStream_t s);
// x, out [B*L*H rows of D]: rmsNorm over D with weight (pdt), then Flux's interleaved rope with cos/sin [L,D] (cdt).
void qk_norm_rope(const void* x, void* out, DType dt, int64_t rows, int64_t L, int64_t H, int64_t D, const void* w,
                  DType pdt, const void* cos, const void* sin, DType cdt, float eps, cudaStream_t s);
// One token stream of joint_qkv: qkv [B,L,3·H·D] (dtype of the call), its rows start at `offset` of the outputs,
// QK-norm weights [D] and rotary rows cos/sin [L,D] of any float dtype.
struct JointQkvStream {
  const void* qkv;
  int64_t L, offset;
  const void* norm_q;
  DType norm_q_dtype;
  const void* norm_k;
  DType norm_k_dtype;
  const void* cos;
  const void* sin;
  DType table_dtype;
};
// q, k, v [B,Ltot,H,D]: each stream's q and k rows as qk_norm_rope computes them (bitwise), v rows copied.
void joint_qkv(const JointQkvStream* streams, int count, DType dt, int64_t B, int64_t Ltot, int64_t H, int64_t D,
               float eps, void* q, void* k, void* v, cudaStream_t s);
// out [B, dim] float32 from t [B] (tdt): diffusers' get_timestep_embedding.
void timestep_embedding(const void* t, DType tdt, int64_t B, int64_t dim, bool flip_sin_to_cos,
                        float downscale_freq_shift, float scale, float max_period, float* out, cudaStream_t s);

// ---- random numbers (random.cu) ---------------------------------------------------------------------------
// n normal samples mean + std * N(0,1) from Philox4x32-10 (core/philox.h) keyed by seed, into a float dtype.
void randn_philox(void* out, DType dt, int64_t n, uint64_t seed, float mean, float std, cudaStream_t s);

// Which kernel served each routed op since the last reset (diagnostics: tests and benchmarks print them).
enum class Route : int {
  LinearFluxkSm90, LinearFluxkSm80, LinearFluxkGemv, LinearPortable, LinearF32SplitSm90, LinearF32SplitSm80,
  LinearNf4FluxkSm90, LinearNf4FluxkSm80, LinearNf4FluxkGemv, LinearNf4ConcatFluxkGemv, LinearNf4Portable, LinearNf4DequantizedSm90,
  LinearNf4DequantizedSm80, LinearJointQkvFluxkSm90, LinearNf4JointQkvFluxkSm90, LinearTwoPartFluxkSm90,
  LinearNf4TwoPartDequantizedSm90, LinearNf4TwoPartFluxkSm90, LinearNf4PairFluxkSm90,
  LinearNf4JointQkvPairFluxkSm90, LinearNf4JointQkvWithLinearFluxkSm90,
  SdpaFluxkSm90, SdpaFluxkSm80, SdpaPortable,
  SdpaFluxkBias64, SdpaFluxkWide, Conv2dFluxkSm80, Conv2dPortable,
  kCount
};
void count_route(Route r);

// ---- fluxk routes (fluxk_routes.cpp): the tensor-core kernels of src/sm90 and src/sm80 -------------------------
// Each returns true when it enqueued the op, false when the fluxk kernels decline it (dtype, shape, alignment,
// device), in which case the caller runs the portable launcher above. Other CUDA errors throw.
bool fluxk_linear(const void* x, DType xdt, const void* w, DType wdt, const void* bias, void* out, int64_t M,
                  int64_t N, int64_t K, const LinearEpilogue& epi, cudaStream_t s);
// The NF4 weight dequantized into a bf16 workspace [N, K] (the values bitsandbytes' dequantize_4bit gives, as its
// own large-batch path does), then the bf16 ping-pong GEMM, whose epilogue overlaps the next tile's main loop where
// the fused NF4 kernel's does not. Taken for M >= 4096 with a gelu or gate/residual epilogue, where it measured
// faster on an H100 (2026-11-26, fluxlab bench --profile, bench/results/profiles/*-h100-cd21096-nf4-*.log; fused ->
// dequantized per call): [4608,3072]x[12288,3072]ᵀ
// +gelu 0.79 -> 0.64 ms, [4608,12288]x[3072,12288]ᵀ+gate 0.70 -> 0.61 ms, [4096,3072]x[12288,3072]ᵀ+gelu 0.68 ->
// 0.58 ms. It lost elsewhere: bias only ([4608,3072]x[9216,3072]ᵀ 0.44 -> 0.54 ms) and below 4096 rows (the
// ~30 µs of dequantizing 94 MB, and the bf16 weight's 4x traffic at 512 rows): 1024-row gates and gelu below 4096
// rows lost (3.06 -> 3.48, 9.05 -> 9.57 ms per step; bench/results/profiles/2026-11-26-h100-8ae5232-nf4-dequantized-
// from-{4096,1024}-rows.log). Gated projections of 1536 rows took it too until the fused kernel's fragment build,
// queued k-blocks and split last round (36cc9f4 … 6792ab4): since then, interleaved on an H100 (ab.py, bench/kernels/
// results/2026-11-26-h100-7ebd8c6-nf4-fused-vs-dequantized.txt), [1536,15360]x[3072,15360]ᵀ+gate (the 512² single
// blocks' proj_out) runs fused in 0.271 ms against 0.257 for the bf16 GEMM alone plus ~0.034 of dequantizing;
// [4096,12288]x[3072,12288]ᵀ+gate 0.546 against 0.508 + 0.033 and +gelu at 4608 rows 0.627 against 0.577 + 0.033.
constexpr int64_t kNf4DequantizeMinRows = 4096;
bool fluxk_linear_nf4_dequantized_applies(const void* x, DType xdt, const NF4View& w, const void* bias, void* out,
                                          int64_t M, const LinearEpilogue& epi);
bool fluxk_linear_nf4_dequantized(const void* x, const NF4View& w, const float* absmax, void* weight_bf16,
                                  const void* bias, void* out, int64_t M, const LinearEpilogue& epi, cudaStream_t s);
// x in two parts along K (x1 [M, k1], x2 [M, K - k1], both contiguous): the product with their concatenation on the
// sm90 ping-pong GEMM, which reads each k-block from its part (fluxk GemmArgs::a2), with a bf16 weight [N, K] (an
// NF4 weight dequantized into one first). `_applies` checks without enqueuing (before a dequantization).
bool fluxk_linear_two_part_applies(const void* x1, int64_t k1, const void* x2, DType xdt, const void* bias, void* out,
                                   int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi);
// The same with an NF4 weight on the fused sm90 NF4 GEMM (M > 16), where it is not dequantized (M below
// kNf4DequantizeMinRows or no gelu/gate epilogue): the bits of fluxk_linear_nf4 over the concatenation.
bool fluxk_linear_nf4_two_part_applies(const void* x1, int64_t k1, const void* x2, DType xdt, const NF4View& w,
                                       const void* bias, void* out, int64_t M, const LinearEpilogue& epi);
bool fluxk_linear_nf4_two_part(const void* x1, int64_t k1, const void* x2, DType xdt, const NF4View& w,
                               const void* bias, void* out, int64_t M, const LinearEpilogue& epi, cudaStream_t s);
bool fluxk_linear_two_part(const void* x1, int64_t k1, const void* x2, DType xdt, const void* w, const void* bias,
                           void* out, int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi, Route served_as,
                           cudaStream_t s);
// `w` as stored (plain or double-quant absmax).
bool fluxk_linear_nf4(const void* x, DType xdt, const NF4View& w, const void* bias, void* out, int64_t M, int64_t N,
                      int64_t K, const LinearEpilogue& epi, cudaStream_t s);
// Two NF4 linears of the same N, K and epilogue kind (out = epi(x·dequant(w)ᵀ + bias) each) in one launch
// (gemm_nf4_sm90_pair), where each alone would run the fused sm90 NF4 GEMM (more than 16 rows, not dequantized
// first); the same values up to the float32 order of the split last round. Declines (false, nothing enqueued)
// otherwise.
struct Nf4LinearItem {
  const void* x;
  DType xdt;
  NF4View w;
  const void* bias;
  void* out;
  int64_t M;
  LinearEpilogue epi;
};
bool fluxk_linear_nf4_pair(const Nf4LinearItem& first, const Nf4LinearItem& second, cudaStream_t s);
// Linears of one x side by side (ops.linearConcat): part i's NF4 weight (as stored) and bias into columns
// [col, col + rows) of out [M, ldc], on the skinny kernel in as few launches as it takes (gemv_nf4_concat), each
// output with the bits fluxk_linear_nf4 gives it. Declines (false, nothing enqueued) unless x is bf16, M <= 16 and
// every weight and column range suits that kernel.
struct Nf4ConcatPart {
  NF4View w;
  const void* bias = nullptr;
  int64_t col = 0;
};
bool fluxk_linear_nf4_concat(const void* x, DType xdt, const std::vector<Nf4ConcatPart>& parts, void* out, int64_t M,
                             int64_t ldc, cudaStream_t s);
// float32 x with a bf16 weight (a float32 layer whose values are bf16: nn.ts stores it so): fluxk's exact
// 3×bf16 split GEMM, the float32 product up to summation order. The workspace is
// fluxk_linear_f32_workspace_elems(M, N, K, epi) bf16 values; 0 there means the route declines this shape or
// epilogue (only a float32 bias is fused), so no workspace is needed.
int64_t fluxk_linear_f32_workspace_elems(int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi);
bool fluxk_linear_f32(const float* x, const void* w_bf16, const float* bias, float* out, int64_t M, int64_t N,
                      int64_t K, const LinearEpilogue& epi, void* workspace, cudaStream_t s);
// One stream of joint_qkv computed from its projection inputs by the GEMM itself (fluxk's kQkNormRope epilogue): x
// [M = B·stream.L, K] times the fused QKV weight [3·H·D, K] (bf16 `w`, or `nf4` as stored) plus bias, written into
// q, k, v [B, Ltot, H, D] bitwise as linear followed by joint_qkv writes them. Declines (false) unless x, the
// outputs and the norm weights are bf16, the rotary tables float32, D = 128 and the device runs the sm90 kernels.
struct JointQkvOutputs {
  void* q;
  void* k;
  void* v;
  DType dtype;
  int64_t Ltot, H, D;
  float eps;
};
bool fluxk_linear_joint_qkv(const void* x, DType xdt, const void* w, DType wdt, const NF4View* nf4, const void* bias,
                            int64_t M, int64_t K, const JointQkvStream& stream, const JointQkvOutputs& out,
                            cudaStream_t s);
// Two streams of joint_qkv projected by their NF4 weights in one launch (gemm_nf4_sm90_pair: Flux's text and image
// streams), where each alone would take fluxk_linear_joint_qkv's NF4 way; the same values up to the float32 order of
// the split last round. Declines (false, nothing enqueued) otherwise.
struct JointQkvProjection {
  const void* x;
  DType xdt;
  NF4View w;
  const void* bias;
  int64_t M, K;
  JointQkvStream stream;
};
bool fluxk_linear_joint_qkv_nf4_pair(const JointQkvProjection& first, const JointQkvProjection& second,
                                     const JointQkvOutputs& out, cudaStream_t s);
// One stream of joint_qkv and a GELU linear of the same x (Flux's single blocks: QKV and MLP up), both NF4, in one
// launch (gemm_nf4_sm90_pair), where each alone would take the fused NF4 GEMM; the same values up to the float32 order
// of the split last round. Declines (false, nothing enqueued) otherwise.
bool fluxk_joint_qkv_nf4_with_linear(const JointQkvProjection& qkv, const Nf4LinearItem& linear,
                                     const JointQkvOutputs& out, cudaStream_t s);
bool fluxk_sdpa(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& a, bool has_bias,
                bool has_mask, float scale, cudaStream_t s);
// bf16/f16 head_dim 64 with any bias/mask (T5, CLIP) and head_dim >= 256 (the VAE mid block): src/sm80/vae_t5.h.
bool fluxk_sdpa_bias_wide(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& a,
                          const void* bias, DType bias_dt, const void* mask, DType mask_dt, float scale,
                          cudaStream_t s);

}  // namespace fl::cuda
