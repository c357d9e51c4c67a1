// Host-side launch of a persistent sm90 kernel as thread-block clusters (TMA multicast between the CTAs of a
// cluster). Pure host work apart from the launch itself, so it is safe while a stream is being captured.
#pragma once

#include <cuda_runtime.h>

namespace fluxk {
namespace sm90 {

// Launches `kernel` as clusters of `cl` CTAs of `threads` threads: as many clusters as can be co-resident (the GPC
// layout may leave SMs out), at most `units` (the kernel walks units of cl tiles). *max_clusters caches the
// occupancy query (0 = not asked yet, -1 = none fits); give each kernel instantiation its own. Returns
// cudaErrorNotSupported, enqueuing nothing, where no cluster of this kernel fits on the device (a small MIG slice).
template <typename... Params, typename... Args>
cudaError_t launch_clusters(void (*kernel)(Params...), int threads, int cl, int units, int smem_bytes, int sms,
                            int* max_clusters, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cl;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (*max_clusters == 0) {
    cfg.gridDim = dim3((sms / cl) * cl);
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess || n <= 0) {
      cudaGetLastError();
      n = -1;
    }
    *max_clusters = n;
  }
  if (*max_clusters < 0) return cudaErrorNotSupported;
  const int clusters = units < *max_clusters ? units : *max_clusters;
  cfg.gridDim = dim3(clusters * cl);
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

}  // namespace sm90
}  // namespace fluxk
