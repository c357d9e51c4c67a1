import { binding, type NativeDeviceProperties, type NativeEvent, type NativeGraph, type NativeStream } from './binding';
import { tidy } from './scope';

/** The ops of one context (the same op on the same input shapes and dtypes) within a cuda.profile(). */
export interface ProfiledOp {
  /** The op's name: 'ops.linear', 'ops.sdpa', 'CudaGraph.replay', ... */
  name: string;
  /** The name with the inputs' shapes and dtypes, as errors report them. */
  context: string;
  calls: number;
  /** GPU milliseconds summed over the calls. */
  totalMs: number;
}

export interface OpProfile<T> {
  result: T;
  /** GPU milliseconds of every timed op (the GPU's busy time attributable to ops, not the wall time). */
  totalMs: number;
  /** By context, slowest first. */
  ops: ProfiledOp[];
  /** By op name (contexts summed), slowest first. */
  byName: { name: string; calls: number; totalMs: number }[];
}

function summarizeProfile<T>(result: T, records: [string, number][]): OpProfile<T> {
  const byContext = new Map<string, ProfiledOp>();
  const byName = new Map<string, { name: string; calls: number; totalMs: number }>();
  let totalMs = 0;
  for (const [context, ms] of records) {
    const name = /^[\w.]+/.exec(context)?.[0] ?? context;
    const op = byContext.get(context) ?? { name, context, calls: 0, totalMs: 0 };
    op.calls++;
    op.totalMs += ms;
    byContext.set(context, op);
    const group = byName.get(name) ?? { name, calls: 0, totalMs: 0 };
    group.calls++;
    group.totalMs += ms;
    byName.set(name, group);
    totalMs += ms;
  }
  const slowestFirst = (a: { totalMs: number }, b: { totalMs: number }): number => b.totalMs - a.totalMs;
  return { result, totalMs, ops: [...byContext.values()].sort(slowestFirst), byName: [...byName.values()].sort(slowestFirst) };
}

function deviceIndex(device: number | undefined, what: string): number {
  const b = binding();
  if (!b.cudaAvailable()) {
    throw Object.assign(new Error(`${what}: CUDA is unavailable: ${b.cudaUnavailableReason()}`), {
      code: 'ERR_FLUXLAB_NO_CUDA',
    });
  }
  if (device === undefined) return b.currentDevice();
  if (!Number.isInteger(device) || device < 0) throw new RangeError(`${what}: invalid device index ${device}`);
  return device;
}

/**
 * A CUDA stream. Ops run on the current stream of their device (see `cuda.withStream`); work on different
 * streams may overlap (copies beside compute, for offloading).
 */
export class Stream {
  /** @internal */
  readonly native: NativeStream;

  /** A new non-blocking stream on `opts.device` (default: current); lower priority numbers run first. */
  constructor(opts: { device?: number; priority?: number } = {}, native?: NativeStream) {
    this.native = native ?? binding().streamCreate(deviceIndex(opts.device, 'new Stream'), opts.priority ?? 0);
  }

  get device(): number {
    return this.native.device;
  }

  /** 0 for the device's default stream. */
  get id(): number {
    return this.native.id;
  }

  /** Waits on the host until all work queued on this stream is done. */
  synchronize(): void {
    this.native.synchronize();
  }

  /** True when all queued work is done. */
  query(): boolean {
    return this.native.query();
  }

  /** Makes later work on this stream wait for `event` (no host sync). */
  waitEvent(event: Event): void {
    this.native.waitEvent(event.native);
  }

  /** Makes later work on this stream wait for everything queued so far on `other`. */
  waitStream(other: Stream): void {
    const event = new Event({ device: other.device });
    try {
      event.record(other);
      this.waitEvent(event);
    } finally {
      event.dispose();
    }
  }

  /** Records a new event on this stream. */
  recordEvent(opts: { timing?: boolean } = {}): Event {
    const event = new Event({ device: this.device, timing: opts.timing });
    event.record(this);
    return event;
  }

  /** Destroys the stream once its queued work completes. The default stream is never destroyed. */
  dispose(): void {
    this.native.dispose();
  }
}

/** A CUDA event: marks a point in a stream, for ordering between streams and for timing. */
export class Event {
  /** @internal */
  readonly native: NativeEvent;

  constructor(opts: { device?: number; timing?: boolean } = {}) {
    this.native = binding().eventCreate(deviceIndex(opts.device, 'new Event'), opts.timing ?? false);
  }

  /** Records the event on `stream` (default: the current stream of the event's device). */
  record(stream?: Stream): this {
    this.native.record((stream ?? cuda.currentStream(this.native.device)).native);
    return this;
  }

  synchronize(): void {
    this.native.synchronize();
  }

  query(): boolean {
    return this.native.query();
  }

  /** Milliseconds between this event and `end` (both recorded with timing enabled, `end` completed). */
  elapsedMs(end: Event): number {
    return this.native.elapsedMs(end.native);
  }

  dispose(): void {
    this.native.dispose();
  }
}

export type DeviceProperties = NativeDeviceProperties;

/**
 * A captured CUDA graph: the kernels that cuda.captureGraph's function launched, replayed with one call. Replays
 * read the tensors the capture read (copy new inputs into them first) and overwrite the tensors the capture
 * created (its result). The graph's private memory pool stays reserved until dispose().
 */
export class CudaGraph {
  readonly #native: NativeGraph;

  /** @internal */
  constructor(native: NativeGraph) {
    this.#native = native;
  }

  get device(): number {
    return this.#native.device;
  }

  /** Bytes of device memory held by the graph's private pool (also in memory.stats().graphReserved). */
  get memoryBytes(): number {
    return this.#native.memoryBytes;
  }

  get isDisposed(): boolean {
    return this.#native.disposed;
  }

  /**
   * Enqueues the whole captured sequence on the current stream of the graph's device (no host sync). Replays of
   * one graph must not overlap: keep them on one stream (or order the streams).
   */
  replay(): void {
    this.#native.replay();
  }

  /**
   * Frees the graph (waiting for queued replays) and its pool. Tensors from the capture that are still alive keep
   * their memory until they are disposed.
   */
  dispose(): void {
    this.#native.dispose();
  }
}

export const cuda = {
  Stream,
  Event,

  /**
   * True when the addon was built with CUDA and a usable device and driver are present. Without one, every
   * other function here throws a clear error (never aborts).
   */
  isAvailable(): boolean {
    return binding().cudaAvailable();
  },

  /** Why isAvailable() is false ('' when it is true), e.g. 'built without CUDA' or the driver's error. */
  unavailableReason(): string {
    return binding().cudaUnavailableReason();
  },

  deviceCount(): number {
    return binding().deviceCount();
  },

  deviceName(device?: number): string {
    return binding().deviceProperties(deviceIndex(device, 'cuda.deviceName')).name;
  },

  deviceProperties(device?: number): DeviceProperties {
    return binding().deviceProperties(deviceIndex(device, 'cuda.deviceProperties'));
  },

  currentDevice(): number {
    return binding().currentDevice();
  },

  setDevice(device: number): void {
    binding().setDevice(deviceIndex(device, 'cuda.setDevice'));
  },

  /** Waits on the host until all work on `device` (default: current) is done. */
  synchronize(device?: number): void {
    binding().synchronize(deviceIndex(device, 'cuda.synchronize'));
  },

  /** The stream ops on `device` currently run on. */
  currentStream(device?: number): Stream {
    const d = deviceIndex(device, 'cuda.currentStream');
    return new Stream({}, binding().currentStream(d));
  },

  /** The device's default stream. */
  defaultStream(device?: number): Stream {
    const d = deviceIndex(device, 'cuda.defaultStream');
    return new Stream({}, binding().defaultStream(d));
  },

  /**
   * Records the CUDA work of `fn` (synchronous) into a graph instead of running it: the ops launch on a capture
   * stream (current during fn) and allocate from the graph's private memory pool, where tensors freed inside fn
   * are reused later in the capture. fn runs inside tidy(): what it returns survives (its tensors hold each
   * replay's results), everything else it created is disposed at the end of the capture. Tensors created before
   * the capture and read by it are the graph's inputs: keep them alive while the graph is used. Host reads,
   * synchronisation and host↔device copies inside fn throw (ERR_FLUXLAB_CAPTURE) and abort the capture; so does
   * work on other streams. Captures do not nest.
   */
  captureGraph<T>(fn: () => T, opts: { device?: number; tag?: string } = {}): { graph: CudaGraph; result: T } {
    const b = binding();
    const native = b.graphCaptureBegin(deviceIndex(opts.device, 'cuda.captureGraph'));
    let result: T;
    try {
      const previousTag = opts.tag === undefined ? undefined : b.setAllocationTag(opts.tag);
      try {
        result = tidy(() => {
          const r = fn();
          if (r instanceof Promise) throw new Error('cuda.captureGraph: fn returned a Promise; capture is synchronous');
          return r;
        });
      } finally {
        if (previousTag !== undefined) b.setAllocationTag(previousTag);
      }
      native.endCapture();
    } catch (err) {
      native.abortCapture();
      native.dispose();
      throw err;
    }
    return { graph: new CudaGraph(native), result };
  },

  /** True while cuda.captureGraph is recording on `device` (default: current). */
  isCapturing(device?: number): boolean {
    return binding().isCapturing(deviceIndex(device, 'cuda.isCapturing'));
  },

  /**
   * How many times each kernel route served linear / nf4 linear / sdpa since the process started (or the last
   * resetRouteCounts): e.g. 'linear bf16: fluxk sm90 (wgmma)' against 'linear: portable' (docs/native.md).
   */
  routeCounts(): Record<string, number> {
    return binding().routeCounts();
  },

  resetRouteCounts(): void {
    binding().resetRouteCounts();
  },

  /**
   * Runs `fn` (synchronous) and times every op it launches on a CUDA device, on the GPU: each op's kernels are
   * bracketed by events on its stream (a few microseconds of host work per op while profiling), a compiled
   * model's graph replay counts as one op, ops inside a capture are not timed. Returns fn's result and the ops
   * grouped by context (op name with its inputs' shapes and dtypes), slowest first.
   */
  profile<T>(fn: () => T): OpProfile<T> {
    deviceIndex(undefined, 'cuda.profile');
    const b = binding();
    b.profileBegin();
    let result: T;
    try {
      result = fn();
    } catch (err) {
      try {
        b.profileEnd();
      } catch {
        // After a device fault the recorded events cannot be waited for either: fn's error is the one to report.
      }
      throw err;
    }
    if (result instanceof Promise) {
      b.profileEnd();
      throw new TypeError('cuda.profile: fn returned a promise; profile synchronous work (ops launched after an await are not attributed)');
    }
    return summarizeProfile(result, b.profileEnd());
  },

  /**
   * Runs `fn` with `stream` as its device's current stream, restoring the previous one afterwards (also when a
   * returned promise settles: keep such spans free of other stream users).
   */
  withStream<T>(stream: Stream, fn: () => T): T {
    const b = binding();
    const previous = b.currentStream(stream.device);
    b.setCurrentStream(stream.device, stream.native);
    let result: T;
    try {
      result = fn();
    } catch (err) {
      b.setCurrentStream(stream.device, previous);
      throw err;
    }
    if (result instanceof Promise) {
      return result.finally(() => b.setCurrentStream(stream.device, previous)) as T;
    }
    b.setCurrentStream(stream.device, previous);
    return result;
  },
};
