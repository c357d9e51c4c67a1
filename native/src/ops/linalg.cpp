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

Epilogue prepare_epilogue(const Tensor& x, const Shape& out_shape, int64_t M, int64_t N, const LinearOptions& o) {
  Epilogue ep;
  ep.e.gelu_tanh = o.gelu_tanh;
  if (o.gate) {
    const Tensor& g = *o.gate;
    check_float("linear", "gate", g);
    FL_CHECK(g.device() == x.device(), "ops.linear: gate on ", g.device().str(), ", x on ", x.device().str());
    const int64_t G = g.ndim() >= 1 && g.shape.back() == N ? g.numel() / N : -1;
    bool ok = G == 1;
    if (!ok && G > 1 && out_shape.size() >= 2 && g.shape[0] == G && out_shape[0] == G) {
      ok = true;
      for (size_t d = 1; d + 1 < g.shape.size(); d++) ok &= g.shape[d] == 1;
    }
    FL_CHECK(ok && M % G == 0, "ops.linear: gate ", g.desc(), " must be [N], [B,N] or [B,1,N] with N = ", N,
             " and B = the output's first dim (output ", shape_str(out_shape), ")");
    ep.gate = as_dtype(g, x.dtype);
    ep.e.gate_ld = N;
    ep.e.gate_rows_per_batch = M / G;
  }
  if (o.residual) {
    const Tensor& r = *o.residual;
    check_float("linear", "residual", r);
    FL_CHECK(r.device() == x.device(), "ops.linear: residual on ", r.device().str(), ", x on ", x.device().str());
    FL_CHECK(r.shape == out_shape, "ops.linear: residual ", r.desc(), " must have the output's shape ",
             shape_str(out_shape));
    ep.residual = as_dtype(r, x.dtype);
    ep.e.residual_ld = N;
  }
  // The bf16 tensor-core GEMMs take gate and residual together: a missing one becomes a broadcast 1 or 0 row.
  if (x.device().is_cuda() && x.dtype == DType::BF16 && ep.gate.defined() != ep.residual.defined()) {
    if (!ep.gate.defined()) {
      ep.gate = full({N}, x.dtype, x.device(), 1.0);
      ep.e.gate_ld = 0;
      ep.e.gate_rows_per_batch = std::max<int64_t>(M, 1);
    } else {
      ep.residual = full({N}, x.dtype, x.device(), 0.0);
      ep.e.residual_ld = 0;
    }
  }
  ep.e.gate = ep.gate.defined() ? ep.gate.data() : nullptr;
  ep.e.residual = ep.residual.defined() ? ep.residual.data() : nullptr;
  return ep;
}

namespace {

std::string linear_context(const Tensor& x, const char* wdesc, const Tensor* bias, const LinearOptions& o) {
  std::string s = cat("ops.linear: x ", x.desc(), ", weight ", wdesc);
  if (bias) s += cat(", bias ", bias->desc());
  if (o.gelu_tanh) s += ", gelu_tanh";
  if (o.gate) s += cat(", gate ", o.gate->desc());
  if (o.residual) s += cat(", residual ", o.residual->desc());
  return s;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias, const LinearOptions& opts) {
  check_float("linear", "x", x);
  check_float("linear", "weight", w);
  check_same_device("linear", {{"x", &x}, {"weight", &w}, {"bias", bias}});
  FL_CHECK(w.ndim() == 2, "ops.linear: weight must be [N,K], got ", w.desc());
  FL_CHECK(x.ndim() >= 1 && x.shape.back() == w.shape[1], "ops.linear: x ", x.desc(), " and weight ", w.desc(),
           ": the last dim of x must equal K = ", w.shape[1]);
  const int64_t N = w.shape[0], K = w.shape[1];
  const Shape out_shape = with_last(x.shape, N);
  const int64_t M = numel_of(out_shape) / std::max<int64_t>(N, 1);
  Tensor b = bias_as("linear", bias, N, x);
  Epilogue ep = prepare_epilogue(x, out_shape, M, N, opts);
  Tensor out = empty(out_shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::linear(x, cpu::Operand{w.data(), w.dtype, 1, K, nullptr}, N, K, b.defined() ? &b : nullptr, out, ep.e);
  } else {
    [[maybe_unused]] const void* bp = b.defined() ? b.data() : nullptr;
#if FLUXLAB_WITH_CUDA
    // float32 x with a bf16 weight (a float32 layer stored as bf16): the exact split GEMM on tensor cores
    const int64_t split_elems = x.dtype == DType::F32 && w.dtype == DType::BF16
                                    ? cuda::fluxk_linear_f32_workspace_elems(M, N, K, ep.e)
                                    : 0;
    Tensor workspace = split_elems ? empty({split_elems}, DType::BF16, x.device()) : Tensor();
#endif
    FL_CUDA_LAUNCH(x.device(), linear_context(x, w.desc().c_str(), bias, opts), {
      const bool fluxk =
          split_elems ? cuda::fluxk_linear_f32(x.ptr<float>(), w.data(), b.defined() ? b.ptr<float>() : nullptr,
                                               out.ptr<float>(), M, N, K, ep.e, workspace.data(), stream)
                      : cuda::fluxk_linear(x.data(), x.dtype, w.data(), w.dtype, bp, out.data(), M, N, K, ep.e, stream);
      if (!fluxk) {
        cuda::count_route(cuda::Route::LinearPortable);
        cuda::linear(x.data(), x.dtype, w.data(), w.dtype, bp, out.data(), M, N, K, ep.e, stream);
      }
    });
  }
  return out;
}

Nf4Linear prepare_nf4(const Tensor& x, const NF4& w, const Tensor* bias, const LinearOptions& opts) {
  check_float("linear", "x", x);
  w.check("linear");
  FL_CHECK(x.device() == w.device(), "ops.linear: x on ", x.device().str(), ", nf4 weight on ", w.device().str());
  FL_CHECK(x.ndim() >= 1 && x.shape.back() == w.cols, "ops.linear: x ", x.desc(), " and nf4 weight [", w.rows, ",",
           w.cols, "]: the last dim of x must equal K = ", w.cols);
  Nf4Linear l;
  l.N = w.rows;
  l.K = w.cols;
  const Shape out_shape = with_last(x.shape, l.N);
  l.M = numel_of(out_shape) / l.N;
  l.b = bias_as("linear", bias, l.N, x);
  l.ep = prepare_epilogue(x, out_shape, l.M, l.N, opts);
  l.out = empty(out_shape, x.dtype, x.device());
  return l;
}

Tensor linear_nf4(const Tensor& x, const NF4& w, const Tensor* bias, const LinearOptions& opts) {
  Nf4Linear l = prepare_nf4(x, w, bias, opts);
  const int64_t N = l.N, K = l.K, M = l.M;
  Tensor& b = l.b;
  Epilogue& ep = l.ep;
  Tensor& out = l.out;
  if (out.numel() == 0) return out;
  NF4View view = w.view();
  if (x.device().is_cpu()) {
    cpu::Operand op;
    op.nf4 = &view;
    cpu::linear(x, op, N, K, b.defined() ? &b : nullptr, out, ep.e);
    return out;
  }
  [[maybe_unused]] const void* bp = b.defined() ? b.data() : nullptr;
  const std::string wdesc = cat("nf4 [", N, ",", K, "]", w.double_quant() ? " double quant" : "");
  bool done = false;
#if FLUXLAB_WITH_CUDA
  const int64_t blocks = (N * K + w.blocksize - 1) / w.blocksize;
  if (cuda::fluxk_linear_nf4_dequantized_applies(x.data(), x.dtype, view, bp, out.data(), M, ep.e)) {
    // Workspaces from the caching allocator, freed when this returns: stream-ordered reuse, capturable.
    Tensor weight_bf16 = empty({N, K}, DType::BF16, x.device());
    Tensor decoded = w.double_quant() ? empty({blocks}, DType::F32, x.device()) : Tensor();
    FL_CUDA_LAUNCH(x.device(), linear_context(x, wdesc.c_str(), bias, opts), {
      if (decoded.defined()) cuda::nf4_absmax(view, decoded.ptr<float>(), stream);
      done = cuda::fluxk_linear_nf4_dequantized(x.data(), view, decoded.defined() ? decoded.ptr<float>() : view.absmax,
                                                weight_bf16.data(), bp, out.data(), M, ep.e, stream);
    });
    if (done) return out;
  }
#endif
  FL_CUDA_LAUNCH(x.device(), linear_context(x, wdesc.c_str(), bias, opts),
                 done = cuda::fluxk_linear_nf4(x.data(), x.dtype, view, bp, out.data(), M, N, K, ep.e, stream));
  if (done) return out;
#if FLUXLAB_WITH_CUDA
  Tensor absmax = empty({blocks}, DType::F32, x.device());
#endif
  FL_CUDA_LAUNCH(x.device(), linear_context(x, wdesc.c_str(), bias, opts), {
    cuda::count_route(cuda::Route::LinearNf4Portable);
    cuda::nf4_absmax(view, absmax.ptr<float>(), stream);
    NF4View decoded = view;
    decoded.absmax = absmax.ptr<float>();
    decoded.absmax_codes = nullptr;
    cuda::linear_nf4(x.data(), x.dtype, decoded, bp, out.data(), M, N, K, ep.e, stream);
  });
  return out;
}

std::vector<Tensor> linear_group(const std::vector<GroupLinear>& items) {
  FL_CHECK(!items.empty(), "ops.linearGroup: needs at least one linear");
  for (size_t i = 0; i < items.size(); i++) {
    FL_CHECK(items[i].x && (items[i].w || items[i].w_nf4), "ops.linearGroup: linear ", i, " lacks x or a weight");
  }
#if FLUXLAB_WITH_CUDA
  if (items.size() == 2 && items[0].w_nf4 && items[1].w_nf4 && items[0].x->device().is_cuda() &&
      items[1].x->device() == items[0].x->device()) {
    Nf4Linear l[2] = {prepare_nf4(*items[0].x, *items[0].w_nf4, items[0].bias, items[0].opts),
                      prepare_nf4(*items[1].x, *items[1].w_nf4, items[1].bias, items[1].opts)};
    if (l[0].out.numel() > 0 && l[1].out.numel() > 0) {
      cuda::Nf4LinearItem it[2];
      for (int i = 0; i < 2; i++) {
        it[i] = {items[i].x->data(), items[i].x->dtype, items[i].w_nf4->view(),
                 l[i].b.defined() ? l[i].b.data() : nullptr, l[i].out.data(), l[i].M, l[i].ep.e};
      }
      bool done = false;
      FL_CUDA_LAUNCH(items[0].x->device(),
                     cat("ops.linearGroup: x ", items[0].x->desc(), ", nf4 [", l[0].N, ",", l[0].K, "] and x ",
                         items[1].x->desc(), ", nf4 [", l[1].N, ",", l[1].K, "]"),
                     done = cuda::fluxk_linear_nf4_pair(it[0], it[1], stream));
      if (done) return {l[0].out, l[1].out};
    }
  }
#endif
  std::vector<Tensor> outs;
  for (const GroupLinear& it : items) {
    outs.push_back(it.w ? linear(*it.x, *it.w, it.bias, it.opts) : linear_nf4(*it.x, *it.w_nf4, it.bias, it.opts));
  }
  return outs;
}

Tensor linear_concat(const Tensor& x, const std::vector<ConcatLayer>& layers) {
  FL_CHECK(!layers.empty(), "ops.linearConcat: needs at least one layer");
  const int64_t K = x.ndim() >= 1 ? x.shape.back() : -1;
  for (size_t i = 0; i < layers.size(); i++) {
    const ConcatLayer& l = layers[i];
    FL_CHECK(l.w || l.w_nf4, "ops.linearConcat: layer ", i, " has no weight");
    const int64_t cols = l.w ? (l.w->ndim() == 2 ? l.w->shape[1] : -1) : l.w_nf4->cols;
    FL_CHECK(cols == K, "ops.linearConcat: layer ", i, "'s weight ",
             l.w ? l.w->desc() : cat("nf4 [", l.w_nf4->rows, ",", l.w_nf4->cols, "]"), " does not take x ", x.desc());
  }
  const auto apply = [&](const ConcatLayer& l) {
    return l.w ? linear(x, *l.w, l.bias) : linear_nf4(x, *l.w_nf4, l.bias);
  };
#if FLUXLAB_WITH_CUDA
  const int64_t M = K > 0 ? x.numel() / K : 0;
  bool skinny = x.device().is_cuda() && x.dtype == DType::BF16 && M >= 1 && M <= 16;
  for (const ConcatLayer& l : layers) {
    skinny = skinny && l.w_nf4 && l.w_nf4->device() == x.device() && l.w_nf4->cols == K &&
             (!l.bias || (l.bias->device() == x.device() && l.bias->numel() == l.w_nf4->rows));
  }
  if (skinny) {
    check_float("linearConcat", "x", x);
    int64_t total = 0;
    std::vector<Tensor> biases;
    std::vector<cuda::Nf4ConcatPart> parts;
    for (const ConcatLayer& l : layers) {
      l.w_nf4->check("linearConcat");
      biases.push_back(bias_as("linearConcat", l.bias, l.w_nf4->rows, x));
      cuda::Nf4ConcatPart part;
      part.w = l.w_nf4->view();
      part.bias = biases.back().defined() ? biases.back().data() : nullptr;
      part.col = total;
      parts.push_back(part);
      total += l.w_nf4->rows;
    }
    Tensor out = empty(with_last(x.shape, total), x.dtype, x.device());
    bool done = false;
    FL_CUDA_LAUNCH(x.device(), cat("ops.linearConcat: x ", x.desc(), ", ", layers.size(), " nf4 weights [", total, ",", K, "]"),
                   done = cuda::fluxk_linear_nf4_concat(x.data(), x.dtype, parts, out.data(), M, total, stream));
    if (done) return out;
  }
#endif
  std::vector<Tensor> outs;
  outs.reserve(layers.size());
  for (const ConcatLayer& l : layers) outs.push_back(apply(l));
  return concat(outs, -1);
}

Tensor linear_parts(const std::vector<Tensor>& xs, const Tensor* w, const NF4* w_nf4, const Tensor* bias,
                    const LinearOptions& opts) {
  FL_CHECK(!xs.empty() && (w || w_nf4), "ops.linear: needs x parts and a weight");
  const auto apply = [&](const Tensor& x) { return w ? linear(x, *w, bias, opts) : linear_nf4(x, *w_nf4, bias, opts); };
  if (xs.size() == 1) return apply(xs[0]);
  const Tensor& x1 = xs[0];
  for (const Tensor& x : xs) {
    check_float("linear", "x part", x);
    FL_CHECK(x.ndim() == x1.ndim() && x.ndim() >= 1 && x.device() == x1.device() && x.dtype == x1.dtype,
             "ops.linear: the parts of x must share dims, device and dtype: ", x1.desc(), " and ", x.desc());
    for (size_t d = 0; d + 1 < x.shape.size(); d++) {
      FL_CHECK(x.shape[d] == x1.shape[d], "ops.linear: the parts of x differ before the last dim: ", x1.desc(), " and ",
               x.desc());
    }
  }
#if FLUXLAB_WITH_CUDA
  // Two parts on CUDA: the ping-pong GEMM reads each k-block from its part, so [x1 | x2] is never built.
  const int64_t N = w ? (w->ndim() == 2 ? w->shape[0] : -1) : w_nf4->rows;
  const int64_t K = w ? (w->ndim() == 2 ? w->shape[1] : -1) : w_nf4->cols;
  const int64_t k1 = x1.shape.back();
  if (xs.size() == 2 && x1.device().is_cuda() && N > 0 && k1 + xs[1].shape.back() == K &&
      (!w || (w->device() == x1.device() && w->dtype == x1.dtype)) && (!w_nf4 || w_nf4->device() == x1.device())) {
    const Shape out_shape = with_last(x1.shape, N);
    const int64_t M = numel_of(out_shape) / N;
    Tensor b = bias_as("linear", bias, N, x1);
    Epilogue ep = prepare_epilogue(x1, out_shape, M, N, opts);
    Tensor out = empty(out_shape, x1.dtype, x1.device());
    const void* bp = b.defined() ? b.data() : nullptr;
    // An NF4 weight is dequantized first only where linear_nf4 would dequantize it too (launch.h: the rows
    // measured); elsewhere the fused NF4 GEMM reads the two parts, as linear_nf4 would read the concatenation.
    const bool nf4_dequantized = w_nf4 && M > 0 &&
                                 cuda::fluxk_linear_nf4_dequantized_applies(x1.data(), x1.dtype, w_nf4->view(), bp,
                                                                            out.data(), M, ep.e);
    if (w_nf4 && !nf4_dequantized && M > 0 &&
        cuda::fluxk_linear_nf4_two_part_applies(x1.data(), k1, xs[1].data(), x1.dtype, w_nf4->view(), bp, out.data(),
                                                M, ep.e)) {
      bool done = false;
      FL_CUDA_LAUNCH(x1.device(), cat("ops.linear: x parts ", x1.desc(), " + ", xs[1].desc(), ", weight nf4 [", N, ",", K, "]"),
                     done = cuda::fluxk_linear_nf4_two_part(x1.data(), k1, xs[1].data(), x1.dtype, w_nf4->view(), bp,
                                                            out.data(), M, ep.e, stream));
      if (done) return out;
    }
    if (M > 0 && (!w_nf4 || nf4_dequantized) &&
        cuda::fluxk_linear_two_part_applies(x1.data(), k1, xs[1].data(), x1.dtype, bp, out.data(), M, N, K, ep.e)) {
      bool done = false;
      const std::string what = cat("ops.linear: x parts ", x1.desc(), " + ", xs[1].desc(), ", weight ",
                                   w ? w->desc() : cat("nf4 [", N, ",", K, "]"));
      if (w) {
        FL_CUDA_LAUNCH(x1.device(), what,
                       done = cuda::fluxk_linear_two_part(x1.data(), k1, xs[1].data(), x1.dtype, w->data(), bp,
                                                          out.data(), M, N, K, ep.e, cuda::Route::LinearTwoPartFluxkSm90,
                                                          stream));
      } else {
        // As linear_nf4's dequantized route: bitsandbytes' values in a bf16 workspace, then the GEMM.
        const NF4View view = w_nf4->view();
        Tensor weight_bf16 = empty({N, K}, DType::BF16, x1.device());
        Tensor decoded = w_nf4->double_quant() ? empty({(N * K + view.blocksize - 1) / view.blocksize}, DType::F32,
                                                       x1.device())
                                               : Tensor();
        FL_CUDA_LAUNCH(x1.device(), what, {
          if (decoded.defined()) cuda::nf4_absmax(view, decoded.ptr<float>(), stream);
          cuda::nf4_dequantize(view, decoded.defined() ? decoded.ptr<float>() : view.absmax, weight_bf16.data(),
                               DType::BF16, stream);
          done = cuda::fluxk_linear_two_part(x1.data(), k1, xs[1].data(), x1.dtype, weight_bf16.data(), bp, out.data(),
                                             M, N, K, ep.e, cuda::Route::LinearNf4TwoPartDequantizedSm90, stream);
        });
      }
      if (done) return out;
    }
  }
#endif
  return apply(concat(xs, -1));
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

Tensor sdpa(const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor* bias, const Tensor* mask, float scale,
            bool blhd) {
  check_float("sdpa", "q", q0);
  check_float("sdpa", "k", k0);
  check_float("sdpa", "v", v0);
  check_same_device("sdpa", {{"q", &q0}, {"k", &k0}, {"v", &v0}, {"bias", bias}, {"mask", mask}});
  auto ctx = [&] {
    return describe({{"q", &q0}, {"k", &k0}, {"v", &v0}, {"bias", bias}, {"mask", mask}}) +
           (blhd ? ", layout BLHD" : "");
  };
  const char* layout = blhd ? "[B,L,H,D]" : "[B,H,L,D]";
  FL_CHECK(q0.ndim() == 4 && k0.ndim() == 4 && v0.ndim() == 4, "ops.sdpa: q, k, v must be ", layout, " (", ctx(), ")");
  const int hd = blhd ? 2 : 1, ld = blhd ? 1 : 2;  // positions of the head and token dims
  const int64_t B = q0.shape[0], H = q0.shape[hd], Lq = q0.shape[ld], D = q0.shape[3], Lk = k0.shape[ld];
  FL_CHECK(k0.shape[0] == B && k0.shape[hd] == H && k0.shape[3] == D && v0.shape[0] == B && v0.shape[hd] == H &&
               v0.shape[ld] == Lk && v0.shape[3] == D,
           "ops.sdpa: shapes do not match (", ctx(), "): expects q ", blhd ? "[B,Lq,H,D]" : "[B,H,Lq,D]",
           ", k and v ", blhd ? "[B,Lk,H,D]" : "[B,H,Lk,D]");
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
  AttnLayout lay;
  auto strides = blhd ? AttnLayout::blhd : AttnLayout::bhld;
  strides(lay.q, H, Lq, D);
  strides(lay.k, H, Lk, D);
  strides(lay.v, H, Lk, D);
  strides(lay.o, H, Lq, D);
  if (q.device().is_cpu()) {
    cpu::sdpa(q, k, v, bias, mask, scale, out, B, H, Lq, Lk, lay);
  } else {
#if FLUXLAB_WITH_CUDA
    FL_CHECK(D <= 512, "ops.sdpa: head dim ", D, " > 512 is not supported on CUDA (", ctx(), ")");
    cuda::AttnShape a{B, H, Lq, Lk, D, {0, 0, 0, 0}, {0, 0, 0, 0}, lay};
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
    FL_CUDA_LAUNCH(q.device(), cat("ops.sdpa: ", ctx()), {
      if (!cuda::fluxk_sdpa(q.data(), k.data(), v.data(), out.data(), dt, a, bias != nullptr, mask != nullptr, scale,
                            stream) &&
          !cuda::fluxk_sdpa_bias_wide(q.data(), k.data(), v.data(), out.data(), dt, a, bias ? bias->data() : nullptr,
                                      bias ? bias->dtype : DType::F32, mask ? mask->data() : nullptr,
                                      mask ? mask->dtype : DType::U8, scale, stream)) {
        cuda::count_route(cuda::Route::SdpaPortable);
        cuda::sdpa(q.data(), k.data(), v.data(), out.data(), dt, a, bias ? bias->data() : nullptr,
                   bias ? bias->dtype : DType::F32, mask ? mask->data() : nullptr, mask ? mask->dtype : DType::U8,
                   scale, stream);
      }
    });
  }
  return out;
}

Tensor conv2d(const Tensor& x_in, const Tensor& w0, const Tensor* bias, int64_t stride, int64_t padding, bool upsample,
              const ConvNorm* norm) {
  check_float("conv2d", "x", x_in);
  // Fused only where the CUDA kernels take x as it is (2-byte, the conv's own dtype); otherwise the two ops.
  const bool fuse_norm = norm && !x_in.device().is_cpu() && x_in.dtype != DType::F32 && x_in.dtype == w0.dtype;
  const Tensor x0 = norm && !fuse_norm ? group_norm(x_in, norm->groups, norm->weight, norm->bias, norm->eps, norm->silu)
                                       : x_in;
  check_float("conv2d", "w", w0);
  check_same_device("conv2d", {{"x", &x0}, {"w", &w0}, {"bias", bias}});
  auto ctx = [&] {
    return describe({{"x", &x0}, {"w", &w0}, {"bias", bias}}) + (upsample ? ", upsample nearest2x" : "") +
           (norm ? cat(", group norm of ", norm->groups, " groups", norm->silu ? " + silu" : "") : "");
  };
  FL_CHECK(x0.ndim() == 4 && w0.ndim() == 4, "ops.conv2d: x must be [B,Cin,H,W] and w [Cout,Cin,KH,KW] (", ctx(), ")");
  FL_CHECK(w0.shape[1] == x0.shape[1], "ops.conv2d: channels differ (", ctx(), ")");
  if (fuse_norm) {
    FL_CHECK(norm->groups > 0 && x0.shape[1] % norm->groups == 0, "ops.conv2d: ", x0.shape[1], " channels of ",
             x0.desc(), " do not split into ", norm->groups, " norm groups");
  }
  FL_CHECK(stride >= 1 && padding >= 0, "ops.conv2d: invalid stride ", stride, " or padding ", padding);
  const int64_t B = x0.shape[0], H = x0.shape[2] * (upsample ? 2 : 1), W = x0.shape[3] * (upsample ? 2 : 1);
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
    cpu::conv2d(upsample ? upsample_nearest2x(x) : x, w, b.defined() ? &b : nullptr, stride, padding, out);
  } else {
#if FLUXLAB_WITH_CUDA
    const cuda::ConvNorm fused{fuse_norm ? norm->groups : 0,
                               fuse_norm && norm->weight ? norm->weight->data() : nullptr,
                               fuse_norm && norm->bias ? norm->bias->data() : nullptr,
                               fuse_norm ? param_dtype("conv2d", x0, norm->weight, norm->bias, Cin) : DType::F32,
                               fuse_norm ? norm->eps : 0.f, fuse_norm && norm->silu};
#endif
    const int64_t up = upsample ? 1 : 0;
    FL_CUDA_LAUNCH(x.device(), cat("ops.conv2d: ", ctx()),
                   cuda::conv2d(x.data(), w.data(), b.defined() ? b.data() : nullptr, out.data(), dt,
                                cuda::ConvShape{B, Cin, H >> up, W >> up, Cout, KH, KW, OH, OW, stride, padding,
                                                upsample},
                                fuse_norm ? &fused : nullptr, stream));
  }
  return out;
}

}  // namespace fl::ops
