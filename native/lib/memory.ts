import { binding, type NativePinned } from './binding';
import { leakedTensorCount } from './tensor';
import type { Device } from './types';

/** Statistics of one CUDA device's caching allocator (bytes unless named num*). */
export interface MemoryStats {
  /** Bytes in live tensors (rounded to the allocator's size classes). */
  allocated: number;
  /** Bytes obtained from cudaMalloc and held by the cache (live + cached free blocks). */
  reserved: number;
  /** Highest `allocated` since start or the last resetPeak(). */
  peakAllocated: number;
  /** Highest `reserved` since start or the last resetPeak(). */
  peakReserved: number;
  /** Allocations / frees served (cached or not). */
  numAllocs: number;
  numFrees: number;
  /** Calls the cache made to cudaMalloc / cudaFree. */
  numCudaMallocs: number;
  numCudaFrees: number;
  /** cudaMemGetInfo: free and total device memory. */
  free: number;
  total: number;
  /** Part of `reserved` held by CUDA graphs' private pools (cuda.captureGraph), until the graphs are disposed. */
  graphReserved: number;
  /** Live graphs holding a pool. */
  graphPools: number;
  /** Live bytes per allocation tag (see memory.withTag); untagged allocations count under ''. */
  byTag: Record<string, number>;
}

/** Statistics of host memory held by tensors and pinned buffers. */
export interface HostMemoryStats {
  /** Bytes in live host tensors and pinned buffers. */
  allocated: number;
  peakAllocated: number;
  /** Of which page-locked (pinned). */
  pinned: number;
  peakPinned: number;
  numAllocs: number;
  numFrees: number;
  byTag: Record<string, number>;
}

function requireCuda(what: string): void {
  const b = binding();
  if (!b.cudaAvailable()) {
    throw Object.assign(new Error(`${what}: CUDA is unavailable: ${b.cudaUnavailableReason()}`), {
      code: 'ERR_FLUXLAB_NO_CUDA',
    });
  }
}

function deviceIndex(device: Device | number | undefined, what: string): number {
  requireCuda(what);
  if (device === undefined || device === 'cuda') return binding().currentDevice();
  if (typeof device === 'number') return device;
  const m = /^cuda:(\d+)$/.exec(device);
  if (!m) throw new Error(`${what}: expects a CUDA device ('cuda', 'cuda:N' or N), got '${device}'`);
  return Number(m[1]);
}

export const memory = {
  /** The caching allocator's statistics for `device` (default: current). Throws without CUDA. */
  stats(device?: Device | number): MemoryStats {
    return binding().memoryStats(deviceIndex(device, 'memory.stats'));
  },

  /** Starts the peak counters again from the current values. */
  resetPeak(device?: Device | number): void {
    binding().resetPeak(deviceIndex(device, 'memory.resetPeak'));
  },

  /** Returns cached free blocks to the driver (cudaFree). Live tensors are untouched. */
  emptyCache(device?: Device | number): void {
    binding().emptyCache(deviceIndex(device, 'memory.emptyCache'));
  },

  /**
   * Runs `fn` with allocations (device and host) attributed to `tag` in `byTag` (e.g. 'transformer').
   * Tags nest; the previous tag comes back afterwards, for a returned promise when it settles (allocations
   * of unrelated work interleaved in that span are attributed to `tag` too).
   */
  withTag<T>(tag: string, fn: () => T): T {
    const b = binding();
    const previous = b.setAllocationTag(tag);
    let result: T;
    try {
      result = fn();
    } catch (err) {
      b.setAllocationTag(previous);
      throw err;
    }
    if (result instanceof Promise) return result.finally(() => b.setAllocationTag(previous)) as T;
    b.setAllocationTag(previous);
    return result;
  },

  /** Host memory statistics (works without CUDA). */
  hostStats(): HostMemoryStats {
    return binding().hostStats();
  },

  resetHostPeak(): void {
    binding().resetHostPeak();
  },

  /** Tensors the garbage collector reclaimed without dispose() (each is also reported as a warning). */
  leakedTensors(): number {
    return leakedTensorCount();
  },
};

/**
 * A page-locked host buffer (falls back to ordinary memory, `pinned === false`, when CUDA is unavailable).
 * Copies between it and the GPU run asynchronously at full PCIe speed. dispose() frees it at once and detaches
 * `bytes`.
 */
export class PinnedBuffer {
  readonly #native: NativePinned;

  /** @internal */
  constructor(native: NativePinned) {
    this.#native = native;
  }

  /** The memory (detached, length 0, after dispose). */
  get bytes(): Uint8Array {
    if (this.#native.disposed) throw new Error('PinnedBuffer.bytes: used after dispose()');
    return new Uint8Array(this.#native.buffer);
  }

  get byteLength(): number {
    return this.#native.byteLength;
  }

  get pinned(): boolean {
    return this.#native.pinned;
  }

  get isDisposed(): boolean {
    return this.#native.disposed;
  }

  dispose(): void {
    this.#native.dispose();
  }
}

/** Allocates a pinned host buffer of `bytes` bytes (counted in memory.hostStats().pinned). */
export function pinned(bytes: number): PinnedBuffer {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`pinned: invalid size ${bytes}`);
  return new PinnedBuffer(binding().pinnedAlloc(bytes));
}

/** Threads the CPU ops use (default: the machine's cores, or $FLUXLAB_NUM_THREADS). */
export const threads = {
  get(): number {
    return binding().getNumThreads();
  },
  set(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`threads.set: invalid thread count ${n}`);
    binding().setNumThreads(n);
  },
};
