// The contract between the compiled addon (native/src/binding/*.cpp) and the TypeScript layer. Everything the
// addon exports is declared here; the rest of lib/ wraps it with lifetimes, defaults and documentation.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { DenseDType } from './types';

/** A dense tensor owned by the addon: contiguous storage (shared by views), shape and element type. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DenseDType;
  /** 'cpu' or 'cuda:N'. */
  readonly device: string;
  readonly pinned: boolean;
  readonly byteLength: number;
  readonly disposed: boolean;
  /** Equal for tensors that share storage (views). */
  readonly storageId: number;
  dispose(): void;
}

/** The parts of a bitsandbytes NF4 weight, as the native NF4 ops take them. */
export interface NativeNF4 {
  packed: NativeTensor;
  quantMap: NativeTensor;
  rows: number;
  cols: number;
  blocksize: number;
  absmax: NativeTensor | null;
  absmaxCodes: NativeTensor | null;
  nestedAbsmax: NativeTensor | null;
  nestedQuantMap: NativeTensor | null;
  nestedBlocksize: number;
  offset: number;
  /** quantMap is bitsandbytes' NF4 code book (the fluxk kernels have it built in; others read quantMap). */
  standardCodes?: boolean;
}

export interface NativeNF4Parts {
  packed: NativeTensor;
  quantMap: NativeTensor;
  absmax: NativeTensor | null;
  absmaxCodes: NativeTensor | null;
  nestedAbsmax: NativeTensor | null;
  nestedQuantMap: NativeTensor | null;
  offset: number;
}

export interface NativeStream {
  readonly device: number;
  /** Distinct per stream; 0 for a device's default (legacy) stream. */
  readonly id: number;
  readonly disposed: boolean;
  synchronize(): void;
  query(): boolean;
  waitEvent(event: NativeEvent): void;
  dispose(): void;
}

export interface NativeEvent {
  readonly device: number;
  readonly disposed: boolean;
  record(stream: NativeStream): void;
  synchronize(): void;
  query(): boolean;
  elapsedMs(end: NativeEvent): number;
  dispose(): void;
}

export interface NativeGenerator {
  manualSeed(seed: bigint): void;
  readonly seed: bigint;
}

/** A captured CUDA graph (see cuda.captureGraph). */
export interface NativeGraph {
  readonly device: number;
  /** Bytes of device memory its private pool holds. */
  readonly memoryBytes: number;
  readonly disposed: boolean;
  endCapture(): void;
  abortCapture(): void;
  replay(): void;
  dispose(): void;
}

export interface NativePinned {
  readonly buffer: ArrayBuffer;
  readonly byteLength: number;
  /** False when CUDA is unavailable: the buffer is then ordinary (pageable) host memory. */
  readonly pinned: boolean;
  readonly disposed: boolean;
  dispose(): void;
}

export interface NativeDeviceStats {
  allocated: number;
  reserved: number;
  peakAllocated: number;
  peakReserved: number;
  numAllocs: number;
  numFrees: number;
  numCudaMallocs: number;
  numCudaFrees: number;
  free: number;
  total: number;
  graphReserved: number;
  graphPools: number;
  byTag: Record<string, number>;
}

export interface NativeHostStats {
  allocated: number;
  peakAllocated: number;
  pinned: number;
  peakPinned: number;
  numAllocs: number;
  numFrees: number;
  byTag: Record<string, number>;
}

export interface NativeDeviceProperties {
  name: string;
  major: number;
  minor: number;
  totalMemory: number;
  multiProcessorCount: number;
  l2CacheSize: number;
  sharedMemPerBlockOptin: number;
}

export interface NativeBuildInfo {
  /** Compiled with the CUDA backend. */
  cuda: boolean;
  /** CUDA runtime version the addon was built against (e.g. 13000), 0 without CUDA. */
  cudaRuntimeVersion: number;
  /** The CUDA targets compiled in, e.g. 'sm_90a;sm_80;compute_80'. */
  cudaArchs: string;
  /** CPU kernels chosen at run time: 'avx2' or 'generic'. */
  cpuKernels: string;
}

export interface Binding {
  buildInfo: NativeBuildInfo;

  empty(shape: number[], dtype: DenseDType, device: string, pinned: boolean): NativeTensor;
  full(shape: number[], dtype: DenseDType, device: string, value: number): NativeTensor;
  fromHost(data: ArrayBufferView, storedDtype: DenseDType, shape: number[], dtype: DenseDType, device: string): NativeTensor;
  fromFile(
    path: string,
    byteOffset: number,
    shape: number[],
    storedDtype: DenseDType,
    dtype: DenseDType,
    device: string,
  ): NativeTensor;
  toHost(t: NativeTensor): Float32Array | Int32Array | BigInt64Array | Uint8Array;
  toBytes(t: NativeTensor): Uint8Array;
  to(t: NativeTensor, device: string, dtype: DenseDType, nonBlocking: boolean, pinned: boolean): NativeTensor;
  copyInto(dst: NativeTensor, src: NativeTensor, nonBlocking: boolean): void;
  view(t: NativeTensor, shape: number[]): NativeTensor;
  slice(t: NativeTensor, dim: number, start: number, end: number): NativeTensor;
  permute(t: NativeTensor, dims: number[]): NativeTensor;
  concat(ts: NativeTensor[], dim: number): NativeTensor;

  linear(
    x: NativeTensor,
    weight: NativeTensor,
    bias: NativeTensor | null,
    activation: 'gelu_tanh' | null,
    gate: NativeTensor | null,
    residual: NativeTensor | null,
  ): NativeTensor;
  linearNF4(
    x: NativeTensor,
    weight: NativeNF4,
    bias: NativeTensor | null,
    activation: 'gelu_tanh' | null,
    gate: NativeTensor | null,
    residual: NativeTensor | null,
  ): NativeTensor;
  /** linear of x given as parts along its last dim (their concatenation, not built on CUDA). */
  linearParts(
    xs: NativeTensor[],
    weight: NativeTensor | NativeNF4,
    bias: NativeTensor | null,
    activation: 'gelu_tanh' | null,
    gate: NativeTensor | null,
    residual: NativeTensor | null,
  ): NativeTensor;
  /** Independent linears: [x, weight, bias, activation, gate, residual] per linear, flattened; their outputs. */
  linearGroup(values: (NativeTensor | NativeNF4 | 'gelu_tanh' | null)[]): NativeTensor[];
  /** The linears of one x side by side along the last dim. */
  linearConcat(x: NativeTensor, weights: (NativeTensor | NativeNF4)[], biases: (NativeTensor | null)[]): NativeTensor;
  matmul(a: NativeTensor, b: NativeTensor): NativeTensor;
  sdpa(
    q: NativeTensor,
    k: NativeTensor,
    v: NativeTensor,
    bias: NativeTensor | null,
    mask: NativeTensor | null,
    scale: number,
    layout: 'BHLD' | 'BLHD',
  ): NativeTensor;
  layerNormModulate(x: NativeTensor, shift: NativeTensor, scale: NativeTensor, eps: number): NativeTensor;
  qkNormRope(x: NativeTensor, weight: NativeTensor, cos: NativeTensor, sin: NativeTensor, eps: number): NativeTensor;
  /** `streams`: [qkv, normQ, normK, cos, sin] per stream, flattened; returns [q, k, v]. */
  jointQkv(streams: NativeTensor[], heads: number, eps: number): NativeTensor[];
  /** `values`: [x, weight (tensor or nf4), bias | null, normQ, normK, cos, sin] per stream, flattened; [q, k, v]. */
  jointQkvProjection(
    values: (NativeTensor | NativeNF4 | null)[],
    heads: number,
    eps: number,
    alongside: [NativeTensor | NativeNF4, NativeTensor | null, 'gelu_tanh' | null] | null,
  ): NativeTensor[];
  timestepEmbedding(
    t: NativeTensor,
    dim: number,
    flipSinToCos: boolean,
    downscaleFreqShift: number,
    scale: number,
    maxPeriod: number,
  ): NativeTensor;
  layerNorm(x: NativeTensor, weight: NativeTensor | null, bias: NativeTensor | null, eps: number): NativeTensor;
  rmsNorm(x: NativeTensor, weight: NativeTensor | null, eps: number): NativeTensor;
  groupNorm(
    x: NativeTensor,
    groups: number,
    weight: NativeTensor | null,
    bias: NativeTensor | null,
    eps: number,
    silu: boolean,
  ): NativeTensor;
  softmax(x: NativeTensor, dim: number): NativeTensor;
  unary(x: NativeTensor, op: string, a: number, b: number): NativeTensor;
  binary(a: NativeTensor, b: NativeTensor, op: 'add' | 'sub' | 'mul' | 'div'): NativeTensor;
  modulate(x: NativeTensor, shift: NativeTensor, scale: NativeTensor): NativeTensor;
  embedding(weight: NativeTensor, ids: NativeTensor): NativeTensor;
  rope(x: NativeTensor, cos: NativeTensor, sin: NativeTensor): NativeTensor;
  conv2d(
    x: NativeTensor,
    w: NativeTensor,
    b: NativeTensor | null,
    stride: number,
    padding: number,
    upsample: boolean,
    normGroups: number,
    normWeight: NativeTensor | null,
    normBias: NativeTensor | null,
    normEps: number,
    normSilu: boolean,
  ): NativeTensor;
  upsampleNearest2x(x: NativeTensor): NativeTensor;
  nf4Quantize(w: NativeTensor, blocksize: number, doubleQuant: boolean, nestedBlocksize: number): NativeNF4Parts;
  nf4Dequantize(w: NativeNF4, dtype: DenseDType): NativeTensor;
  nf4CodeValues(): Float32Array;
  nf4Absmax(w: NativeNF4): NativeTensor;
  dynamicMap(signed: boolean): Float32Array;

  generatorCreate(seed: bigint): NativeGenerator;
  randn(gen: NativeGenerator, shape: number[], dtype: DenseDType, device: string): NativeTensor;
  randomNormal(shape: number[], dtype: DenseDType, device: string, seed: bigint, mean: number, std: number): NativeTensor;

  setNumThreads(n: number): void;
  getNumThreads(): number;

  cudaAvailable(): boolean;
  cudaUnavailableReason(): string;
  deviceCount(): number;
  deviceProperties(device: number): NativeDeviceProperties;
  currentDevice(): number;
  setDevice(device: number): void;
  synchronize(device: number): void;
  streamCreate(device: number, priority: number): NativeStream;
  defaultStream(device: number): NativeStream;
  currentStream(device: number): NativeStream;
  setCurrentStream(device: number, stream: NativeStream): void;
  eventCreate(device: number, timing: boolean): NativeEvent;
  recordStream(t: NativeTensor, stream: NativeStream): void;
  graphCaptureBegin(device: number): NativeGraph;
  isCapturing(device: number): boolean;
  routeCounts(): Record<string, number>;
  resetRouteCounts(): void;
  profileBegin(): void;
  profileEnd(): [string, number][];

  memoryStats(device: number): NativeDeviceStats;
  resetPeak(device: number): void;
  emptyCache(device: number): void;
  setAllocationTag(tag: string): string;
  hostStats(): NativeHostStats;
  resetHostPeak(): void;
  pinnedAlloc(bytes: number): NativePinned;
}

let loaded: Binding | undefined;

/** Where the compiled addon is looked for: $FLUXLAB_NATIVE_ADDON, else native/build/Release/fluxlab.node. */
export function addonPath(): string {
  return process.env.FLUXLAB_NATIVE_ADDON ?? join(__dirname, '..', 'build', 'Release', 'fluxlab.node');
}

/** The addon, loaded on first use so that importing this package never fails by itself. */
export function binding(): Binding {
  if (loaded) return loaded;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new Error(`fluxlab native addon not found at ${path}: run \`npm run build -w native\` (or npm run build)`);
  }
  loaded = require(path) as Binding;
  return loaded;
}
