import { binding, type NativeDeviceProperties, type NativeEvent, type NativeStream } from './binding';

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
