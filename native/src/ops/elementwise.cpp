#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

namespace {

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::GeluTanh: return "gelu";
    case UnaryOp::QuickGelu: return "quickGelu";
    case UnaryOp::Silu: return "silu";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Affine: return "affine";
    case UnaryOp::Clamp: return "clamp";
  }
  return "unary";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "binary";
}

#if FLUXLAB_WITH_CUDA
cuda::Strided make_strided(const Shape& out, std::initializer_list<const Shape*> operands) {
  cuda::Strided it;
  FL_CHECK(out.size() <= size_t(cuda::kMaxDims), "tensors of more than ", cuda::kMaxDims, " dims are not supported");
  it.nd = int(out.size());
  for (size_t d = 0; d < out.size(); d++) it.shape[d] = out[d];
  int i = 0;
  for (const Shape* s : operands) {
    auto st = broadcast_strides(*s, out);
    for (size_t d = 0; d < out.size(); d++) it.stride[i][d] = st[d];
    i++;
  }
  return it;
}
#endif

}  // namespace

Tensor unary(const Tensor& x, UnaryOp op, float a, float b) {
  const char* name = unary_name(op);
  check_float(name, "x", x);
  Tensor y = empty(x.shape, x.dtype, x.device());
  if (x.numel() == 0) return y;
  if (x.device().is_cpu()) {
    cpu::unary(x, y, op, a, b);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.", name, ": ", x.desc()),
                   cuda::unary(x.data(), y.data(), x.dtype, x.numel(), op, a, b, stream));
  }
  return y;
}

Tensor binary(const Tensor& a0, const Tensor& b0, BinaryOp op) {
  const char* name = binary_name(op);
  check_float(name, "a", a0);
  check_float(name, "b", b0);
  check_same_device(name, {{"a", &a0}, {"b", &b0}});
  Shape shape = broadcast_shapes(name, a0.shape, b0.shape);
  DType dt = promote_float(a0.dtype, b0.dtype);
  Tensor a = as_dtype(a0, dt), b = as_dtype(b0, dt);
  Tensor out = empty(shape, dt, a.device());
  if (out.numel() == 0) return out;
  if (a.device().is_cpu()) {
    cpu::binary(a, b, out, op);
  } else {
#if FLUXLAB_WITH_CUDA
    cuda::Strided it = make_strided(shape, {&shape, &a.shape, &b.shape});
#endif
    FL_CUDA_LAUNCH(a.device(), cat("ops.", name, ": ", describe({{"a", &a0}, {"b", &b0}})),
                   cuda::binary(out.data(), a.data(), b.data(), dt, it, op, stream));
  }
  return out;
}

Tensor modulate(const Tensor& x0, const Tensor& shift0, const Tensor& scale0) {
  check_float("modulate", "x", x0);
  check_float("modulate", "shift", shift0);
  check_float("modulate", "scale", scale0);
  check_same_device("modulate", {{"x", &x0}, {"shift", &shift0}, {"scale", &scale0}});
  Shape shape = broadcast_shapes("modulate", broadcast_shapes("modulate", x0.shape, shift0.shape), scale0.shape);
  DType dt = promote_float(promote_float(x0.dtype, shift0.dtype), scale0.dtype);
  Tensor x = as_dtype(x0, dt), shift = as_dtype(shift0, dt), scale = as_dtype(scale0, dt);
  Tensor out = empty(shape, dt, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::modulate(x, shift, scale, out);
  } else {
#if FLUXLAB_WITH_CUDA
    cuda::Strided it = make_strided(shape, {&shape, &x.shape, &shift.shape, &scale.shape});
#endif
    FL_CUDA_LAUNCH(x.device(), cat("ops.modulate: ", describe({{"x", &x0}, {"shift", &shift0}, {"scale", &scale0}})),
                   cuda::modulate(out.data(), x.data(), shift.data(), scale.data(), dt, it, stream));
  }
  return out;
}

}  // namespace fl::ops
