// fluxk kernels for the VAE decoder and the text encoders (T5, CLIP): implicit-GEMM 2-D convolution on tensor
// cores, group norm with an optional fused SiLU, layout transposes, attention with head_dim 64 and an additive
// bias / mask (T5's relative position bias), and the wide-head attention of the VAE mid block (head_dim 512)
// as fp32-score GEMMs around a row softmax. Every kernel is mma.sync (sm_80+), so the same code runs on Ampere,
// Ada and Hopper; docs/kernels.md has the designs and the napkin math.
//
// Launcher contract (as kernels.h): arguments are checked, nothing is allocated (callers pass workspaces),
// the host never synchronises, work goes on `stream` only (CUDA-graph capture safe). Unsupported shapes,
// dtypes or alignments return cudaErrorInvalidValue, a device below sm_80 cudaErrorNotSupported; callers then
// use their portable kernels.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace fluxk {

enum class ElemType : int { kF32 = 0, kBF16 = 1, kF16 = 2, kU8 = 3, kI32 = 4, kI64 = 5 };

struct GroupNormArgs;  // group norm section below

// ---- convolution ----------------------------------------------------------------------------------------
// out = conv2d(x', w) + bias, fp32 accumulation, one rounding. x' = x, or x upsampled 2x nearest
// (x'[y][x] = x[y/2][x/2]) when upsample2x is set, so the upsampled tensor never exists.
//   x    NHWC [batch, in_h, in_w, cin], consecutive pixels x_pixel_stride elements apart (>= cin)
//   w    [cout, kh, kw, cin], rows w_row_stride elements apart (>= kh*kw*cin)
//   bias [cout] in `dtype`, or null
//   out  kNHWC: [batch, out_h, out_w, cout] with rows (pixels) out_row_stride elements apart;
//        kNCHW: [batch, cout, out_h, out_w] contiguous.
// dtype (x, w, bias) is kBF16 or kF16; out_dtype is dtype or kF32. cin, x_pixel_stride and w_row_stride
// must be multiples of 8 and x, w 16-byte aligned (the loader moves 16-byte chunks of 8 channels).
// split_k > 1 (kF32 NHWC output without bias only): slice z of the reduction writes
// out + z * out_split_stride; the caller sums the slices (splitk_reduce).
// A GEMM C[M,N] = A[M,K]·W[N,K]ᵀ is the 1x1 case: batch 1, in_h = out_h = 1, in_w = out_w = M, cin = K.
enum class ConvLayout : int { kNHWC = 0, kNCHW = 1 };

struct Conv2dArgs {
  const void* x = nullptr;
  int64_t x_pixel_stride = 0;
  const void* w = nullptr;
  int64_t w_row_stride = 0;
  const void* bias = nullptr;
  void* out = nullptr;
  ConvLayout out_layout = ConvLayout::kNHWC;
  int64_t out_row_stride = 0;  // kNHWC only
  ElemType dtype = ElemType::kBF16;
  ElemType out_dtype = ElemType::kBF16;
  int batch = 0, in_h = 0, in_w = 0, cin = 0, cout = 0;
  int kh = 1, kw = 1, stride = 1, pad = 0;
  int out_h = 0, out_w = 0;
  bool upsample2x = false;
  int split_k = 1;
  int64_t out_split_stride = 0;  // elements
};

cudaError_t conv2d_implicit_gemm(const Conv2dArgs& args, cudaStream_t stream);

// The same convolution on PyTorch's layouts: x [batch, cin, in_h, in_w], w [cout, cin, kh, kw], out [batch, cout,
// out_h, out_w] (NCHW, contiguous), any cin and any alignment. x and w are transposed into the workspace
// (channels padded to a multiple of 8 with zeros; a 1x1 weight with cin % 8 == 0 is used as it is), then
// conv2d_implicit_gemm writes the NCHW output from its epilogue. The transposed x is held a band of output rows
// at a time, at most `band_bytes` of it (0: kConvBandBytes; one output row's input when that alone is more), so
// the workspace stays small beside a 512 MiB activation at the VAE's 1024² level; the result is the same.
inline constexpr int64_t kConvBandBytes = int64_t(64) << 20;
struct Conv2dNchwArgs {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;
  void* out = nullptr;
  ElemType dtype = ElemType::kBF16;
  int batch = 0, cin = 0, in_h = 0, in_w = 0, cout = 0;
  int kh = 1, kw = 1, stride = 1, pad = 0;
  int out_h = 0, out_w = 0;
  bool upsample2x = false;
  size_t band_bytes = 0;
  // Optional: group norm (+SiLU) of x first, applied as x is transposed (the normalised x is never stored). Its
  // groups, weight, bias, param_dtype, eps, silu are used; workspace holds group_norm_workspace_floats(batch, cin,
  // in_h * in_w, groups) floats.
  const GroupNormArgs* norm = nullptr;
};
size_t conv2d_nchw_workspace_bytes(const Conv2dNchwArgs& args);
cudaError_t conv2d_nchw(const Conv2dNchwArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// out[b][c][r] = in[b][r][c] for r < rows, 0 for rows <= r < rows_padded (c < cols); 2-byte elements
// (bf16/f16). Strides in elements. NCHW -> NHWC activations (rows = channels, cols = pixels, channels padded
// to a multiple of 8 with zeros), [Cout][Cin][kh*kw] -> [Cout][kh*kw][Cin] weights, V -> Vᵀ.
struct TransposeArgs {
  const void* in = nullptr;
  void* out = nullptr;
  int batch = 0, rows = 0, cols = 0, rows_padded = 0;
  int64_t in_batch_stride = 0, in_row_stride = 0;
  int64_t out_batch_stride = 0, out_row_stride = 0;
  // Optional: the rows are the channels of this group norm (its batch, channels, spatial, dtype describe the whole
  // tensor; group_norm_stats already ran into its workspace). Each value is normalised (+SiLU) and rounded to
  // the dtype on the way, bit for bit group_norm's output; x and out of it are unused.
  const GroupNormArgs* norm = nullptr;
};
cudaError_t transpose_2byte(const TransposeArgs& args, cudaStream_t stream);

// ---- group norm -----------------------------------------------------------------------------------------
// x [batch, channels, spatial] (NCHW flattened), groups of channels/groups consecutive channels; statistics
// in fp32 (Welford per 8-value vector, Chan's combination across threads and chunks), then
// out = (x - mean) * rstd * weight[c] + bias[c], then SiLU when `silu`. x/out dtype kF32, kBF16 or kF16;
// weight/bias (either may be null) of param_dtype, a float type.
struct GroupNormArgs {
  const void* x = nullptr;
  void* out = nullptr;
  ElemType dtype = ElemType::kBF16;
  int64_t batch = 0, channels = 0, spatial = 0;
  int64_t groups = 1;
  const void* weight = nullptr;
  const void* bias = nullptr;
  ElemType param_dtype = ElemType::kF32;
  float eps = 1e-5f;
  bool silu = false;
  // group_norm_workspace_floats(...) floats; the first 2·batch·groups hold each (batch, group)'s mean and
  // 1/sqrt(var + eps) once the statistics ran.
  float* workspace = nullptr;
};
int64_t group_norm_chunks(int64_t group_elems);
int64_t group_norm_workspace_floats(int64_t batch, int64_t channels, int64_t spatial, int64_t groups);
cudaError_t group_norm(const GroupNormArgs& args, cudaStream_t stream);
// The statistics only, into `workspace` (out unused), for a consumer that applies the norm itself (conv2d_nchw's
// `norm`).
cudaError_t group_norm_stats(const GroupNormArgs& args, cudaStream_t stream);

// ---- attention ------------------------------------------------------------------------------------------
// O = softmax(Q·Kᵀ·scale + bias, masked)·V per (batch, head), non-causal; fp32 scores and statistics.
// q/k/v/o are [B, H, L, D] in logical order with element strides {batch, head, token} (the head dim
// contiguous). bias/mask index [b, h, q, k] through their own strides (0 = broadcast); a key whose mask
// value is 0 is dropped; a query row that keeps no key yields zeros.
struct BiasAttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  ElemType dtype = ElemType::kBF16;  // q, k, v, o: kBF16 or kF16
  int batch = 0, heads = 0, seq_q = 0, seq_kv = 0, head_dim = 64;
  int64_t q_stride[3] = {0, 0, 0};
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  int64_t o_stride[3] = {0, 0, 0};
  float scale = 1.f;
  const void* bias = nullptr;
  ElemType bias_dtype = ElemType::kF32;  // a float type
  int64_t bias_stride[4] = {0, 0, 0, 0};
  const void* mask = nullptr;
  ElemType mask_dtype = ElemType::kU8;
  int64_t mask_stride[4] = {0, 0, 0, 0};
};

// Flash attention (FlashAttention-2 structure, mma.sync) for head_dim 64: T5 (relative position bias, scale 1)
// and CLIP. q/k/v strides multiples of 8, o strides even, pointers 16-byte aligned.
cudaError_t attention_bias_d64(const BiasAttentionArgs& args, cudaStream_t stream);

// Wide heads (the VAE mid block: one head of 512 over 16384 tokens): per (batch, head) and chunk of queries,
// S = Q·Kᵀ in fp32 (conv2d_implicit_gemm as a GEMM), P = softmax rows (bias/mask applied) rounded to the
// input dtype, O = P·V (split-K fp32 slices summed into O). head_dim a multiple of 8 up to 1024.
// The workspace holds the score chunk, P, Vᵀ and the split-K slices: attention_wide_workspace_bytes.
size_t attention_wide_workspace_bytes(const BiasAttentionArgs& args);
cudaError_t attention_wide(const BiasAttentionArgs& args, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream);

// Pieces of attention_wide, exposed for tests and benchmarks.
// p[r][j] = softmax_j(s[r][j]·scale + bias, mask) for j < cols, 0 for cols <= j < cols_padded; row r is query
// q0 + r of (b, h) for the bias and mask lookups.
struct ScoresSoftmaxArgs {
  const float* s = nullptr;
  int64_t lds = 0;
  void* p = nullptr;
  ElemType p_dtype = ElemType::kBF16;
  int64_t ldp = 0;
  int rows = 0, cols = 0, cols_padded = 0;
  float scale = 1.f;
  int64_t b = 0, h = 0, q0 = 0;
  const void* bias = nullptr;
  ElemType bias_dtype = ElemType::kF32;
  int64_t bias_stride[4] = {0, 0, 0, 0};
  const void* mask = nullptr;
  ElemType mask_dtype = ElemType::kU8;
  int64_t mask_stride[4] = {0, 0, 0, 0};
};
cudaError_t softmax_scores(const ScoresSoftmaxArgs& args, cudaStream_t stream);
// out[r * ldo + c] = sum over z < splits of part[z * rows * cols + r * cols + c], rounded to out_dtype.
cudaError_t splitk_reduce(const float* part, int splits, int rows, int cols, void* out, ElemType out_dtype,
                          int64_t ldo, cudaStream_t stream);

// True when the current device has mma.sync bf16 (sm_80+).
bool device_has_sm80();

}  // namespace fluxk
