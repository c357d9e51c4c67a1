// GPU memory for usage_reply, from the native addon's caching allocator. Reports only once something in the
// kernel has loaded @fluxlab/native (a cell imported the library): querying device memory would otherwise
// create a CUDA context, hundreds of MB of GPU memory, just to say that nothing is used.
import type { GpuMemoryUsage } from '../protocol/usage.js';

interface NativeGpuApi {
  cuda: { isAvailable(): boolean; currentDevice(): number; deviceName(device?: number): string };
  memory: { stats(device?: number): { allocated: number; reserved: number; free: number; total: number } };
}

export function nativeGpuMemory(): GpuMemoryUsage[] {
  let path: string;
  try {
    path = require.resolve('@fluxlab/native');
  } catch {
    return [];
  }
  if (require.cache[path] === undefined) return [];
  const native = require(path) as NativeGpuApi;
  if (!native.cuda.isAvailable()) return [];
  const device = native.cuda.currentDevice();
  const stats = native.memory.stats(device);
  return [
    {
      device,
      name: native.cuda.deviceName(device),
      total: stats.total,
      free: stats.free,
      allocated: stats.allocated,
      reserved: stats.reserved,
    },
  ];
}
