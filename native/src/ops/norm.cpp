#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

// Norm parameters are [C] vectors of one float dtype; returns that dtype (x's when absent).
DType param_dtype(const char* op, const Tensor& x, const Tensor* w, const Tensor* b, int64_t C) {
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"weight", w}, {"bias", b}}) {
    if (!t) continue;
    check_float(op, name, *t);
    FL_CHECK(t->numel() == C, "ops.", op, ": ", name, " ", t->desc(), " must have ", C, " values for x ", x.desc());
    FL_CHECK(t->device() == x.device(), "ops.", op, ": ", name, " on ", t->device().str(), ", x on ", x.device().str());
  }
  if (w && b) FL_CHECK(w->dtype == b->dtype, "ops.", op, ": weight and bias dtypes differ");
  return w ? w->dtype : b ? b->dtype : x.dtype;
}

Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) {
  check_float("layerNorm", "x", x);
  FL_CHECK(x.ndim() >= 1, "ops.layerNorm: x must have at least one dim");
  const int64_t C = x.shape.back();
  [[maybe_unused]] DType pdt = param_dtype("layerNorm", x, w, b, C);
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::layer_norm(x, w, b, eps, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.layerNorm: ", describe({{"x", &x}, {"weight", w}, {"bias", b}})),
                   cuda::layer_norm(x.data(), out.data(), x.dtype, x.numel() / C, C, w ? w->data() : nullptr,
                                    b ? b->data() : nullptr, pdt, eps, stream));
  }
  return out;
}

Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) {
  check_float("rmsNorm", "x", x);
  FL_CHECK(x.ndim() >= 1, "ops.rmsNorm: x must have at least one dim");
  const int64_t C = x.shape.back();
  [[maybe_unused]] DType pdt = param_dtype("rmsNorm", x, w, nullptr, C);
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::rms_norm(x, w, eps, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.rmsNorm: ", describe({{"x", &x}, {"weight", w}})),
                   cuda::rms_norm(x.data(), out.data(), x.dtype, x.numel() / C, C, w ? w->data() : nullptr, pdt, eps,
                                  stream));
  }
  return out;
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor* w, const Tensor* b, float eps, bool silu) {
  check_float("groupNorm", "x", x);
  FL_CHECK(x.ndim() >= 2, "ops.groupNorm: x must be [B,C,...], got ", x.desc());
  [[maybe_unused]] const int64_t B = x.shape[0];
  const int64_t C = x.shape[1];
  FL_CHECK(groups > 0 && C % groups == 0, "ops.groupNorm: ", C, " channels of ", x.desc(), " do not split into ",
           groups, " groups");
  [[maybe_unused]] DType pdt = param_dtype("groupNorm", x, w, b, C);
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::group_norm(x, groups, w, b, eps, silu, out);
  } else {
#if FLUXLAB_WITH_CUDA
    const int64_t spatial = x.numel() / (B * C);
    Tensor ws = empty({cuda::group_norm_workspace_floats(B, C, spatial, groups)}, DType::F32, x.device());
#endif
    FL_CUDA_LAUNCH(x.device(), cat("ops.groupNorm: ", describe({{"x", &x}, {"weight", w}, {"bias", b}})),
                   cuda::group_norm(x.data(), out.data(), x.dtype, B, C, spatial, groups, w ? w->data() : nullptr,
                                    b ? b->data() : nullptr, pdt, eps, silu, ws.ptr<float>(), stream));
  }
  return out;
}

Tensor softmax(const Tensor& x, int64_t dim) {
  check_float("softmax", "x", x);
  dim = norm_dim("softmax", dim, x.ndim());
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::softmax(x, dim, out);
  } else {
    [[maybe_unused]] const int64_t L = x.shape[size_t(dim)];
    int64_t inner = 1;
    for (size_t d = size_t(dim) + 1; d < x.shape.size(); d++) inner *= x.shape[d];
    FL_CUDA_LAUNCH(x.device(), cat("ops.softmax: ", x.desc()),
                   cuda::softmax(x.data(), out.data(), x.dtype, x.numel() / (L * inner), L, inner, stream));
  }
  return out;
}

}  // namespace fl::ops
