// extern "C" shims over native/src/sm80/vae_t5.h so vae_t5.py can drive the VAE / text-encoder kernels with
// ctypes on torch tensors (raw device pointers, the current torch stream, torch-allocated workspaces).
// Return values are cudaError_t codes. dtype codes: fluxk::ElemType (0 f32, 1 bf16, 2 f16, 3 u8, 4 i32, 5 i64).
#include <cuda_runtime.h>

#include "../../native/src/sm80/vae_t5.h"

using namespace fluxk;

namespace {
ElemType et(int code) { return static_cast<ElemType>(code); }
}  // namespace

extern "C" {

// The raw implicit GEMM: x NHWC, w [cout][kh][kw][cin]; out_layout 0 = NHWC (row stride ors), 1 = NCHW.
int fkv_conv2d_nhwc(const void* x, long long xps, const void* w, long long wrs, const void* bias, void* out,
                    int out_layout, long long ors, int dtype, int out_dtype, int batch, int in_h, int in_w, int cin,
                    int cout, int kh, int kw, int stride, int pad, int out_h, int out_w, int upsample, int split_k,
                    long long split_stride, void* stream) {
  Conv2dArgs a;
  a.x = x;
  a.x_pixel_stride = xps;
  a.w = w;
  a.w_row_stride = wrs;
  a.bias = bias;
  a.out = out;
  a.out_layout = static_cast<ConvLayout>(out_layout);
  a.out_row_stride = ors;
  a.dtype = et(dtype);
  a.out_dtype = et(out_dtype);
  a.batch = batch;
  a.in_h = in_h;
  a.in_w = in_w;
  a.cin = cin;
  a.cout = cout;
  a.kh = kh;
  a.kw = kw;
  a.stride = stride;
  a.pad = pad;
  a.out_h = out_h;
  a.out_w = out_w;
  a.upsample2x = upsample != 0;
  a.split_k = split_k;
  a.out_split_stride = split_stride;
  return conv2d_implicit_gemm(a, static_cast<cudaStream_t>(stream));
}

namespace {
Conv2dNchwArgs nchw_args(const void* x, const void* w, const void* bias, void* out, int dtype, int batch, int cin,
                         int in_h, int in_w, int cout, int kh, int kw, int stride, int pad, int out_h, int out_w,
                         int upsample, long long band_bytes) {
  Conv2dNchwArgs a;
  a.x = x;
  a.w = w;
  a.bias = bias;
  a.out = out;
  a.dtype = et(dtype);
  a.batch = batch;
  a.cin = cin;
  a.in_h = in_h;
  a.in_w = in_w;
  a.cout = cout;
  a.kh = kh;
  a.kw = kw;
  a.stride = stride;
  a.pad = pad;
  a.out_h = out_h;
  a.out_w = out_w;
  a.upsample2x = upsample != 0;
  a.band_bytes = static_cast<size_t>(band_bytes);
  return a;
}
}  // namespace

// What ops.conv2d runs for bf16/f16 NCHW tensors (transposes into the workspace, then the implicit GEMM, a band of
// output rows at a time; band_bytes 0 is the addon's cap).
long long fkv_conv2d_nchw_workspace(int batch, int cin, int in_h, int in_w, int cout, int kh, int kw, int stride,
                                    int pad, int out_h, int out_w, int upsample, long long band_bytes) {
  return static_cast<long long>(conv2d_nchw_workspace_bytes(nchw_args(nullptr, nullptr, nullptr, nullptr, 1, batch,
                                                                      cin, in_h, in_w, cout, kh, kw, stride, pad,
                                                                      out_h, out_w, upsample, band_bytes)));
}

namespace {
// The parameters of a group norm (x, out and the shape are the caller's).
GroupNormArgs norm_params(long long groups, const void* weight, const void* bias, int param_dtype, float eps, int silu,
                          float* workspace) {
  GroupNormArgs n;
  n.groups = groups;
  n.weight = weight;
  n.bias = bias;
  n.param_dtype = et(param_dtype);
  n.eps = eps;
  n.silu = silu != 0;
  n.workspace = workspace;
  return n;
}
}  // namespace

// norm_groups > 0: convolve group_norm(x) (+SiLU), norm_workspace holding fkv_group_norm_workspace_floats floats.
int fkv_conv2d_nchw(const void* x, const void* w, const void* bias, void* out, int dtype, int batch, int cin, int in_h,
                    int in_w, int cout, int kh, int kw, int stride, int pad, int out_h, int out_w, int upsample,
                    long long band_bytes, long long norm_groups, const void* norm_weight, const void* norm_bias,
                    int norm_param_dtype, float norm_eps, int norm_silu, float* norm_workspace, void* workspace,
                    long long workspace_bytes, void* stream) {
  Conv2dNchwArgs a = nchw_args(x, w, bias, out, dtype, batch, cin, in_h, in_w, cout, kh, kw, stride, pad, out_h,
                               out_w, upsample, band_bytes);
  const GroupNormArgs n =
      norm_params(norm_groups, norm_weight, norm_bias, norm_param_dtype, norm_eps, norm_silu, norm_workspace);
  if (norm_groups > 0) a.norm = &n;
  return conv2d_nchw(a, workspace, static_cast<size_t>(workspace_bytes), static_cast<cudaStream_t>(stream));
}

long long fkv_group_norm_workspace_floats(long long batch, long long channels, long long spatial, long long groups) {
  return group_norm_workspace_floats(batch, channels, spatial, groups);
}

int fkv_group_norm(const void* x, void* out, int dtype, long long batch, long long channels, long long spatial,
                   long long groups, const void* weight, const void* bias, int param_dtype, float eps, int silu,
                   float* workspace, void* stream) {
  GroupNormArgs a = norm_params(groups, weight, bias, param_dtype, eps, silu, workspace);
  a.x = x;
  a.out = out;
  a.dtype = et(dtype);
  a.batch = batch;
  a.channels = channels;
  a.spatial = spatial;
  return group_norm(a, static_cast<cudaStream_t>(stream));
}

namespace {
// strides: q, k, v, o {b, h, l} (12 values); bias_strides / mask_strides {b, h, q, k}.
BiasAttentionArgs attn_args(const void* q, const void* k, const void* v, void* o, int dtype, int batch, int heads,
                            int seq_q, int seq_kv, int head_dim, const long long* strides, float scale,
                            const void* bias, int bias_dtype, const long long* bias_strides, const void* mask,
                            int mask_dtype, const long long* mask_strides) {
  BiasAttentionArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = o;
  a.dtype = et(dtype);
  a.batch = batch;
  a.heads = heads;
  a.seq_q = seq_q;
  a.seq_kv = seq_kv;
  a.head_dim = head_dim;
  for (int i = 0; i < 3; ++i) {
    a.q_stride[i] = strides[i];
    a.k_stride[i] = strides[3 + i];
    a.v_stride[i] = strides[6 + i];
    a.o_stride[i] = strides[9 + i];
  }
  a.scale = scale;
  a.bias = bias;
  a.bias_dtype = et(bias_dtype);
  a.mask = mask;
  a.mask_dtype = et(mask_dtype);
  for (int i = 0; i < 4; ++i) {
    a.bias_stride[i] = bias_strides ? bias_strides[i] : 0;
    a.mask_stride[i] = mask_strides ? mask_strides[i] : 0;
  }
  return a;
}
}  // namespace

int fkv_attention_bias_d64(const void* q, const void* k, const void* v, void* o, int dtype, int batch, int heads,
                           int seq_q, int seq_kv, const long long* strides, float scale, const void* bias,
                           int bias_dtype, const long long* bias_strides, const void* mask, int mask_dtype,
                           const long long* mask_strides, void* stream) {
  return attention_bias_d64(attn_args(q, k, v, o, dtype, batch, heads, seq_q, seq_kv, 64, strides, scale, bias,
                                      bias_dtype, bias_strides, mask, mask_dtype, mask_strides),
                            static_cast<cudaStream_t>(stream));
}

long long fkv_attention_wide_workspace(int batch, int heads, int seq_q, int seq_kv, int head_dim) {
  const long long zeros[12] = {0};
  return static_cast<long long>(attention_wide_workspace_bytes(attn_args(
      nullptr, nullptr, nullptr, nullptr, 1, batch, heads, seq_q, seq_kv, head_dim, zeros, 1.f, nullptr, 0, nullptr,
      nullptr, 3, nullptr)));
}

int fkv_attention_wide(const void* q, const void* k, const void* v, void* o, int dtype, int batch, int heads,
                       int seq_q, int seq_kv, int head_dim, const long long* strides, float scale, const void* bias,
                       int bias_dtype, const long long* bias_strides, const void* mask, int mask_dtype,
                       const long long* mask_strides, void* workspace, long long workspace_bytes, void* stream) {
  return attention_wide(attn_args(q, k, v, o, dtype, batch, heads, seq_q, seq_kv, head_dim, strides, scale, bias,
                                  bias_dtype, bias_strides, mask, mask_dtype, mask_strides),
                        workspace, static_cast<size_t>(workspace_bytes), static_cast<cudaStream_t>(stream));
}

}  // extern "C"
