// Argument conversion and error translation for the Node-API boundary.
#pragma once
#include <napi.h>

#include <optional>
#include <string>

#include "../core/error.h"
#include "../core/tensor.h"
#include "../ops/ops.h"

namespace fl::js {

// Runs f, turning fl::Error into a JS Error carrying `code`, and other C++ exceptions into JS Errors.
template <class F>
auto guard(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, e.code));
    throw err;
  } catch (const std::bad_alloc&) {
    Napi::Error err = Napi::Error::New(env, "out of host memory");
    err.Set("code", Napi::String::New(env, kErrOom));
    throw err;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// Wraps a plain callback so every exported function goes through guard().
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] { return F(info); });
}

// Constructors of the addon's classes, per Node environment (the main thread and each worker get their own).
struct AddonData {
  Napi::FunctionReference tensor, stream, event, pinned, generator, graph;
};
inline AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, Tensor t);
  static bool is(const Napi::Value& v);

  explicit NativeTensor(const Napi::CallbackInfo& info);
  // The tensor, or a use-after-dispose error naming `what`.
  const Tensor& get(const char* what) const;

 private:
  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value pinned(const Napi::CallbackInfo& info);
  Napi::Value byte_length(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  Napi::Value storage_id(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);

  std::optional<Tensor> tensor_;
  std::string last_desc_;
};

const Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what);
// nullptr for null/undefined.
const Tensor* opt_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what);
const Tensor& tensor_value(const Napi::Value& v, const char* what);
Shape shape_arg(const Napi::Value& v, const char* what);
DType dtype_arg(const Napi::Value& v, const char* what);
Device device_arg(const Napi::Value& v, const char* what);
double number_arg(const Napi::Value& v, const char* what);
int64_t int_arg(const Napi::Value& v, const char* what);
bool bool_arg(const Napi::Value& v, const char* what);
std::string string_arg(const Napi::Value& v, const char* what);
ops::NF4 nf4_arg(const Napi::Value& v, const char* what);

void register_tensor_functions(Napi::Env env, Napi::Object exports);
void register_op_functions(Napi::Env env, Napi::Object exports);
void register_cuda_functions(Napi::Env env, Napi::Object exports);

}  // namespace fl::js
