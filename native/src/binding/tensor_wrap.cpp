#include <cstring>

#include "../core/alloc.h"
#include "../core/float_types.h"
#include "../cpu/kernels.h"
#include "util.h"

namespace fl::js {

namespace {

thread_local std::optional<Tensor> g_pending;

}  // namespace

Napi::Function NativeTensor::define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeTensor",
                                   {
                                       InstanceAccessor<&NativeTensor::shape>("shape"),
                                       InstanceAccessor<&NativeTensor::dtype>("dtype"),
                                       InstanceAccessor<&NativeTensor::device>("device"),
                                       InstanceAccessor<&NativeTensor::pinned>("pinned"),
                                       InstanceAccessor<&NativeTensor::byte_length>("byteLength"),
                                       InstanceAccessor<&NativeTensor::disposed>("disposed"),
                                       InstanceAccessor<&NativeTensor::storage_id>("storageId"),
                                       InstanceMethod<&NativeTensor::dispose>("dispose"),
                                   });
  addon_data(env).tensor = Napi::Persistent(cls);
  return cls;
}

Napi::Object NativeTensor::wrap(Napi::Env env, Tensor t) {
  g_pending = std::move(t);
  Napi::Object obj = addon_data(env).tensor.New({});
  g_pending.reset();
  return obj;
}

bool NativeTensor::is(const Napi::Value& v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(addon_data(v.Env()).tensor.Value());
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  if (!g_pending) {
    throw Napi::TypeError::New(info.Env(), "NativeTensor objects are made by the addon's functions");
  }
  tensor_ = std::move(g_pending);
  g_pending.reset();
  last_desc_ = tensor_->desc();
}

const Tensor& NativeTensor::get(const char* what) const {
  if (!tensor_) fail(cat(what, ": tensor ", last_desc_, " was used after dispose()"), kErrDisposed);
  return *tensor_;
}

Napi::Value NativeTensor::shape(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const Tensor& t = get("shape");
    Napi::Array a = Napi::Array::New(info.Env(), t.shape.size());
    for (size_t i = 0; i < t.shape.size(); i++) a.Set(uint32_t(i), Napi::Number::New(info.Env(), double(t.shape[i])));
    return a;
  });
}

Napi::Value NativeTensor::dtype(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), dtype_name(get("dtype").dtype)); });
}

Napi::Value NativeTensor::device(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), get("device").device().str()); });
}

Napi::Value NativeTensor::pinned(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), get("pinned").storage->pinned); });
}

Napi::Value NativeTensor::byte_length(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(get("byteLength").nbytes())); });
}

Napi::Value NativeTensor::disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !tensor_); }

Napi::Value NativeTensor::storage_id(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(get("storageId").storage->id)); });
}

Napi::Value NativeTensor::dispose(const Napi::CallbackInfo& info) {
  tensor_.reset();
  return info.Env().Undefined();
}

const Tensor& tensor_value(const Napi::Value& v, const char* what) {
  if (!NativeTensor::is(v)) fail(cat(what, ": expected a tensor"));
  return NativeTensor::Unwrap(v.As<Napi::Object>())->get(what);
}

const Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what) { return tensor_value(info[i], what); }

const Tensor* opt_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return &tensor_value(info[i], what);
}

Shape shape_arg(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) fail(cat(what, ": shape must be an array"));
  Napi::Array a = v.As<Napi::Array>();
  Shape s(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value d = a.Get(i);
    if (!d.IsNumber()) fail(cat(what, ": shape entries must be numbers"));
    double x = d.As<Napi::Number>().DoubleValue();
    if (!(x >= 0) || x != double(int64_t(x))) fail(cat(what, ": invalid dimension ", x));
    s[i] = int64_t(x);
  }
  return s;
}

DType dtype_arg(const Napi::Value& v, const char* what) {
  DType d;
  std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (!dtype_from_name(name, &d)) fail(cat(what, ": unknown dtype '", name, "'"));
  return d;
}

Device device_arg(const Napi::Value& v, const char* what) {
  if (!v.IsString()) fail(cat(what, ": device must be a string"));
  return parse_device(v.As<Napi::String>().Utf8Value());
}

double number_arg(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) fail(cat(what, ": expected a number"));
  return v.As<Napi::Number>().DoubleValue();
}

int64_t int_arg(const Napi::Value& v, const char* what) {
  double x = number_arg(v, what);
  if (x != double(int64_t(x))) fail(cat(what, ": expected an integer, got ", x));
  return int64_t(x);
}

bool bool_arg(const Napi::Value& v, const char* what) {
  if (!v.IsBoolean()) fail(cat(what, ": expected a boolean"));
  return v.As<Napi::Boolean>().Value();
}

std::string string_arg(const Napi::Value& v, const char* what) {
  if (!v.IsString()) fail(cat(what, ": expected a string"));
  return v.As<Napi::String>().Utf8Value();
}

ops::NF4 nf4_arg(const Napi::Value& v, const char* what) {
  if (!v.IsObject()) fail(cat(what, ": expected an nf4 descriptor"));
  Napi::Object o = v.As<Napi::Object>();
  ops::NF4 q;
  auto opt = [&](const char* key, Tensor& out) {
    Napi::Value x = o.Get(key);
    if (!x.IsNull() && !x.IsUndefined()) out = tensor_value(x, what);
  };
  q.packed = tensor_value(o.Get("packed"), what);
  q.quant_map = tensor_value(o.Get("quantMap"), what);
  opt("absmax", q.absmax);
  opt("absmaxCodes", q.absmax_codes);
  opt("nestedAbsmax", q.nested_absmax);
  opt("nestedQuantMap", q.nested_map);
  q.rows = int_arg(o.Get("rows"), what);
  q.cols = int_arg(o.Get("cols"), what);
  q.blocksize = int_arg(o.Get("blocksize"), what);
  q.nested_blocksize = int_arg(o.Get("nestedBlocksize"), what);
  q.offset = float(number_arg(o.Get("offset"), what));
  Napi::Value standard = o.Get("standardCodes");
  q.standard_codes = standard.IsBoolean() && standard.As<Napi::Boolean>().Value();
  return q;
}

namespace {

Napi::Value make_wrapped(Napi::Env env, Tensor t) { return NativeTensor::wrap(env, std::move(t)); }

Napi::Value empty_js(const Napi::CallbackInfo& info) {
  return make_wrapped(info.Env(), empty(shape_arg(info[0], "Tensor.empty"), dtype_arg(info[1], "Tensor.empty"),
                                        device_arg(info[2], "Tensor.empty"), bool_arg(info[3], "Tensor.empty")));
}

Napi::Value full_js(const Napi::CallbackInfo& info) {
  return make_wrapped(info.Env(), ops::full(shape_arg(info[0], "Tensor.full"), dtype_arg(info[1], "Tensor.full"),
                                            device_arg(info[2], "Tensor.full"), number_arg(info[3], "Tensor.full")));
}

Napi::Value from_host_js(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() && !info[0].IsDataView()) fail("Tensor.fromArray: data must be a typed array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t* data = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return make_wrapped(info.Env(),
                      ops::from_host(data, ta.ByteLength(), dtype_arg(info[1], "Tensor.fromArray"),
                                     shape_arg(info[2], "Tensor.fromArray"), dtype_arg(info[3], "Tensor.fromArray"),
                                     device_arg(info[4], "Tensor.fromArray")));
}

Napi::Value from_file_js(const Napi::CallbackInfo& info) {
  double off = number_arg(info[1], "Tensor.fromFile");
  return make_wrapped(info.Env(), ops::from_file(string_arg(info[0], "Tensor.fromFile"), uint64_t(off),
                                                 shape_arg(info[2], "Tensor.fromFile"),
                                                 dtype_arg(info[3], "Tensor.fromFile"),
                                                 dtype_arg(info[4], "Tensor.fromFile"),
                                                 device_arg(info[5], "Tensor.fromFile")));
}

Napi::Value to_host_js(const Napi::CallbackInfo& info) {
  const Tensor& t = tensor_arg(info, 0, "toArray");
  Napi::Env env = info.Env();
  const size_t n = size_t(t.numel());
  switch (t.dtype) {
    case DType::F32: {
      auto a = Napi::Float32Array::New(env, n);
      if (n) ops::read_bytes(t, a.Data());
      return a;
    }
    case DType::BF16:
    case DType::F16: {
      std::vector<uint16_t> raw(n);
      if (n) ops::read_bytes(t, raw.data());
      auto a = Napi::Float32Array::New(env, n);
      cpu::convert(raw.data(), t.dtype, a.Data(), DType::F32, int64_t(n));
      return a;
    }
    case DType::I32: {
      auto a = Napi::Int32Array::New(env, n);
      if (n) ops::read_bytes(t, a.Data());
      return a;
    }
    case DType::I64: {
      auto a = Napi::BigInt64Array::New(env, n);
      if (n) ops::read_bytes(t, a.Data());
      return a;
    }
    case DType::U8: {
      auto a = Napi::Uint8Array::New(env, n);
      if (n) ops::read_bytes(t, a.Data());
      return a;
    }
  }
  return env.Undefined();
}

Napi::Value to_bytes_js(const Napi::CallbackInfo& info) {
  const Tensor& t = tensor_arg(info, 0, "toBytes");
  auto a = Napi::Uint8Array::New(info.Env(), t.nbytes());
  if (t.nbytes()) ops::read_bytes(t, a.Data());
  return a;
}

Napi::Value to_js(const Napi::CallbackInfo& info) {
  const Tensor& t = tensor_arg(info, 0, "to");
  return make_wrapped(info.Env(), ops::to(t, device_arg(info[1], "to"), dtype_arg(info[2], "to"),
                                          bool_arg(info[3], "to"), bool_arg(info[4], "to")));
}

Napi::Value copy_into_js(const Napi::CallbackInfo& info) {
  ops::copy_into(tensor_arg(info, 0, "copyFrom"), tensor_arg(info, 1, "copyFrom"), bool_arg(info[2], "copyFrom"));
  return info.Env().Undefined();
}

Napi::Value view_js(const Napi::CallbackInfo& info) {
  return make_wrapped(info.Env(), view(tensor_arg(info, 0, "reshape"), shape_arg(info[1], "reshape")));
}

Napi::Value slice_js(const Napi::CallbackInfo& info) {
  return make_wrapped(info.Env(), ops::slice(tensor_arg(info, 0, "ops.slice"), int_arg(info[1], "ops.slice"),
                                             int_arg(info[2], "ops.slice"), int_arg(info[3], "ops.slice")));
}

Napi::Value permute_js(const Napi::CallbackInfo& info) {
  Shape dims = shape_arg(info[1], "ops.permute");
  return make_wrapped(info.Env(), ops::permute(tensor_arg(info, 0, "ops.permute"), dims));
}

Napi::Value concat_js(const Napi::CallbackInfo& info) {
  if (!info[0].IsArray()) fail("ops.concat: expects an array of tensors");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<Tensor> ts;
  for (uint32_t i = 0; i < a.Length(); i++) ts.push_back(tensor_value(a.Get(i), "ops.concat"));
  return make_wrapped(info.Env(), ops::concat(ts, int_arg(info[1], "ops.concat")));
}

}  // namespace

void register_tensor_functions(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", NativeTensor::define(env));
  exports.Set("empty", Napi::Function::New<guarded<empty_js>>(env, "empty"));
  exports.Set("full", Napi::Function::New<guarded<full_js>>(env, "full"));
  exports.Set("fromHost", Napi::Function::New<guarded<from_host_js>>(env, "fromHost"));
  exports.Set("fromFile", Napi::Function::New<guarded<from_file_js>>(env, "fromFile"));
  exports.Set("toHost", Napi::Function::New<guarded<to_host_js>>(env, "toHost"));
  exports.Set("toBytes", Napi::Function::New<guarded<to_bytes_js>>(env, "toBytes"));
  exports.Set("to", Napi::Function::New<guarded<to_js>>(env, "to"));
  exports.Set("copyInto", Napi::Function::New<guarded<copy_into_js>>(env, "copyInto"));
  exports.Set("view", Napi::Function::New<guarded<view_js>>(env, "view"));
  exports.Set("slice", Napi::Function::New<guarded<slice_js>>(env, "slice"));
  exports.Set("permute", Napi::Function::New<guarded<permute_js>>(env, "permute"));
  exports.Set("concat", Napi::Function::New<guarded<concat_js>>(env, "concat"));
}

}  // namespace fl::js
