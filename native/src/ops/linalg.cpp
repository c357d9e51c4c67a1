#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

namespace {

Tensor bias_as(const char* op, const Tensor* bias, int64_t N, const Tensor& x) {
  if (!bias) return Tensor();
  check_float(op, "bias", *bias);
  FL_CHECK(bias->numel() == N, "ops.", op, ": bias ", bias->desc(), " must have ", N, " values");
  FL_CHECK(bias->device() == x.device(), "ops.", op, ": bias on ", bias->device().str(), ", x on ", x.device().str());
  return as_dtype(*bias, x.dtype);
}

Shape with_last(const Shape& s, int64_t last) {
  Shape out = s;
  out.back() = last;
  return out;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  check_float("linear", "x", x);
  check_float("linear", "weight", w);
  check_same_device("linear", {{"x", &x}, {"weight", &w}, {"bias", bias}});
  FL_CHECK(w.ndim() == 2, "ops.linear: weight must be [N,K], got ", w.desc());
  FL_CHECK(x.ndim() >= 1 && x.shape.back() == w.shape[1], "ops.linear: x ", x.desc(), " and weight ", w.desc(),
           ": the last dim of x must equal K = ", w.shape[1]);
  const int64_t N = w.shape[0], K = w.shape[1];
  [[maybe_unused]] const int64_t M = x.numel() / std::max<int64_t>(K, 1);
  Tensor b = bias_as("linear", bias, N, x);
  Tensor out = empty(with_last(x.shape, N), x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::linear(x, cpu::Operand{w.data(), w.dtype, 1, K, nullptr}, N, K, b.defined() ? &b : nullptr, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.linear: ", describe({{"x", &x}, {"weight", &w}, {"bias", bias}})),
                   cuda::linear(x.data(), x.dtype, w.data(), w.dtype, b.defined() ? b.data() : nullptr, out.data(), M,
                                N, K, stream));
  }
  return out;
}

Tensor linear_nf4(const Tensor& x, const NF4& w, const Tensor* bias) {
  check_float("linear", "x", x);
  w.check("linear");
  FL_CHECK(x.device() == w.device(), "ops.linear: x on ", x.device().str(), ", nf4 weight on ", w.device().str());
  FL_CHECK(x.ndim() >= 1 && x.shape.back() == w.cols, "ops.linear: x ", x.desc(), " and nf4 weight [", w.rows, ",",
           w.cols, "]: the last dim of x must equal K = ", w.cols);
  const int64_t N = w.rows, K = w.cols;
  [[maybe_unused]] const int64_t M = x.numel() / K;
  Tensor b = bias_as("linear", bias, N, x);
  Tensor out = empty(with_last(x.shape, N), x.dtype, x.device());
  if (out.numel() == 0) return out;
  NF4View view = w.view();
  if (x.device().is_cpu()) {
    cpu::Operand op;
    op.nf4 = &view;
    cpu::linear(x, op, N, K, b.defined() ? &b : nullptr, out);
  } else {
#if FLUXLAB_WITH_CUDA
    const int64_t blocks = (N * K + w.blocksize - 1) / w.blocksize;
    Tensor absmax = empty({blocks}, DType::F32, x.device());
#endif
    FL_CUDA_LAUNCH(x.device(), cat("ops.linear: x ", x.desc(), ", nf4 weight [", N, ",", K, "]"), {
      cuda::nf4_absmax(view, absmax.ptr<float>(), stream);
      NF4View decoded = view;
      decoded.absmax = absmax.ptr<float>();
      decoded.absmax_codes = nullptr;
      cuda::linear_nf4(x.data(), x.dtype, decoded, b.defined() ? b.data() : nullptr, out.data(), M, N, K, stream);
    });
  }
  return out;
}

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  check_float("matmul", "a", a0);
  check_float("matmul", "b", b0);
  check_same_device("matmul", {{"a", &a0}, {"b", &b0}});
  FL_CHECK(a0.ndim() >= 2 && b0.ndim() >= 2, "ops.matmul: a and b need at least 2 dims (",
           describe({{"a", &a0}, {"b", &b0}}), ")");
  const int64_t M = a0.shape[a0.shape.size() - 2], K = a0.shape.back(), N = b0.shape.back();
  FL_CHECK(b0.shape[b0.shape.size() - 2] == K, "ops.matmul: inner dims differ (", describe({{"a", &a0}, {"b", &b0}}),
           ")");
  Shape ab(a0.shape.begin(), a0.shape.end() - 2), bb(b0.shape.begin(), b0.shape.end() - 2);
  Shape batch = broadcast_shapes("matmul", ab, bb);
  DType dt = promote_float(a0.dtype, b0.dtype);
  Tensor a = as_dtype(a0, dt), b = as_dtype(b0, dt);
  Shape shape = batch;
  shape.push_back(M);
  shape.push_back(N);
  Tensor out = empty(shape, dt, a.device());
  if (out.numel() == 0) return out;
  if (K == 0) return full(shape, dt, a.device(), 0.0);
  if (a.device().is_cpu()) {
    cpu::matmul(a, b, out);
  } else {
#if FLUXLAB_WITH_CUDA
    FL_CHECK(batch.size() <= size_t(cuda::kMaxDims), "ops.matmul: too many batch dims");
    cuda::Strided it;
    it.nd = int(batch.size());
    auto sa = broadcast_strides(ab, batch), sb = broadcast_strides(bb, batch);
    for (size_t d = 0; d < batch.size(); d++) {
      it.shape[d] = batch[d];
      it.stride[1][d] = sa[d];
      it.stride[2][d] = sb[d];
    }
#endif
    FL_CUDA_LAUNCH(a.device(), cat("ops.matmul: ", describe({{"a", &a0}, {"b", &b0}})),
                   cuda::matmul(a.data(), b.data(), out.data(), dt, M, N, K, it, stream));
  }
  return out;
}

Tensor sdpa(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor* bias, const Tensor* mask, float scale) {
  check_float("sdpa", "q", q0);
  check_float("sdpa", "k", k0);
  check_float("sdpa", "v", v0);
  check_same_device("sdpa", {{"q", &q0}, {"k", &k0}, {"v", &v0}, {"bias", bias}, {"mask", mask}});
  auto ctx = [&] { return describe({{"q", &q0}, {"k", &k0}, {"v", &v0}, {"bias", bias}, {"mask", mask}}); };
  FL_CHECK(q0.ndim() == 4 && k0.ndim() == 4 && v0.ndim() == 4, "ops.sdpa: q, k, v must be [B,H,L,D] (", ctx(), ")");
  const int64_t B = q0.shape[0], H = q0.shape[1], Lq = q0.shape[2], D = q0.shape[3], Lk = k0.shape[2];
  FL_CHECK(k0.shape[0] == B && k0.shape[1] == H && k0.shape[3] == D && v0.shape[0] == B && v0.shape[1] == H &&
               v0.shape[2] == Lk && v0.shape[3] == D,
           "ops.sdpa: shapes do not match (", ctx(), "): expects q [B,H,Lq,D], k and v [B,H,Lk,D]");
  const Shape frame{B, H, Lq, Lk};
  if (bias) {
    check_float("sdpa", "bias", *bias);
    FL_CHECK(broadcasts_to(bias->shape, frame), "ops.sdpa: bias ", bias->desc(),
             " does not broadcast to [B,H,Lq,Lk] = ", shape_str(frame));
  }
  if (mask) {
    if (mask->ndim() == 2) {
      FL_CHECK((mask->shape[0] == B || mask->shape[0] == 1) && (mask->shape[1] == Lk || mask->shape[1] == 1),
               "ops.sdpa: a 2-d mask is key padding [B,Lk] = [", B, ",", Lk, "], got ", mask->desc());
    } else {
      FL_CHECK(broadcasts_to(mask->shape, frame), "ops.sdpa: mask ",
               mask->desc(), " does not broadcast to [B,H,Lq,Lk] = ", shape_str(frame));
    }
  }
  DType dt = promote_float(promote_float(q0.dtype, k0.dtype), v0.dtype);
  Tensor q = as_dtype(q0, dt), k = as_dtype(k0, dt), v = as_dtype(v0, dt);
  Tensor out = empty(q.shape, dt, q.device());
  if (out.numel() == 0) return out;
  if (q.device().is_cpu()) {
    cpu::sdpa(q, k, v, bias, mask, scale, out);
  } else {
#if FLUXLAB_WITH_CUDA
    FL_CHECK(D <= 256, "ops.sdpa: head dim ", D, " > 256 is not supported on CUDA (", ctx(), ")");
    cuda::AttnShape a{B, H, Lq, Lk, D, {0, 0, 0, 0}, {0, 0, 0, 0}};
    if (bias) {
      auto s = broadcast_strides(bias->shape, frame);
      for (int i = 0; i < 4; i++) a.bias_stride[i] = s[size_t(i)];
    }
    if (mask) {
      if (mask->ndim() == 2) {
        a.mask_stride[0] = mask->shape[0] == 1 ? 0 : mask->shape[1];
        a.mask_stride[3] = mask->shape[1] == 1 ? 0 : 1;
      } else {
        auto s = broadcast_strides(mask->shape, frame);
        for (int i = 0; i < 4; i++) a.mask_stride[i] = s[size_t(i)];
      }
    }
#endif
    FL_CUDA_LAUNCH(q.device(), cat("ops.sdpa: ", ctx()),
                   cuda::sdpa(q.data(), k.data(), v.data(), out.data(), dt, a, bias ? bias->data() : nullptr,
                              bias ? bias->dtype : DType::F32, mask ? mask->data() : nullptr,
                              mask ? mask->dtype : DType::U8, scale, stream));
  }
  return out;
}

Tensor conv2d(const Tensor& x0, const Tensor& w0, const Tensor* bias, int64_t stride, int64_t padding) {
  check_float("conv2d", "x", x0);
  check_float("conv2d", "w", w0);
  check_same_device("conv2d", {{"x", &x0}, {"w", &w0}, {"bias", bias}});
  auto ctx = [&] { return describe({{"x", &x0}, {"w", &w0}, {"bias", bias}}); };
  FL_CHECK(x0.ndim() == 4 && w0.ndim() == 4, "ops.conv2d: x must be [B,Cin,H,W] and w [Cout,Cin,KH,KW] (", ctx(), ")");
  FL_CHECK(w0.shape[1] == x0.shape[1], "ops.conv2d: channels differ (", ctx(), ")");
  FL_CHECK(stride >= 1 && padding >= 0, "ops.conv2d: invalid stride ", stride, " or padding ", padding);
  const int64_t B = x0.shape[0], H = x0.shape[2], W = x0.shape[3];
  [[maybe_unused]] const int64_t Cin = x0.shape[1];
  const int64_t Cout = w0.shape[0], KH = w0.shape[2], KW = w0.shape[3];
  const int64_t OH = (H + 2 * padding - KH) / stride + 1, OW = (W + 2 * padding - KW) / stride + 1;
  FL_CHECK(H + 2 * padding >= KH && W + 2 * padding >= KW, "ops.conv2d: kernel larger than the padded input (", ctx(),
           ")");
  DType dt = promote_float(x0.dtype, w0.dtype);
  Tensor x = as_dtype(x0, dt), w = as_dtype(w0, dt);
  Tensor b = bias_as("conv2d", bias, Cout, x);
  Tensor out = empty({B, Cout, OH, OW}, dt, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::conv2d(x, w, b.defined() ? &b : nullptr, stride, padding, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.conv2d: ", ctx()),
                   cuda::conv2d(x.data(), w.data(), b.defined() ? b.data() : nullptr, out.data(), dt,
                                cuda::ConvShape{B, Cin, H, W, Cout, KH, KW, OH, OW, stride, padding}, stream));
  }
  return out;
}

}  // namespace fl::ops
