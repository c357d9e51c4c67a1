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

namespace {

// A stream of joint_qkv as the checks see it: its projections' [B, L, width] and dtype (computed, or to be computed
// by the GEMM epilogue from x), the tensor that stands for them in messages and device checks, and its tables.
struct JointStream {
  const Tensor* rows;
  int64_t B, L, width;
  DType dtype;
  const Tensor *norm_q, *norm_k, *cos, *sin;
  std::string ctx;
};

struct JointGeometry {
  int64_t B = 0, H = 0, D = 0, total = 0;
  std::vector<int64_t> offsets;
};

// q, k, v [B, ΣL, H, D], uninitialised.
std::vector<Tensor> joint_outputs(const JointGeometry& g, DType dtype, Device device) {
  const Shape shape{g.B, g.total, g.H, g.D};
  return {empty(shape, dtype, device), empty(shape, dtype, device), empty(shape, dtype, device)};
}

JointGeometry check_joint(const std::vector<JointStream>& streams, int64_t heads, const char* what) {
  FL_CHECK(!streams.empty(), "ops.jointQkv: needs at least one stream");
  FL_CHECK(heads >= 1, "ops.jointQkv: heads must be a positive integer, got ", heads);
  const JointStream& first = streams[0];
  JointGeometry g;
  g.B = first.B;
  g.H = heads;
  FL_CHECK(first.width % (3 * heads) == 0, "ops.jointQkv: ", what, "'s last dim ", first.width,
           " is not 3·heads·D for ", heads, " heads (", first.ctx, ")");
  g.D = first.width / (3 * heads);
  FL_CHECK(g.D >= 2 && g.D % 2 == 0, "ops.jointQkv: the head dim must be even, got ", g.D, " (", first.ctx, ")");
  for (size_t i = 0; i < streams.size(); i++) {
    const JointStream& st = streams[i];
    check_float("jointQkv", "normQ", *st.norm_q);
    check_float("jointQkv", "normK", *st.norm_k);
    check_float("jointQkv", "cos", *st.cos);
    check_float("jointQkv", "sin", *st.sin);
    check_same_device("jointQkv", {{"stream 0", first.rows},
                                   {what, st.rows},
                                   {"normQ", st.norm_q},
                                   {"normK", st.norm_k},
                                   {"cos", st.cos},
                                   {"sin", st.sin}});
    FL_CHECK(st.B == g.B && st.width == first.width, "ops.jointQkv: ", what, " must be [", g.B, ",L,", first.width,
             "] like stream 0's (", st.ctx, ")");
    FL_CHECK(st.dtype == first.dtype, "ops.jointQkv: every ", what, " must have stream 0's dtype ",
             dtype_name(first.dtype), " (", st.ctx, ")");
    FL_CHECK(st.norm_q->numel() == g.D && st.norm_k->numel() == g.D, "ops.jointQkv: normQ and normK must have D = ",
             g.D, " values (", st.ctx, ")");
    FL_CHECK(st.cos->shape == Shape({st.L, g.D}) && st.sin->shape == Shape({st.L, g.D}),
             "ops.jointQkv: cos and sin must be [L,D] = [", st.L, ",", g.D, "] (", st.ctx, ")");
    FL_CHECK(st.cos->dtype == st.sin->dtype, "ops.jointQkv: cos and sin dtypes differ (", st.ctx, ")");
    g.offsets.push_back(g.total);
    g.total += st.L;
  }
  return g;
}

std::string qkv_context(size_t i, const QkvStream& st) {
  return cat("stream ", i, ": ",
             describe({{"qkv", st.qkv}, {"normQ", st.norm_q}, {"normK", st.norm_k}, {"cos", st.cos}, {"sin", st.sin}}));
}

// q, k, v from the streams' computed projections (`which` selects the streams to write; the others are already).
void join_computed(const std::vector<QkvStream>& streams, const std::vector<size_t>& which, const JointGeometry& g,
                   float eps, std::vector<Tensor>& out) {
  if (which.empty() || out[0].numel() == 0) return;
  const Tensor& first = *streams[which[0]].qkv;
  if (first.device().is_cpu()) {
    for (size_t i : which) {
      const QkvStream& st = streams[i];
      if (st.qkv->numel() == 0) continue;
      cpu::joint_qkv_stream(*st.qkv, *st.norm_q, *st.norm_k, *st.cos, *st.sin, g.offsets[i], g.H, eps, out[0], out[1],
                            out[2]);
    }
    return;
  }
#if FLUXLAB_WITH_CUDA
  std::vector<cuda::JointQkvStream> launch;
  for (size_t i : which) {
    const QkvStream& st = streams[i];
    launch.push_back({st.qkv->data(), st.qkv->shape[1], g.offsets[i], st.norm_q->data(), st.norm_q->dtype,
                      st.norm_k->data(), st.norm_k->dtype, st.cos->data(), st.sin->data(), st.cos->dtype});
  }
#endif
  FL_CUDA_LAUNCH(first.device(),
                 cat("ops.jointQkv: ", which.size(), " streams, ", qkv_context(which[0], streams[which[0]])),
                 cuda::joint_qkv(launch.data(), int(launch.size()), first.dtype, g.B, g.total, g.H, g.D, eps,
                                 out[0].data(), out[1].data(), out[2].data(), stream));
}

}  // namespace

std::vector<Tensor> joint_qkv(const std::vector<QkvStream>& streams, int64_t heads, float eps) {
  std::vector<JointStream> desc;
  for (size_t i = 0; i < streams.size(); i++) {
    const QkvStream& st = streams[i];
    FL_CHECK(st.qkv && st.norm_q && st.norm_k && st.cos && st.sin, "ops.jointQkv: stream ", i, " lacks a tensor");
    check_float("jointQkv", "qkv", *st.qkv);
    FL_CHECK(st.qkv->ndim() == 3, "ops.jointQkv: qkv must be [B,L,3·H·D] (", qkv_context(i, st), ")");
    desc.push_back({st.qkv, st.qkv->shape[0], st.qkv->shape[1], st.qkv->shape[2], st.qkv->dtype, st.norm_q, st.norm_k,
                    st.cos, st.sin, qkv_context(i, st)});
  }
  const JointGeometry g = check_joint(desc, heads, "qkv");
  std::vector<Tensor> out = joint_outputs(g, streams[0].qkv->dtype, streams[0].qkv->device());
  std::vector<size_t> all(streams.size());
  for (size_t i = 0; i < all.size(); i++) all[i] = i;
  join_computed(streams, all, g, eps, out);
  return out;
}

std::vector<Tensor> joint_qkv_projection(const std::vector<QkvProjectionStream>& streams, int64_t heads, float eps,
                                         const GroupLinear* alongside) {
  std::vector<JointStream> desc;
  for (size_t i = 0; i < streams.size(); i++) {
    const QkvProjectionStream& st = streams[i];
    FL_CHECK(st.x && (st.weight || st.weight_nf4) && st.norm_q && st.norm_k && st.cos && st.sin,
             "ops.jointQkv: stream ", i, " lacks a tensor");
    const std::string wdesc =
        st.weight ? st.weight->desc() : cat("nf4 [", st.weight_nf4->rows, ",", st.weight_nf4->cols, "]");
    std::string ctx = cat("stream ", i, ": x ", st.x->desc(), ", weight ", wdesc, ", ",
                          describe({{"bias", st.bias}, {"normQ", st.norm_q}, {"normK", st.norm_k}}), ", ",
                          describe({{"cos", st.cos}, {"sin", st.sin}}));
    check_float("jointQkv", "x", *st.x);
    FL_CHECK(st.x->ndim() == 3, "ops.jointQkv: x must be [B,L,K] (", ctx, ")");
    const int64_t N = st.weight ? (st.weight->ndim() == 2 ? st.weight->shape[0] : -1) : st.weight_nf4->rows;
    FL_CHECK(N >= 0, "ops.jointQkv: weight must be [N,K] (", ctx, ")");
    desc.push_back({st.x, st.x->shape[0], st.x->shape[1], N, st.x->dtype, st.norm_q, st.norm_k, st.cos, st.sin,
                    std::move(ctx)});
  }
  const JointGeometry g = check_joint(desc, heads, "x");
  const Tensor& first = *streams[0].x;
  FL_CHECK(!alongside || (streams.size() == 1 && alongside->x == streams[0].x && (alongside->w || alongside->w_nf4)),
           "ops.jointQkv: a linear alongside needs exactly one stream, whose x it takes, and a weight");
  // The linear alongside, computed on its own.
  const auto linear_alongside = [&]() {
    return alongside->w ? linear(first, *alongside->w, alongside->bias, alongside->opts)
                        : linear_nf4(first, *alongside->w_nf4, alongside->bias, alongside->opts);
  };
  std::vector<Tensor> out = joint_outputs(g, first.dtype, first.device());
  std::vector<Tensor> projected(streams.size());
  std::vector<QkvStream> computed(streams.size());
  std::vector<size_t> remaining;
  std::vector<bool> fused(streams.size(), false);
#if FLUXLAB_WITH_CUDA
  const auto fusable = [&](size_t i) {
    const QkvProjectionStream& st = streams[i];
    const bool shapes_ok = st.x->shape[2] == (st.weight ? st.weight->shape[1] : st.weight_nf4->cols) &&
                           (!st.bias || st.bias->numel() == desc[i].width);
    const bool same_device = (st.weight ? st.weight->device() : st.weight_nf4->device()) == first.device() &&
                             (!st.bias || st.bias->device() == first.device());
    return first.device().is_cuda() && shapes_ok && same_device && out[0].numel() > 0 &&
           (!st.bias || st.bias->dtype == st.x->dtype) && (!st.weight_nf4 || st.weight_nf4->standard_codes);
  };
  const auto target = [&](size_t i) {
    const QkvProjectionStream& st = streams[i];
    return cuda::JointQkvStream{nullptr, st.x->shape[1], g.offsets[i], st.norm_q->data(), st.norm_q->dtype,
                                st.norm_k->data(), st.norm_k->dtype, st.cos->data(), st.sin->data(), st.cos->dtype};
  };
  const cuda::JointQkvOutputs outs{out[0].data(), out[1].data(), out[2].data(), first.dtype, g.total, g.H, g.D, eps};
  // One NF4 stream and an NF4 linear of its x (Flux's single blocks: QKV and MLP up) in one launch.
  if (alongside && alongside->w_nf4 && streams[0].weight_nf4 && fusable(0)) {
    const QkvProjectionStream& st = streams[0];
    Nf4Linear l = prepare_nf4(first, *alongside->w_nf4, alongside->bias, alongside->opts);
    const cuda::JointQkvProjection qkv{first.data(), first.dtype, st.weight_nf4->view(), st.bias ? st.bias->data() : nullptr,
                                       g.B * first.shape[1], first.shape[2], target(0)};
    const cuda::Nf4LinearItem lin{first.data(), first.dtype, alongside->w_nf4->view(),
                                  l.b.defined() ? l.b.data() : nullptr, l.out.data(), l.M, l.ep.e};
    bool done = false;
    FL_CUDA_LAUNCH(first.device(), cat("ops.jointQkv: ", desc[0].ctx, "; with a linear of x, nf4 [", l.N, ",", l.K, "]"),
                   done = l.out.numel() > 0 && cuda::fluxk_joint_qkv_nf4_with_linear(qkv, lin, outs, stream));
    if (done) {
      out.push_back(l.out);
      return out;
    }
  }
  // Two NF4 streams (Flux's double blocks: text and image) in one launch, their tiles sharing the rounds.
  if (streams.size() == 2 && streams[0].weight_nf4 && streams[1].weight_nf4 && fusable(0) && fusable(1)) {
    cuda::JointQkvProjection pair[2];
    for (size_t i = 0; i < 2; i++) {
      const QkvProjectionStream& st = streams[i];
      pair[i] = {st.x->data(), st.x->dtype, st.weight_nf4->view(), st.bias ? st.bias->data() : nullptr,
                 g.B * st.x->shape[1], st.x->shape[2], target(i)};
    }
    bool done = false;
    FL_CUDA_LAUNCH(first.device(), cat("ops.jointQkv: ", desc[0].ctx, "; ", desc[1].ctx),
                   done = cuda::fluxk_linear_joint_qkv_nf4_pair(pair[0], pair[1], outs, stream));
    if (done) return out;
  }
#endif
  // The GEMM epilogue writes a stream's rows where it can (CUDA, sm90, bf16, D = 128); the others are projected by
  // linear and joined as joint_qkv joins them, so both ways give the same bits.
  for (size_t i = 0; i < streams.size(); i++) {
    const QkvProjectionStream& st = streams[i];
#if FLUXLAB_WITH_CUDA
    if (fusable(i)) {
      const NF4View view = st.weight_nf4 ? st.weight_nf4->view() : NF4View{};
      bool done = false;
      FL_CUDA_LAUNCH(first.device(), cat("ops.jointQkv: ", desc[i].ctx),
                     done = cuda::fluxk_linear_joint_qkv(
                         st.x->data(), st.x->dtype, st.weight ? st.weight->data() : nullptr,
                         st.weight ? st.weight->dtype : DType::BF16, st.weight_nf4 ? &view : nullptr,
                         st.bias ? st.bias->data() : nullptr, g.B * st.x->shape[1], st.x->shape[2], target(i), outs,
                         stream));
      fused[i] = done;
    }
#endif
    if (fused[i]) continue;
    projected[i] = st.weight ? linear(*st.x, *st.weight, st.bias, {}) : linear_nf4(*st.x, *st.weight_nf4, st.bias, {});
    computed[i] = {&projected[i], st.norm_q, st.norm_k, st.cos, st.sin};
    remaining.push_back(i);
  }
  join_computed(computed, remaining, g, eps, out);
  if (alongside) out.push_back(linear_alongside());
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
