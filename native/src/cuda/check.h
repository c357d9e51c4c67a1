// CUDA error checks for host code: every failing call becomes an fl::Error (ERR_FLUXLAB_CUDA) naming what was
// being done; sticky errors are reported the same way when they surface.
#pragma once
#include <cuda_runtime_api.h>

#include "../core/error.h"

namespace fl::cuda {

[[noreturn]] void throw_cuda(cudaError_t err, const std::string& what);

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw_cuda(err, what);
}

inline void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw_cuda(err, what);
}

// After a kernel launch: reports launch errors (bad configuration, earlier faults) without synchronising.
inline void check_launch(const std::string& what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, what);
}

// Makes `device` current for the scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

cudaStream_t stream(int device);

}  // namespace fl::cuda

namespace fl::cuda {

// Reports a launch error with a context built only on failure (op name, shapes, dtypes).
template <class F>
inline void check_launch_ctx(F&& context) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, context());
}

}  // namespace fl::cuda
