/**
 * @fluxlab/native — tensors, CPU reference ops and CUDA kernels for fluxlab.
 *
 * ```ts
 * import { Tensor, ops, tidy, cuda, memory } from '@fluxlab/native';
 * const device = cuda.isAvailable() ? 'cuda' : 'cpu';
 * const y = tidy(() => {
 *   const x = Tensor.fromArray([1, 2, 3, 4, 5, 6], [2, 3], { device });
 *   const w = Tensor.ones([4, 3], { device, dtype: 'bfloat16' });
 *   return ops.gelu(ops.linear(x, w), 'tanh');          // x and w are disposed here, y survives
 * });
 * console.log(y.toArray(), memory.hostStats());
 * y.dispose();
 * ```
 *
 * Lifetimes are explicit (dispose(), tidy(), Scope); ops launch on the current CUDA stream without host
 * synchronisation and allocate only through the caching allocator, so they can be captured in CUDA graphs.
 * docs/native.md describes the build, the API and the tests.
 */
export type { DType, DenseDType, Device, TypedArray, HostArray, TensorOptions } from './types';
export { DTYPE_BYTES, isDType, isFloatDType, dtypeFromSafetensors, dtypeToSafetensors } from './types';
export { Tensor, NF4Tensor, Generator, pythonFloatRepr, resolveDevice } from './tensor';
export type { BnbNF4Tensors, BnbQuantState, NF4Parts } from './tensor';
export { tidy, keep, Scope } from './scope';
export { ops, nf4CodeValues, dynamicMap } from './ops';
export type { Conv2dNorm, Conv2dOptions, SdpaOptions, GeluApproximation, JointQkvStream, JointQkvTables, LinearOptions, TimestepEmbeddingOptions } from './ops';
export { cuda, Stream, Event, CudaGraph } from './cuda';
export type { DeviceProperties, OpProfile, ProfiledOp } from './cuda';
export { memory, pinned, PinnedBuffer, threads } from './memory';
export type { MemoryStats, HostMemoryStats } from './memory';
export { addonPath } from './binding';
export type { NativeBuildInfo } from './binding';

import { binding, type NativeBuildInfo } from './binding';

/** How the loaded addon was built (CUDA or CPU-only, CUDA targets, CPU kernel flavour). */
export function buildInfo(): NativeBuildInfo {
  return binding().buildInfo;
}
