// Module entry: registers the tensor, op and runtime functions (the contract is native/lib/binding.ts).
#include "../core/gpu.h"
#include "../cpu/kernels.h"
#include "util.h"

namespace fl::js {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData);
  register_tensor_functions(env, exports);
  register_op_functions(env, exports);
  register_cuda_functions(env, exports);
  Napi::Object info = Napi::Object::New(env);
  info.Set("cuda", Napi::Boolean::New(env, gpu::compiled()));
  info.Set("cudaRuntimeVersion", Napi::Number::New(env, gpu::compiled() ? gpu::runtime_version() : 0));
  info.Set("cudaArchs", Napi::String::New(env, gpu::archs()));
  info.Set("cpuKernels", Napi::String::New(env, cpu::gemm_kernel_name()));
  exports.Set("buildInfo", info);
  return exports;
}

}  // namespace fl::js

static Napi::Object InitFluxlab(Napi::Env env, Napi::Object exports) { return fl::js::init(env, exports); }

NODE_API_MODULE(fluxlab, InitFluxlab)
