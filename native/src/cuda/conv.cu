// 2-D convolution. bf16/f16 on sm_80+: fluxk's conv2d_nchw (src/sm80/conv_sm80.cu), a tensor-core implicit GEMM
// that wants NHWC activations and [Cout][kh][kw][Cin] weights: x is transposed into a workspace (channels padded
// to a multiple of 8 with zeros, so any Cin works), the weight likewise, and the kernel writes the NCHW output
// directly from its epilogue. The transpose costs one read and one write of x (at the VAE's 1024² level,
// 512 MB → ~0.35 ms against ~4 ms of tensor-core work per 3x3 conv); it is done a band of output rows at a time
// into at most 64 MiB, so that the workspace does not add a third 512 MiB tensor to the decoder's peak (input,
// normalised input, output). A nearest-2x upsample of x is read through the loader (input pixel (y/2, x/2)), so
// the upsampled tensor never exists. A group norm (+SiLU) of x (`norm`, the VAE's norm → SiLU → conv) is applied
// in that transpose after a statistics pass, so the normalised x is never stored either (the same bits as
// ops.groupNorm then ops.conv2d).
// Otherwise (float32, older GPUs): the portable implicit GEMM, out[co, (b,oy,ox)] = Σ_(ci,ky,kx) w[co, ci,ky,kx] ·
// x[b, ci, oy·s−p+ky, ox·s−p+kx], whose B loader computes the im2col address of each element.
#include "fluxk_bridge.h"
#include "gemm.cuh"

namespace fl::cuda {

namespace {

template <class T>
struct ConvInput {
  static constexpr bool k_contiguous = false;  // consecutive output pixels read neighbouring input pixels
  const T* x;
  ConvShape c;
  __device__ void set_batch(int64_t) {}
  __device__ float operator()(int64_t n, int64_t k) const {
    const int64_t P = c.OH * c.OW;
    if (n >= c.B * P || k >= c.Cin * c.KH * c.KW) return 0.f;
    const int64_t b = n / P, p = n % P, oy = p / c.OW, ox = p % c.OW;
    const int64_t ci = k / (c.KH * c.KW), ky = (k / c.KW) % c.KH, kx = k % c.KW;
    const int up = c.upsample ? 1 : 0;
    const int64_t iy = oy * c.stride - c.padding + ky, ix = ox * c.stride - c.padding + kx;
    if (iy < 0 || iy >= (c.H << up) || ix < 0 || ix >= (c.W << up)) return 0.f;
    return to_f(x[((b * c.Cin + ci) * c.H + (iy >> up)) * c.W + (ix >> up)]);
  }
};

template <class T>
struct ConvStore {
  T* out;
  const T* bias;
  ConvShape c;
  __device__ void set_batch(int64_t) {}
  __device__ void operator()(int64_t co, int64_t n, float acc) const {
    const int64_t P = c.OH * c.OW, b = n / P, p = n % P;
    if (bias) acc += to_f(bias[co]);
    out[(b * c.Cout + co) * P + p] = from_f<T>(acc);
  }
};

bool conv2d_tensor_cores(const void* x, const void* w, const void* bias, void* out, DType dt, const ConvShape& c,
                         const ConvNorm* norm, cudaStream_t s) {
  if ((dt != DType::BF16 && dt != DType::F16) || !fluxk::device_has_sm80()) return false;
  const int64_t limit = int64_t(1) << 31;
  for (int64_t v : {c.B, c.Cin, c.H, c.W, c.Cout, c.KH, c.KW, c.OH, c.OW, c.stride, c.padding}) {
    if (v >= limit) return false;
  }
  fluxk::Conv2dNchwArgs a;
  a.x = x;
  a.w = w;
  a.bias = bias;
  a.out = out;
  a.dtype = elem_type(dt);
  a.batch = int(c.B);
  a.cin = int(c.Cin);
  a.in_h = int(c.H);
  a.in_w = int(c.W);
  a.cout = int(c.Cout);
  a.kh = int(c.KH);
  a.kw = int(c.KW);
  a.stride = int(c.stride);
  a.pad = int(c.padding);
  a.out_h = int(c.OH);
  a.out_w = int(c.OW);
  a.upsample2x = c.upsample;
  fluxk::GroupNormArgs n;
  Tensor stats;
  if (norm) {
    FL_CHECK(c.B * norm->groups <= 65535, "ops.conv2d: more than 65535 (batch x group) pairs for the norm on CUDA");
    n.groups = norm->groups;
    n.weight = norm->weight;
    n.bias = norm->bias;
    n.param_dtype = elem_type(norm->param_dtype);
    n.eps = norm->eps;
    n.silu = norm->silu;
    stats = scratch(fluxk::group_norm_workspace_floats(c.B, c.Cin, c.H * c.W, norm->groups) * 4);
    n.workspace = static_cast<float*>(stats.data());
    a.norm = &n;
  }
  const size_t bytes = fluxk::conv2d_nchw_workspace_bytes(a);
  Tensor ws = scratch(int64_t(bytes));
  return fluxk_ran(fluxk::conv2d_nchw(a, ws.data(), bytes, s), "ops.conv2d (fluxk conv2d_nchw)");
}

}  // namespace

void conv2d(const void* x, const void* w, const void* bias, void* out, DType dt, const ConvShape& c,
            const ConvNorm* norm, cudaStream_t s) {
  if (conv2d_tensor_cores(x, w, bias, out, dt, c, norm, s)) {
    count_route(Route::Conv2dFluxkSm80);
    return;
  }
  count_route(Route::Conv2dPortable);
  Tensor normalised;
  if (norm) {
    const int64_t spatial = c.H * c.W;
    normalised = scratch(c.B * c.Cin * spatial * int64_t(dtype_size(dt)));
    Tensor stats = scratch(group_norm_workspace_floats(c.B, c.Cin, spatial, norm->groups) * 4);
    group_norm(x, normalised.data(), dt, c.B, c.Cin, spatial, norm->groups, norm->weight, norm->bias,
               norm->param_dtype, norm->eps, norm->silu, static_cast<float*>(stats.data()), s);
    x = normalised.data();
  }
  const int64_t M = c.Cout, N = c.B * c.OH * c.OW, K = c.Cin * c.KH * c.KW;
  gemm::check_grid(M, "ops.conv2d");
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    gemm::RowsK<T> a{static_cast<const T*>(w), static_cast<const T*>(w), M, K};
    ConvInput<T> b{static_cast<const T*>(x), c};
    ConvStore<T> st{static_cast<T*>(out), static_cast<const T*>(bias), c};
    gemm::gemm_kernel<<<gemm::grid(M, N, 1), gemm::kThreads, 0, s>>>(M, N, K, 1, a, b, st);
  });
}

}  // namespace fl::cuda
