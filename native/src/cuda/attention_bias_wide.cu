// sdpa routes to the fluxk kernels of src/sm80/vae_t5.h (bf16/f16, sm_80+), beside fluxk_sdpa's head_dim 128:
//   head_dim 64, any bias and mask: T5 (relative position bias, scale 1) and CLIP (causal mask) —
//     attention_bias_d64, a FlashAttention-2 kernel reading the bias into its score fragments;
//   head_dim >= 256 (multiple of 8): the VAE mid block's single 512-wide head over 16384 tokens —
//     attention_wide, fp32-score GEMMs around a row softmax, with a workspace from the caching allocator.
// Anything else (float32, other head sizes) stays with the caller's kernels.
#include "fluxk_bridge.h"
#include "launch.h"

namespace fl::cuda {

bool fluxk_sdpa_bias_wide(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& sh,
                          const void* bias, DType bias_dt, const void* mask, DType mask_dt, float scale,
                          cudaStream_t s) {
  if (dt != DType::BF16 && dt != DType::F16) return false;
  const bool d64 = sh.D == 64, wide = sh.D >= 256 && sh.D % 8 == 0;
  if (!d64 && !wide) return false;
  const int64_t limit = int64_t(1) << 31;
  if (sh.B >= limit || sh.H >= limit || sh.Lq >= limit || sh.Lk >= limit || sh.Lk == 0) return false;
  if (!fluxk::device_has_sm80()) return false;
  fluxk::BiasAttentionArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = out;
  a.dtype = elem_type(dt);
  a.batch = int(sh.B);
  a.heads = int(sh.H);
  a.seq_q = int(sh.Lq);
  a.seq_kv = int(sh.Lk);
  a.head_dim = int(sh.D);
  AttnLayout lay = sh.layout;
  if (lay.q[2] == 0) {  // all zero: contiguous [B,H,L,D]
    AttnLayout::bhld(lay.q, sh.H, sh.Lq, sh.D);
    AttnLayout::bhld(lay.k, sh.H, sh.Lk, sh.D);
    AttnLayout::bhld(lay.v, sh.H, sh.Lk, sh.D);
    AttnLayout::bhld(lay.o, sh.H, sh.Lq, sh.D);
  }
  for (int i = 0; i < 3; i++) {
    a.q_stride[i] = lay.q[i];
    a.k_stride[i] = lay.k[i];
    a.v_stride[i] = lay.v[i];
    a.o_stride[i] = lay.o[i];
  }
  a.scale = scale;
  a.bias = bias;
  a.bias_dtype = elem_type(bias_dt);
  a.mask = mask;
  a.mask_dtype = elem_type(mask_dt);
  for (int i = 0; i < 4; i++) {
    a.bias_stride[i] = sh.bias_stride[i];
    a.mask_stride[i] = sh.mask_stride[i];
  }
  if (d64) {
    if (!fluxk_ran(fluxk::attention_bias_d64(a, s), "ops.sdpa (fluxk attention_bias_d64)")) return false;
    count_route(Route::SdpaFluxkBias64);
    return true;
  }
  const size_t bytes = fluxk::attention_wide_workspace_bytes(a);
  Tensor ws = scratch(int64_t(bytes));
  if (!fluxk_ran(fluxk::attention_wide(a, ws.data(), bytes, s), "ops.sdpa (fluxk attention_wide)")) return false;
  count_route(Route::SdpaFluxkWide);
  return true;
}

}  // namespace fl::cuda
