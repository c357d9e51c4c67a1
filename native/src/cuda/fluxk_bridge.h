// What the launchers need to call the fluxk kernels of src/sm80/vae_t5.h: dtype mapping, workspaces from the
// caching allocator, and the rule for falling back to the portable kernels.
#pragma once
#include <cuda_runtime_api.h>

#include "../core/tensor.h"
#include "../sm80/vae_t5.h"
#include "check.h"

namespace fl::cuda {

inline fluxk::ElemType elem_type(DType d) {
  switch (d) {
    case DType::F32: return fluxk::ElemType::kF32;
    case DType::BF16: return fluxk::ElemType::kBF16;
    case DType::F16: return fluxk::ElemType::kF16;
    case DType::U8: return fluxk::ElemType::kU8;
    case DType::I32: return fluxk::ElemType::kI32;
    case DType::I64: return fluxk::ElemType::kI64;
  }
  return fluxk::ElemType::kF32;
}

// Device scratch on the current device and stream, returned to the allocator's cache (stream-ordered, so safe
// while kernels that use it are still queued) when the tensor goes out of scope.
inline Tensor scratch(int64_t bytes) {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return empty({bytes > 0 ? bytes : 1}, DType::U8, Device::cuda(dev));
}

// A fluxk launcher's answer: true when the work was enqueued, false when the kernel does not cover the case
// (the caller then runs its portable kernel, which rewrites the whole output); other errors throw. Which route
// served an op is counted (launch.h, Route), so tests can tell a fast kernel from a silent fallback.
inline bool fluxk_ran(cudaError_t err, const char* what) {
  if (err == cudaErrorInvalidValue || err == cudaErrorNotSupported) {
    cudaGetLastError();
    return false;
  }
  check(err, what);
  return true;
}

}  // namespace fl::cuda
