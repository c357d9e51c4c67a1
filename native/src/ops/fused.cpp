// Fused ops of the Flux transformer and device-side random numbers: boundary checks, output allocation, dispatch.
#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

namespace {

// Rows per group for a per-batch parameter p ([D], [G,D] or [G,1,D]) of x [G,...,D]: x's rows / G.
int64_t rows_per_group(const char* op, const char* name, const Tensor& x, const Tensor& p) {
  const int64_t D = x.shape.back(), rows = x.numel() / std::max<int64_t>(D, 1);
  const int64_t G = p.ndim() >= 1 && p.shape.back() == D ? p.numel() / std::max<int64_t>(D, 1) : -1;
  bool ok = G == 1;
  if (!ok && G > 1 && x.ndim() >= 2 && p.shape[0] == G && x.shape[0] == G) {
    ok = true;
    for (size_t d = 1; d + 1 < p.shape.size(); d++) ok &= p.shape[d] == 1;
  }
  FL_CHECK(ok, "ops.", op, ": ", name, " ", p.desc(), " must be [D], [B,D] or [B,1,D] for x ", x.desc(),
           " (B = x's first dim, D = its last)");
  return std::max<int64_t>(rows / G, 1);
}

}  // namespace

Tensor layer_norm_modulate(const Tensor& x0, const Tensor& shift0, const Tensor& scale0, float eps) {
  check_float("layerNormModulate", "x", x0);
  check_float("layerNormModulate", "shift", shift0);
  check_float("layerNormModulate", "scale", scale0);
  check_same_device("layerNormModulate", {{"x", &x0}, {"shift", &shift0}, {"scale", &scale0}});
  FL_CHECK(x0.ndim() >= 1, "ops.layerNormModulate: x must have at least one dim");
  const int64_t rpg = rows_per_group("layerNormModulate", "shift", x0, shift0);
  FL_CHECK(rpg == rows_per_group("layerNormModulate", "scale", x0, scale0), "ops.layerNormModulate: shift ",
           shift0.desc(), " and scale ", scale0.desc(), " must both be per batch or both shared");
  DType dt = promote_float(promote_float(x0.dtype, shift0.dtype), scale0.dtype);
  Tensor x = as_dtype(x0, dt), shift = as_dtype(shift0, dt), scale = as_dtype(scale0, dt);
  Tensor out = empty(x.shape, dt, x.device());
  if (out.numel() == 0) return out;
  [[maybe_unused]] const int64_t C = x.shape.back();
  if (x.device().is_cpu()) {
    cpu::layer_norm_modulate(x, shift, scale, rpg, eps, out);
  } else {
    FL_CUDA_LAUNCH(x.device(),
                   cat("ops.layerNormModulate: ", describe({{"x", &x0}, {"shift", &shift0}, {"scale", &scale0}})),
                   cuda::layer_norm_modulate(x.data(), out.data(), dt, x.numel() / C, C, shift.data(), scale.data(),
                                             rpg, eps, stream));
  }
  return out;
}

Tensor qk_norm_rope(const Tensor& x, const Tensor& w, const Tensor& cos, const Tensor& sin, float eps) {
  check_float("qkNormRope", "x", x);
  check_float("qkNormRope", "weight", w);
  check_float("qkNormRope", "cos", cos);
  check_float("qkNormRope", "sin", sin);
  check_same_device("qkNormRope", {{"x", &x}, {"weight", &w}, {"cos", &cos}, {"sin", &sin}});
  auto ctx = [&] { return describe({{"x", &x}, {"weight", &w}, {"cos", &cos}, {"sin", &sin}}); };
  FL_CHECK(x.ndim() == 4, "ops.qkNormRope: x must be [B,L,H,D] (", ctx(), ")");
  const int64_t L = x.shape[1], H = x.shape[2], D = x.shape[3];
  FL_CHECK(D % 2 == 0, "ops.qkNormRope: the head dim must be even (", ctx(), ")");
  FL_CHECK(w.numel() == D, "ops.qkNormRope: weight must have D = ", D, " values (", ctx(), ")");
  FL_CHECK(cos.shape == Shape({L, D}) && sin.shape == Shape({L, D}), "ops.qkNormRope: cos and sin must be [L,D] = [",
           L, ",", D, "] (", ctx(), ")");
  FL_CHECK(cos.dtype == sin.dtype, "ops.qkNormRope: cos and sin dtypes differ (", ctx(), ")");
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::qk_norm_rope(x, w, cos, sin, L, H, eps, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.qkNormRope: ", ctx()),
                   cuda::qk_norm_rope(x.data(), out.data(), x.dtype, x.numel() / D, L, H, D, w.data(), w.dtype,
                                      cos.data(), sin.data(), cos.dtype, eps, stream));
  }
  return out;
}

Tensor timestep_embedding(const Tensor& t, int64_t dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                          float max_period) {
  check_float("timestepEmbedding", "t", t);
  FL_CHECK(t.ndim() == 1, "ops.timestepEmbedding: t must be 1-d [B], got ", t.desc());
  FL_CHECK(dim >= 1, "ops.timestepEmbedding: invalid dim ", dim);
  FL_CHECK(max_period > 0, "ops.timestepEmbedding: maxPeriod must be positive, got ", max_period);
  const int64_t B = t.shape[0];
  Tensor out = empty({B, dim}, DType::F32, t.device());
  if (out.numel() == 0) return out;
  if (t.device().is_cpu()) {
    cpu::timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, scale, max_period, out);
  } else {
    FL_CUDA_LAUNCH(t.device(), cat("ops.timestepEmbedding: t ", t.desc(), ", dim ", dim),
                   cuda::timestep_embedding(t.data(), t.dtype, B, dim, flip_sin_to_cos, downscale_freq_shift, scale,
                                            max_period, out.ptr<float>(), stream));
  }
  return out;
}

Tensor randn_philox(const Shape& shape, DType dtype, Device device, uint64_t seed, float mean, float std) {
  FL_CHECK(is_float(dtype), "Tensor.randn: dtype must be a float type, got ", dtype_name(dtype));
  Tensor out = empty(shape, dtype, device);
  if (out.numel() == 0) return out;
  if (device.is_cpu()) {
    cpu::randn_philox(out.data(), dtype, out.numel(), seed, mean, std);
  } else {
    FL_CUDA_LAUNCH(device, cat("Tensor.randn ", out.desc()),
                   cuda::randn_philox(out.data(), dtype, out.numel(), seed, mean, std, stream));
  }
  return out;
}

}  // namespace fl::ops
