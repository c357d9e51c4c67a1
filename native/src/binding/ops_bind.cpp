#include "../cpu/kernels.h"
#include "util.h"

namespace fl::js {

namespace {

Napi::Value W(const Napi::CallbackInfo& info, Tensor t) { return NativeTensor::wrap(info.Env(), std::move(t)); }

Napi::Value W(const Napi::CallbackInfo& info, std::vector<Tensor> ts) {
  Napi::Array result = Napi::Array::New(info.Env(), ts.size());
  for (uint32_t i = 0; i < ts.size(); i++) result.Set(i, NativeTensor::wrap(info.Env(), std::move(ts[i])));
  return result;
}

// An activation argument: 'gelu_tanh' (true) or null / undefined (false).
bool gelu_tanh_value(const Napi::Value& v, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return false;
  const std::string act = string_arg(v, what);
  FL_CHECK(act == "gelu_tanh", what, ": unknown activation '", act, "' (only 'gelu_tanh' is fused)");
  return true;
}

// A tensor or null / undefined.
const Tensor* opt_tensor_value(const Napi::Value& v, const char* what) {
  return v.IsNull() || v.IsUndefined() ? nullptr : &tensor_value(v, what);
}

// A weight argument, a tensor (*dense) or an NF4 descriptor parsed into `slot` (*nf4); the other is left null.
void weight_value(const Napi::Value& v, ops::NF4& slot, const Tensor** dense, const ops::NF4** nf4, const char* what) {
  if (NativeTensor::is(v)) {
    *dense = &tensor_value(v, what);
  } else {
    slot = nf4_arg(v, what);
    *nf4 = &slot;
  }
}

// Argument 0: a flat array of `per` values for each of its *count items (at least one).
Napi::Array flat_values(const Napi::CallbackInfo& info, uint32_t per, const char* what, const char* items,
                        uint32_t* count) {
  if (info.Length() < 1 || !info[0].IsArray()) fail(cat(what, ": expects an array of ", items, " values"));
  Napi::Array a = info[0].As<Napi::Array>();
  FL_CHECK(a.Length() > 0 && a.Length() % per == 0, what, ": expects ", per, " values per ", items, ", got ", a.Length());
  *count = a.Length() / per;
  return a;
}

// Arguments 3-5 of linear / linearNF4: activation ('gelu_tanh' or null), gate, residual.
ops::LinearOptions linear_options(const Napi::CallbackInfo& info) {
  const char* w = "ops.linear";
  ops::LinearOptions o;
  o.gelu_tanh = info.Length() > 3 && gelu_tanh_value(info[3], w);
  o.gate = opt_tensor_arg(info, 4, w);
  o.residual = opt_tensor_arg(info, 5, w);
  return o;
}

Napi::Value linear_js(const Napi::CallbackInfo& info) {
  return W(info, ops::linear(tensor_arg(info, 0, "ops.linear"), tensor_arg(info, 1, "ops.linear"),
                             opt_tensor_arg(info, 2, "ops.linear"), linear_options(info)));
}

Napi::Value linear_nf4_js(const Napi::CallbackInfo& info) {
  return W(info, ops::linear_nf4(tensor_arg(info, 0, "ops.linear"), nf4_arg(info[1], "ops.linear"),
                                 opt_tensor_arg(info, 2, "ops.linear"), linear_options(info)));
}

// linearParts(xs, weight (tensor or nf4 descriptor), bias, activation, gate, residual): linear of x given in parts
// along its last dim.
Napi::Value linear_parts_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.linear";
  if (info.Length() < 2 || !info[0].IsArray()) fail("ops.linear: expects an array of x parts");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<Tensor> xs;
  for (uint32_t i = 0; i < a.Length(); i++) xs.push_back(tensor_value(a.Get(i), w));
  ops::NF4 slot;
  const Tensor* dense = nullptr;
  const ops::NF4* quantized = nullptr;
  weight_value(info[1], slot, &dense, &quantized, w);
  return W(info, ops::linear_parts(xs, dense, quantized, opt_tensor_arg(info, 2, w), linear_options(info)));
}

// linearGroup(values): values = [x, weight (tensor or nf4 descriptor), bias | null, activation | null, gate | null,
// residual | null] per linear, flattened; returns their outputs.
Napi::Value linear_group_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.linearGroup";
  uint32_t count = 0;
  Napi::Array a = flat_values(info, 6, w, "linear", &count);
  std::vector<ops::NF4> nf4(count);  // sized once: items point into it
  std::vector<ops::GroupLinear> items(count);
  for (uint32_t l = 0; l < count; l++) {
    const uint32_t i = 6 * l;
    ops::GroupLinear& it = items[l];
    it.x = &tensor_value(a.Get(i), w);
    weight_value(a.Get(i + 1), nf4[l], &it.w, &it.w_nf4, w);
    it.bias = opt_tensor_value(a.Get(i + 2), w);
    it.opts.gelu_tanh = gelu_tanh_value(a.Get(i + 3), w);
    it.opts.gate = opt_tensor_value(a.Get(i + 4), w);
    it.opts.residual = opt_tensor_value(a.Get(i + 5), w);
  }
  return W(info, ops::linear_group(items));
}

// linearConcat(x, weights (tensors or nf4 descriptors), biases (tensor or null each)): the linears side by side.
Napi::Value linear_concat_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.linearConcat";
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray()) fail("ops.linearConcat: expects x, weights[], biases[]");
  Napi::Array weights = info[1].As<Napi::Array>();
  Napi::Array biases = info[2].As<Napi::Array>();
  FL_CHECK(weights.Length() == biases.Length(), "ops.linearConcat: ", weights.Length(), " weights but ", biases.Length(),
           " biases");
  std::vector<ops::NF4> nf4(weights.Length());
  std::vector<ops::ConcatLayer> layers(weights.Length());
  for (uint32_t i = 0; i < weights.Length(); i++) {
    weight_value(weights.Get(i), nf4[i], &layers[i].w, &layers[i].w_nf4, w);
    layers[i].bias = opt_tensor_value(biases.Get(i), w);
  }
  return W(info, ops::linear_concat(tensor_arg(info, 0, w), layers));
}

Napi::Value matmul_js(const Napi::CallbackInfo& info) {
  return W(info, ops::matmul(tensor_arg(info, 0, "ops.matmul"), tensor_arg(info, 1, "ops.matmul")));
}

Napi::Value sdpa_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.sdpa";
  std::string layout = info.Length() > 6 && !info[6].IsUndefined() ? string_arg(info[6], w) : "BHLD";
  FL_CHECK(layout == "BHLD" || layout == "BLHD", "ops.sdpa: layout must be 'BHLD' or 'BLHD', got '", layout, "'");
  return W(info, ops::sdpa(tensor_arg(info, 0, w), tensor_arg(info, 1, w), tensor_arg(info, 2, w),
                           opt_tensor_arg(info, 3, w), opt_tensor_arg(info, 4, w), float(number_arg(info[5], w)),
                           layout == "BLHD"));
}

Napi::Value layer_norm_modulate_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.layerNormModulate";
  return W(info, ops::layer_norm_modulate(tensor_arg(info, 0, w), tensor_arg(info, 1, w), tensor_arg(info, 2, w),
                                          float(number_arg(info[3], w))));
}

Napi::Value qk_norm_rope_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.qkNormRope";
  return W(info, ops::qk_norm_rope(tensor_arg(info, 0, w), tensor_arg(info, 1, w), tensor_arg(info, 2, w),
                                   tensor_arg(info, 3, w), float(number_arg(info[4], w))));
}

// jointQkv(tensors, heads, eps): tensors = [qkv, normQ, normK, cos, sin] per stream, flattened; returns [q, k, v].
Napi::Value joint_qkv_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.jointQkv";
  uint32_t count = 0;
  Napi::Array a = flat_values(info, 5, w, "stream", &count);
  std::vector<ops::QkvStream> streams;
  for (uint32_t i = 0; i < a.Length(); i += 5) {
    streams.push_back({&tensor_value(a.Get(i), w), &tensor_value(a.Get(i + 1), w), &tensor_value(a.Get(i + 2), w),
                       &tensor_value(a.Get(i + 3), w), &tensor_value(a.Get(i + 4), w)});
  }
  return W(info, ops::joint_qkv(streams, int_arg(info[1], w), float(number_arg(info[2], w))));
}

// jointQkvProjection(values, heads, eps, alongside): values = [x, weight (tensor or nf4 descriptor), bias | null,
// normQ, normK, cos, sin] per stream, flattened; returns [q, k, v], then alongside's output when given.
Napi::Value joint_qkv_projection_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.jointQkv";
  uint32_t count = 0;
  Napi::Array a = flat_values(info, 7, w, "stream", &count);
  std::vector<ops::NF4> nf4(count);  // sized once: streams point into it
  std::vector<ops::QkvProjectionStream> streams;
  for (uint32_t s = 0; s < count; s++) {
    const uint32_t i = 7 * s;
    const Tensor* dense = nullptr;
    const ops::NF4* quantized = nullptr;
    weight_value(a.Get(i + 1), nf4[s], &dense, &quantized, w);
    streams.push_back({&tensor_value(a.Get(i), w), dense, quantized, opt_tensor_value(a.Get(i + 2), w),
                       &tensor_value(a.Get(i + 3), w), &tensor_value(a.Get(i + 4), w), &tensor_value(a.Get(i + 5), w),
                       &tensor_value(a.Get(i + 6), w)});
  }
  // alongside: [weight, bias | null, activation | null] of a linear of the one stream's x, or null.
  ops::NF4 alongside_nf4;
  ops::GroupLinear alongside;
  const bool with = info.Length() > 3 && info[3].IsArray();
  if (with) {
    Napi::Array l = info[3].As<Napi::Array>();
    FL_CHECK(l.Length() == 3, "ops.jointQkv: the linear alongside takes [weight, bias, activation]");
    FL_CHECK(count == 1, "ops.jointQkv: a linear alongside needs exactly one stream, got ", count);
    alongside.x = streams[0].x;
    weight_value(l.Get(0u), alongside_nf4, &alongside.w, &alongside.w_nf4, w);
    alongside.bias = opt_tensor_value(l.Get(1u), w);
    alongside.opts.gelu_tanh = gelu_tanh_value(l.Get(2u), w);
  }
  return W(info, ops::joint_qkv_projection(streams, int_arg(info[1], w), float(number_arg(info[2], w)),
                                           with ? &alongside : nullptr));
}

Napi::Value timestep_embedding_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.timestepEmbedding";
  return W(info, ops::timestep_embedding(tensor_arg(info, 0, w), int_arg(info[1], w), bool_arg(info[2], w),
                                         float(number_arg(info[3], w)), float(number_arg(info[4], w)),
                                         float(number_arg(info[5], w))));
}

Napi::Value layer_norm_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.layerNorm";
  return W(info, ops::layer_norm(tensor_arg(info, 0, w), opt_tensor_arg(info, 1, w), opt_tensor_arg(info, 2, w),
                                 float(number_arg(info[3], w))));
}

Napi::Value rms_norm_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.rmsNorm";
  return W(info, ops::rms_norm(tensor_arg(info, 0, w), opt_tensor_arg(info, 1, w), float(number_arg(info[2], w))));
}

Napi::Value group_norm_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.groupNorm";
  return W(info, ops::group_norm(tensor_arg(info, 0, w), int_arg(info[1], w), opt_tensor_arg(info, 2, w),
                                 opt_tensor_arg(info, 3, w), float(number_arg(info[4], w)), bool_arg(info[5], w)));
}

Napi::Value softmax_js(const Napi::CallbackInfo& info) {
  return W(info, ops::softmax(tensor_arg(info, 0, "ops.softmax"), int_arg(info[1], "ops.softmax")));
}

Napi::Value unary_js(const Napi::CallbackInfo& info) {
  static const std::pair<const char*, UnaryOp> names[] = {
      {"gelu", UnaryOp::Gelu},       {"gelu_tanh", UnaryOp::GeluTanh}, {"quick_gelu", UnaryOp::QuickGelu},
      {"silu", UnaryOp::Silu},       {"tanh", UnaryOp::Tanh},          {"sigmoid", UnaryOp::Sigmoid},
      {"exp", UnaryOp::Exp},         {"scale", UnaryOp::Affine},       {"affine", UnaryOp::Affine},
      {"clamp", UnaryOp::Clamp},
  };
  std::string name = string_arg(info[1], "ops.unary");
  float a = float(number_arg(info[2], "ops.unary")), b = float(number_arg(info[3], "ops.unary"));
  for (const auto& [n, op] : names) {
    if (name == n) {
      if (name == "scale") b = 0.f;
      return W(info, ops::unary(tensor_arg(info, 0, n), op, a, b));
    }
  }
  fail(cat("ops.unary: unknown op '", name, "'"));
}

Napi::Value binary_js(const Napi::CallbackInfo& info) {
  std::string name = string_arg(info[2], "ops.binary");
  BinaryOp op = name == "add"   ? BinaryOp::Add
                : name == "sub" ? BinaryOp::Sub
                : name == "mul" ? BinaryOp::Mul
                : name == "div" ? BinaryOp::Div
                                : (fail(cat("ops.binary: unknown op '", name, "'")), BinaryOp::Add);
  return W(info, ops::binary(tensor_arg(info, 0, "ops.binary"), tensor_arg(info, 1, "ops.binary"), op));
}

Napi::Value modulate_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.modulate";
  return W(info, ops::modulate(tensor_arg(info, 0, w), tensor_arg(info, 1, w), tensor_arg(info, 2, w)));
}

Napi::Value embedding_js(const Napi::CallbackInfo& info) {
  return W(info, ops::embedding(tensor_arg(info, 0, "ops.embedding"), tensor_arg(info, 1, "ops.embedding")));
}

Napi::Value rope_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.rope";
  return W(info, ops::rope(tensor_arg(info, 0, w), tensor_arg(info, 1, w), tensor_arg(info, 2, w)));
}

// Arguments 6-10 (the optional group norm of x): groups (0: none), weight, bias, eps, silu.
Napi::Value conv2d_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.conv2d";
  const int64_t groups = int_arg(info[6], w);
  const ops::ConvNorm norm{groups, opt_tensor_arg(info, 7, w), opt_tensor_arg(info, 8, w),
                           float(number_arg(info[9], w)), bool_arg(info[10], w)};
  return W(info, ops::conv2d(tensor_arg(info, 0, w), tensor_arg(info, 1, w), opt_tensor_arg(info, 2, w),
                             int_arg(info[3], w), int_arg(info[4], w), bool_arg(info[5], w), groups ? &norm : nullptr));
}

Napi::Value upsample_js(const Napi::CallbackInfo& info) {
  return W(info, ops::upsample_nearest2x(tensor_arg(info, 0, "ops.upsampleNearest2x")));
}

Napi::Value nf4_quantize_js(const Napi::CallbackInfo& info) {
  const char* w = "ops.nf4Quantize";
  ops::NF4 q = ops::nf4_quantize(tensor_arg(info, 0, w), int_arg(info[1], w), bool_arg(info[2], w),
                                 int_arg(info[3], w));
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto put = [&](const char* key, const Tensor& t) {
    o.Set(key, t.defined() ? NativeTensor::wrap(env, t) : env.Null());
  };
  put("packed", q.packed);
  put("quantMap", q.quant_map);
  put("absmax", q.absmax);
  put("absmaxCodes", q.absmax_codes);
  put("nestedAbsmax", q.nested_absmax);
  put("nestedQuantMap", q.nested_map);
  o.Set("offset", Napi::Number::New(env, double(q.offset)));
  return o;
}

Napi::Value nf4_dequantize_js(const Napi::CallbackInfo& info) {
  return W(info, ops::nf4_dequantize(nf4_arg(info[0], "ops.nf4Dequantize"), dtype_arg(info[1], "ops.nf4Dequantize")));
}

Napi::Value nf4_absmax_js(const Napi::CallbackInfo& info) {
  return W(info, ops::nf4_absmax(nf4_arg(info[0], "nf4Absmax")));
}

Napi::Value nf4_codes_js(const Napi::CallbackInfo& info) {
  auto a = Napi::Float32Array::New(info.Env(), 16);
  for (int i = 0; i < 16; i++) a[size_t(i)] = cpu::kNF4Codes[i];
  return a;
}

Napi::Value dynamic_map_js(const Napi::CallbackInfo& info) {
  auto a = Napi::Float32Array::New(info.Env(), 256);
  cpu::dynamic_map(a.Data());
  return a;
}

}  // namespace

void register_op_functions(Napi::Env env, Napi::Object exports) {
  exports.Set("linear", Napi::Function::New<guarded<linear_js>>(env, "linear"));
  exports.Set("linearNF4", Napi::Function::New<guarded<linear_nf4_js>>(env, "linearNF4"));
  exports.Set("linearParts", Napi::Function::New<guarded<linear_parts_js>>(env, "linearParts"));
  exports.Set("linearConcat", Napi::Function::New<guarded<linear_concat_js>>(env, "linearConcat"));
  exports.Set("linearGroup", Napi::Function::New<guarded<linear_group_js>>(env, "linearGroup"));
  exports.Set("matmul", Napi::Function::New<guarded<matmul_js>>(env, "matmul"));
  exports.Set("sdpa", Napi::Function::New<guarded<sdpa_js>>(env, "sdpa"));
  exports.Set("layerNorm", Napi::Function::New<guarded<layer_norm_js>>(env, "layerNorm"));
  exports.Set("rmsNorm", Napi::Function::New<guarded<rms_norm_js>>(env, "rmsNorm"));
  exports.Set("groupNorm", Napi::Function::New<guarded<group_norm_js>>(env, "groupNorm"));
  exports.Set("softmax", Napi::Function::New<guarded<softmax_js>>(env, "softmax"));
  exports.Set("unary", Napi::Function::New<guarded<unary_js>>(env, "unary"));
  exports.Set("binary", Napi::Function::New<guarded<binary_js>>(env, "binary"));
  exports.Set("modulate", Napi::Function::New<guarded<modulate_js>>(env, "modulate"));
  exports.Set("embedding", Napi::Function::New<guarded<embedding_js>>(env, "embedding"));
  exports.Set("rope", Napi::Function::New<guarded<rope_js>>(env, "rope"));
  exports.Set("conv2d", Napi::Function::New<guarded<conv2d_js>>(env, "conv2d"));
  exports.Set("upsampleNearest2x", Napi::Function::New<guarded<upsample_js>>(env, "upsampleNearest2x"));
  exports.Set("nf4Quantize", Napi::Function::New<guarded<nf4_quantize_js>>(env, "nf4Quantize"));
  exports.Set("nf4Dequantize", Napi::Function::New<guarded<nf4_dequantize_js>>(env, "nf4Dequantize"));
  exports.Set("nf4CodeValues", Napi::Function::New<guarded<nf4_codes_js>>(env, "nf4CodeValues"));
  exports.Set("nf4Absmax", Napi::Function::New<guarded<nf4_absmax_js>>(env, "nf4Absmax"));
  exports.Set("layerNormModulate", Napi::Function::New<guarded<layer_norm_modulate_js>>(env, "layerNormModulate"));
  exports.Set("qkNormRope", Napi::Function::New<guarded<qk_norm_rope_js>>(env, "qkNormRope"));
  exports.Set("jointQkv", Napi::Function::New<guarded<joint_qkv_js>>(env, "jointQkv"));
  exports.Set("jointQkvProjection", Napi::Function::New<guarded<joint_qkv_projection_js>>(env, "jointQkvProjection"));
  exports.Set("timestepEmbedding", Napi::Function::New<guarded<timestep_embedding_js>>(env, "timestepEmbedding"));
  exports.Set("dynamicMap", Napi::Function::New<guarded<dynamic_map_js>>(env, "dynamicMap"));
}

}  // namespace fl::js
