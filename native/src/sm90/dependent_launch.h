// Programmatic dependent launch (compute capability 9.0+; CUDA programming guide, "Programmatic Dependent Launch and
// Synchronization"). The GEMM, GEMV and attention kernels are launched with programmatic stream serialization, so the
// next of them in a stream (or a CUDA graph captured from it) may be scheduled, and set up its shared memory and
// barriers, while the previous one's last CTAs still run; it waits in grid_dependency_sync() until that grid has
// completed and its writes are visible. A kernel launched this way must call grid_dependency_sync() before it reads
// or writes global memory, and every kernel that does so launches its own dependents from there.
#pragma once

#include <cuda_runtime.h>

namespace fluxk {

__device__ __forceinline__ void grid_dependency_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device takes the attribute (older GPUs run the launch as an ordinary one: the device function
// above compiles to nothing below sm_90).
inline bool dependent_launch_supported() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 9;
}

inline void set_dependent_launch(cudaLaunchAttribute* attr) {
  attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr->val.programmaticStreamSerializationAllowed = 1;
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization where the device has it.
template <typename... Params, typename... Args>
cudaError_t launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                             Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  set_dependent_launch(&attr[0]);
  cfg.attrs = attr;
  cfg.numAttrs = dependent_launch_supported() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace fluxk
