import { binding, type NativeNF4, type NativeNF4Parts, type NativeTensor } from './binding';
import { adopt, keep, release } from './scope';
import {
  DTYPE_BYTES,
  isDType,
  type DType,
  type DenseDType,
  type Device,
  type HostArray,
  type TensorOptions,
  type TypedArray,
} from './types';

// The collector only reports leaks: by the time it runs, GPU memory has been held far too long. The native
// object's own finalizer returns the storage.
let leakCount = 0;
let leakWarned = false;
const leakRegistry = new FinalizationRegistry<string>((description) => {
  leakCount++;
  if (!leakWarned || process.env.FLUXLAB_DEBUG_LEAKS) {
    leakWarned = true;
    process.emitWarning(
      `a tensor ${description} was garbage-collected without dispose(); wrap work in tidy() or a Scope` +
        (process.env.FLUXLAB_DEBUG_LEAKS ? '' : ' (FLUXLAB_DEBUG_LEAKS=1 reports each one with its creation stack)'),
      'FluxlabLeakWarning',
    );
  }
});

/** Tensors collected by the garbage collector without dispose() since the process started. */
export function leakedTensorCount(): number {
  return leakCount;
}

export function describeShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Resolves 'cuda' to 'cuda:N' (the current device) and validates the spelling. */
export function resolveDevice(device: Device | string | undefined): Device {
  if (device === undefined || device === 'cpu') return 'cpu';
  if (device === 'cuda') return `cuda:${binding().currentDevice()}`;
  if (/^cuda:\d+$/.test(device)) return device as Device;
  throw new Error(`unknown device '${device}': use 'cpu', 'cuda' or 'cuda:N'`);
}

function checkShape(shape: readonly number[], what: string): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${what}: shape must be an array of sizes`);
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${what}: invalid shape ${describeShape(shape)}`);
  }
  return [...shape];
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function denseDType(dtype: DType | undefined, fallback: DenseDType, what: string): DenseDType {
  const d = dtype ?? fallback;
  if (!isDType(d)) throw new TypeError(`${what}: unknown dtype '${String(d)}'`);
  if (d === 'nf4') throw new TypeError(`${what}: nf4 tensors are made by ops.nf4Quantize or NF4Tensor.fromBitsandbytes`);
  return d;
}

/** The host representation (and its element type) for data given as a typed array or a JS array. */
function hostData(data: ArrayLike<number> | TypedArray, target: DenseDType): { view: ArrayBufferView; stored: DenseDType } {
  if (data instanceof Float32Array) return { view: data, stored: 'float32' };
  if (data instanceof Int32Array) return { view: data, stored: 'int32' };
  if (data instanceof BigInt64Array) return { view: data, stored: 'int64' };
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) {
    return { view: new Uint8Array(data.buffer, data.byteOffset, data.length), stored: 'uint8' };
  }
  if (data instanceof Int8Array || data instanceof Int16Array || data instanceof Uint16Array) {
    return { view: Int32Array.from(data), stored: 'int32' };
  }
  if (data instanceof Uint32Array) {
    return target === 'int64'
      ? { view: BigInt64Array.from(data, (v) => BigInt(v)), stored: 'int64' }
      : { view: toFloat32Array(data), stored: 'float32' };
  }
  // Float64Array and plain arrays
  if (target === 'int32') return { view: Int32Array.from(data as ArrayLike<number>), stored: 'int32' };
  if (target === 'int64') {
    return { view: BigInt64Array.from(data as ArrayLike<number>, (v) => BigInt(Math.trunc(v))), stored: 'int64' };
  }
  if (target === 'uint8') return { view: Uint8Array.from(data as ArrayLike<number>), stored: 'uint8' };
  return { view: toFloat32Array(data as ArrayLike<number>), stored: 'float32' };
}

function toFloat32Array(data: ArrayLike<number>): Float32Array {
  return Float32Array.from(data);
}

/**
 * A dense n-dimensional array on the CPU or a CUDA device. Storage is contiguous (row-major); `reshape`, leading
 * `slice`s and `contiguous` are views sharing storage, other layout changes copy. Every tensor must be disposed:
 * explicitly, or by the tidy()/Scope that owns it. Using a disposed tensor throws.
 */
export class Tensor {
  #native: NativeTensor | undefined;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;

  /** @internal Wraps an addon tensor; library code uses the static constructors and ops. */
  constructor(native: NativeTensor, dtype?: DType, shape?: readonly number[]) {
    this.#native = native;
    this.shape = Object.freeze(shape ? [...shape] : native.shape);
    this.dtype = dtype ?? native.dtype;
    this.device = native.device as Device;
    adopt(this);
    leakRegistry.register(this, this.describe(), this);
  }

  // ---- construction -------------------------------------------------------------------------------------

  /**
   * A tensor from JS numbers. Typed arrays keep their element type unless `opts.dtype` asks for another
   * (Float32Array→float32, Int32Array→int32, BigInt64Array→int64, Uint8Array→uint8); plain arrays and
   * Float64Array become float32 (or `opts.dtype`).
   */
  static fromArray(
    data: ArrayLike<number> | TypedArray,
    shape: number[],
    opts: TensorOptions = {},
  ): Tensor {
    const dims = checkShape(shape, 'Tensor.fromArray');
    const fallback: DenseDType =
      data instanceof Int32Array ? 'int32' : data instanceof BigInt64Array ? 'int64' : data instanceof Uint8Array ? 'uint8' : 'float32';
    const dtype = denseDType(opts.dtype, fallback, 'Tensor.fromArray');
    if (data.length !== numelOf(dims)) {
      throw new RangeError(`Tensor.fromArray: ${data.length} values do not fill shape ${describeShape(dims)}`);
    }
    const { view, stored } = hostData(data, dtype);
    const native = binding().fromHost(view, stored, dims, dtype, resolveDevice(opts.device));
    return new Tensor(native);
  }

  /** A tensor from raw little-endian bytes holding `storedDtype` elements, converted to `opts.dtype`. */
  static fromBytes(bytes: Uint8Array, shape: number[], storedDtype: DType, opts: TensorOptions = {}): Tensor {
    const dims = checkShape(shape, 'Tensor.fromBytes');
    const stored = denseDType(storedDtype, 'float32', 'Tensor.fromBytes');
    const dtype = denseDType(opts.dtype, stored, 'Tensor.fromBytes');
    const expected = numelOf(dims) * DTYPE_BYTES[stored];
    if (bytes.byteLength !== expected) {
      throw new RangeError(
        `Tensor.fromBytes: ${bytes.byteLength} bytes given, shape ${describeShape(dims)} ${stored} needs ${expected}`,
      );
    }
    return new Tensor(binding().fromHost(bytes, stored, dims, dtype, resolveDevice(opts.device)));
  }

  /**
   * Reads `numel × size(storedDtype)` bytes at `byteOffset` of a file straight into a tensor of `opts.dtype` on
   * `opts.device` (pread; for CUDA, chunked through a pinned staging buffer), so that large checkpoints never sit
   * in a JS buffer. Throws naming the file when it is shorter than the range.
   */
  static fromFile(path: string, byteOffset: number, shape: number[], storedDtype: DType, opts: TensorOptions = {}): Tensor {
    const dims = checkShape(shape, 'Tensor.fromFile');
    const stored = denseDType(storedDtype, 'float32', 'Tensor.fromFile');
    const dtype = denseDType(opts.dtype, stored, 'Tensor.fromFile');
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0) {
      throw new RangeError(`Tensor.fromFile: invalid byte offset ${byteOffset} for ${path}`);
    }
    return new Tensor(binding().fromFile(path, byteOffset, dims, stored, dtype, resolveDevice(opts.device)));
  }

  /** Uninitialised storage (contents undefined). */
  static empty(shape: number[], opts: TensorOptions = {}): Tensor {
    const dims = checkShape(shape, 'Tensor.empty');
    const dtype = denseDType(opts.dtype, 'float32', 'Tensor.empty');
    return new Tensor(binding().empty(dims, dtype, resolveDevice(opts.device), opts.pinned ?? false));
  }

  static full(shape: number[], value: number, opts: TensorOptions = {}): Tensor {
    const dims = checkShape(shape, 'Tensor.full');
    const dtype = denseDType(opts.dtype, 'float32', 'Tensor.full');
    return new Tensor(binding().full(dims, dtype, resolveDevice(opts.device), value));
  }

  static zeros(shape: number[], opts: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 0, opts);
  }

  static ones(shape: number[], opts: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 1, opts);
  }

  /**
   * Normal samples, two ways:
   * - `{ generator }`: exactly what `torch.randn(shape, generator=torch.Generator('cpu').manual_seed(s))` draws as
   *   float32 (mt19937, torch's normal_fill), computed on the host, then converted to `opts.dtype` and moved to
   *   `opts.device` (golden latents, `--seed`).
   * - `{ seed, mean = 0, std = 1 }`: drawn on `opts.device` itself by a counter-based generator (Philox4x32-10 and
   *   Box-Muller; element i depends only on seed and i), so gigabytes of random weights need no host work and the
   *   call can be captured in a CUDA graph. NOT torch's numbers; the CPU draws the same bits (values equal up to the
   *   last ulps of log/sin/cos).
   */
  static randn(
    shape: number[],
    opts: TensorOptions & ({ generator: Generator } | { seed: number | bigint; mean?: number; std?: number }),
  ): Tensor {
    const dims = checkShape(shape, 'Tensor.randn');
    const dtype = denseDType(opts.dtype, 'float32', 'Tensor.randn');
    const device = resolveDevice(opts.device);
    if ('generator' in opts && opts.generator !== undefined) {
      if ('seed' in opts) throw new TypeError('Tensor.randn: give either a generator or a seed, not both');
      return new Tensor(binding().randn(opts.generator.native, dims, dtype, device));
    }
    if (!('seed' in opts) || (typeof opts.seed !== 'number' && typeof opts.seed !== 'bigint')) {
      throw new TypeError('Tensor.randn: needs { generator } (torch-compatible) or { seed } (on-device Philox)');
    }
    if (typeof opts.seed === 'number' && !Number.isSafeInteger(opts.seed)) {
      throw new RangeError(`Tensor.randn: seed ${opts.seed} is not an integer`);
    }
    const mean = opts.mean ?? 0;
    const std = opts.std ?? 1;
    return new Tensor(binding().randomNormal(dims, dtype, device, BigInt(opts.seed), mean, std));
  }

  // ---- properties ---------------------------------------------------------------------------------------

  get numel(): number {
    return numelOf(this.shape);
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** Bytes of storage this tensor spans. */
  get byteLength(): number {
    return this.nativeHandle('byteLength').byteLength;
  }

  /** Host tensor in page-locked memory. */
  get pinned(): boolean {
    return this.nativeHandle('pinned').pinned;
  }

  get isDisposed(): boolean {
    return this.#native === undefined;
  }

  /** Size of dimension `dim` (negative counts from the end). */
  size(dim: number): number {
    const d = dim < 0 ? dim + this.shape.length : dim;
    if (d < 0 || d >= this.shape.length) throw new RangeError(`size(${dim}): tensor has ${this.shape.length} dims`);
    return this.shape[d];
  }

  /** e.g. `[2,3] float32 cuda:0`. */
  describe(): string {
    return `${describeShape(this.shape)} ${this.dtype} ${this.device}`;
  }

  toString(): string {
    return `Tensor(${this.describe()}${this.isDisposed ? ', disposed' : ''})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  // ---- lifetime -----------------------------------------------------------------------------------------

  /** Frees the storage now (once every view of it is disposed). Idempotent. */
  dispose(): void {
    if (this.#native === undefined) return;
    const native = this.#native;
    this.#native = undefined;
    leakRegistry.unregister(this);
    release(this);
    native.dispose();
  }

  /** Survive the enclosing tidy()/Scope: the tensor then lives until disposed explicitly. */
  keep(): this {
    return keep(this);
  }

  /** @internal The addon handle; throws a use-after-dispose error naming `op`. */
  nativeHandle(op: string): NativeTensor {
    if (this.#native === undefined) {
      throw Object.assign(new Error(`${op}: tensor ${this.describe()} was used after dispose()`), {
        code: 'ERR_FLUXLAB_DISPOSED',
      });
    }
    return this.#native;
  }

  // ---- layout and copies --------------------------------------------------------------------------------

  /** Same data, new shape (one size may be -1). A view: shares storage. */
  reshape(shape: number[]): Tensor {
    const native = this.nativeHandle('reshape');
    const n = this.numel;
    const dims = [...shape];
    const inferred = dims.indexOf(-1);
    if (inferred >= 0) {
      const rest = numelOf(dims.filter((_, i) => i !== inferred));
      if (rest === 0 || n % rest !== 0) {
        throw new RangeError(`reshape: cannot reshape ${this.describe()} to ${describeShape(shape)}`);
      }
      dims[inferred] = n / rest;
    }
    checkShape(dims, 'reshape');
    if (numelOf(dims) !== n) throw new RangeError(`reshape: cannot reshape ${this.describe()} to ${describeShape(shape)}`);
    return new Tensor(binding().view(native, dims));
  }

  /**
   * A copy on another device and/or of another dtype (always a new tensor, also when nothing changes).
   * `nonBlocking` lets host↔device copies run asynchronously on the current stream (pinned host memory only;
   * the data is valid once the stream reaches that point). `pinned` places a host result in pinned memory.
   */
  to(target: Device | { device?: Device; dtype?: DType; nonBlocking?: boolean; pinned?: boolean }): Tensor {
    const native = this.nativeHandle('to');
    const opts = typeof target === 'string' ? { device: target } : target;
    const dtype = denseDType(opts.dtype, native.dtype, 'to');
    const device = resolveDevice(opts.device ?? this.device);
    return new Tensor(binding().to(native, device, dtype, opts.nonBlocking ?? false, opts.pinned ?? false));
  }

  /** Copies `src` (same shape; dtype converted) into this tensor's storage, on the current stream. */
  copyFrom(src: Tensor, opts: { nonBlocking?: boolean } = {}): this {
    const dst = this.nativeHandle('copyFrom');
    const s = src.nativeHandle('copyFrom');
    binding().copyInto(dst, s, opts.nonBlocking ?? false);
    return this;
  }

  /**
   * A host copy of the values (synchronous: waits for the current stream). float32, bfloat16, float16 come back
   * as Float32Array, int32 as Int32Array, int64 as BigInt64Array, uint8 as Uint8Array.
   */
  toArray(): HostArray {
    return binding().toHost(this.nativeHandle('toArray'));
  }

  /** The raw little-endian bytes of the storage, in this tensor's dtype (e.g. bf16 bits). */
  toBytes(): Uint8Array {
    return binding().toBytes(this.nativeHandle('toBytes'));
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new RangeError(`item: tensor ${this.describe()} has ${this.numel} elements`);
    const v = this.toArray()[0];
    return typeof v === 'bigint' ? Number(v) : v;
  }

  /**
   * Marks this tensor's storage as in use by `stream` (a stream other than the one it was allocated on), so the
   * caching allocator does not hand the memory out again before that stream's work, queued so far, completes.
   */
  recordStream(stream: { readonly native: import('./binding').NativeStream }): void {
    binding().recordStream(this.nativeHandle('recordStream'), stream.native);
  }
}

/**
 * A seeded random generator matching `torch.Generator('cpu').manual_seed(seed)`: the same seed and the same
 * sequence of `Tensor.randn` calls give the same float32 values torch gives.
 */
export class Generator {
  /** @internal */
  readonly native: import('./binding').NativeGenerator;

  constructor(seed: number | bigint = 67280421310721n) {
    this.native = binding().generatorCreate(BigInt(seed));
  }

  /** Restarts the sequence from `seed` (like torch's manual_seed). */
  manualSeed(seed: number | bigint): this {
    this.native.manualSeed(BigInt(seed));
    return this;
  }

  get initialSeed(): bigint {
    return this.native.seed;
  }
}

/** bitsandbytes' NF4 quant_state JSON (`weight.quant_state.bitsandbytes__nf4`). */
export interface BnbQuantState {
  quant_type: 'nf4';
  blocksize: number;
  dtype: string;
  shape: number[];
  nested_blocksize?: number;
  nested_dtype?: string;
  nested_offset?: number;
}

/** The tensors a bitsandbytes / diffusers checkpoint stores for one NF4 weight (keys relative to `<name>.weight`). */
export interface BnbNF4Tensors {
  /** `weight`: packed codes, uint8 [ceil(N*K/2), 1]. */
  weight: Tensor;
  /** `weight.absmax`: float32 [blocks] (uint8 codes [blocks] with double quant). */
  absmax: Tensor;
  /** `weight.quant_map`: float32 [16]. */
  quantMap: Tensor;
  /** `weight.nested_absmax`: float32 [ceil(blocks/256)] (double quant only). */
  nestedAbsmax?: Tensor;
  /** `weight.nested_quant_map`: float32 [256] (double quant only). */
  nestedQuantMap?: Tensor;
  /** `weight.quant_state.bitsandbytes__nf4`: the JSON, as stored (uint8 tensor or bytes) or parsed. */
  quantState: Tensor | Uint8Array | string | BnbQuantState;
}

/** The NF4 parts as separate tensors, for inspection and tests. */
export interface NF4Parts {
  packed: Tensor;
  quantMap: Tensor;
  absmax?: Tensor;
  absmaxCodes?: Tensor;
  nestedAbsmax?: Tensor;
  nestedQuantMap?: Tensor;
}

function quantStateFrom(value: BnbNF4Tensors['quantState']): BnbQuantState {
  let json: string;
  if (value instanceof Tensor) json = Buffer.from(value.toBytes()).toString('utf8');
  else if (value instanceof Uint8Array) json = Buffer.from(value).toString('utf8');
  else if (typeof value === 'string') json = value;
  else return value;
  const parsed = JSON.parse(json) as BnbQuantState;
  if (parsed.quant_type !== 'nf4') {
    throw new Error(`NF4Tensor.fromBitsandbytes: quant_type '${String(parsed.quant_type)}' is not nf4`);
  }
  return parsed;
}

/** Python's repr() of a float, which bitsandbytes writes into the quant_state JSON. */
export function pythonFloatRepr(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return x.toFixed(1);
  const shortest = String(x);
  const exp = Math.floor(Math.log10(Math.abs(x)));
  if (exp < -4 || exp >= 16) {
    const [mant, e] = x.toExponential().split('e');
    const n = Number(e);
    return `${mant}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  return shortest;
}

/**
 * A weight quantized to bitsandbytes NF4: logical shape [N, K] (dtype 'nf4'); packed codes (two per byte,
 * the first value of each pair in the high nibble) over the flattened row-major weight, blocks of `blocksize`
 * (64) values each scaled by its absmax (float32), or with double quantization the absmax values stored as 8-bit
 * codes of the signed dynamic map in blocks of 256 plus an offset (their mean).
 */
export class NF4Tensor extends Tensor {
  #nf4: NativeNF4 | undefined;
  readonly blocksize: number;
  readonly doubleQuant: boolean;
  /** Double quant: the offset added to dequantized absmax values (bitsandbytes' `nested_offset`). */
  readonly offset: number;
  /** The dtype the weight had before quantization (bitsandbytes' `dtype`). */
  readonly originalDtype: DenseDType;

  /** @internal */
  constructor(nf4: NativeNF4, originalDtype: DenseDType) {
    super(nf4.packed, 'nf4', [nf4.rows, nf4.cols]);
    this.#nf4 = nf4;
    this.blocksize = nf4.blocksize;
    this.doubleQuant = nf4.absmaxCodes !== null;
    this.offset = nf4.offset;
    this.originalDtype = originalDtype;
  }

  /** @internal Builds the descriptor from native parts. */
  static fromNativeParts(
    parts: NativeNF4Parts,
    rows: number,
    cols: number,
    blocksize: number,
    nestedBlocksize: number,
    originalDtype: DenseDType,
  ): NF4Tensor {
    return new NF4Tensor({ ...parts, rows, cols, blocksize, nestedBlocksize, standardCodes: true }, originalDtype);
  }

  /**
   * One weight whose rows are the given weights' rows in order (fused projections: to_q/to_k/to_v as one QKV
   * linear, whose output splits back along the last dim). All parts share K (a multiple of the blocksize, so no
   * block spans two parts), the blocksize, the device and the standard NF4 code book. Plain parts are concatenated
   * byte for byte; double-quant absmax is decoded to float32 first (the values the dequantization uses, so the
   * result computes exactly what the parts compute), making the result plain NF4. New storage: dispose the parts
   * if they are no longer needed.
   */
  static concatRows(parts: NF4Tensor[]): NF4Tensor {
    if (!Array.isArray(parts) || parts.length === 0) throw new RangeError('NF4Tensor.concatRows: needs at least one weight');
    const first = parts[0];
    const what = `NF4Tensor.concatRows(${parts.map((p) => (p instanceof NF4Tensor ? p.describe() : String(p))).join(', ')})`;
    for (const p of parts) {
      if (!(p instanceof NF4Tensor)) throw new TypeError(`${what}: every part must be an NF4Tensor`);
      if (p.shape[1] !== first.shape[1] || p.blocksize !== first.blocksize || p.device !== first.device) {
        throw new RangeError(`${what}: parts must share K, blocksize and device`);
      }
      if (!p.nf4Handle(what).standardCodes) throw new RangeError(`${what}: a part has a non-standard quant_map`);
    }
    const K = first.shape[1];
    if (K % first.blocksize !== 0 || first.blocksize % 2 !== 0) {
      throw new RangeError(`${what}: K = ${K} must be a multiple of the blocksize ${first.blocksize}`);
    }
    const bind = binding();
    const decoded: NativeTensor[] = [];
    const made: NativeTensor[] = [];
    const keep = (t: NativeTensor): NativeTensor => (made.push(t), t);
    try {
      const absmax = parts.map((p) => {
        const nf4 = p.nf4Handle(what);
        if (nf4.absmax) return nf4.absmax;
        const a = bind.nf4Absmax(nf4);
        decoded.push(a);
        return a;
      });
      const desc: NativeNF4 = {
        packed: keep(bind.concat(parts.map((p) => p.nf4Handle(what).packed), 0)),
        quantMap: keep(bind.to(first.nf4Handle(what).quantMap, first.device, 'float32', false, false)),
        rows: parts.reduce((n, p) => n + p.shape[0], 0),
        cols: K,
        blocksize: first.blocksize,
        absmax: keep(bind.concat(absmax, 0)),
        absmaxCodes: null,
        nestedAbsmax: null,
        nestedQuantMap: null,
        nestedBlocksize: 0,
        offset: 0,
        standardCodes: true,
      };
      return new NF4Tensor(desc, first.originalDtype);
    } catch (err) {
      for (const t of made) t.dispose();
      throw err;
    } finally {
      for (const a of decoded) a.dispose();
    }
  }

  /**
   * Builds an NF4 weight from the tensors a bitsandbytes checkpoint stores (e.g. diffusers `save_pretrained` of
   * a 4-bit model): takes copies (views) of them on their device, so the caller still disposes its inputs.
   */
  static fromBitsandbytes(parts: BnbNF4Tensors): NF4Tensor {
    const state = quantStateFrom(parts.quantState);
    const [rows, cols] = state.shape.length === 2 ? state.shape : [state.shape[0], numelOf(state.shape.slice(1))];
    const numel = rows * cols;
    const blocks = Math.ceil(numel / state.blocksize);
    const what = `NF4Tensor.fromBitsandbytes(shape ${describeShape(state.shape)}, blocksize ${state.blocksize})`;
    const expectNumel = (t: Tensor | undefined, n: number, dtype: DType, name: string): Tensor => {
      if (!t) throw new Error(`${what}: ${name} is missing`);
      if (t.numel !== n || t.dtype !== dtype) {
        throw new Error(`${what}: ${name} is ${t.describe()}, expected ${n} ${dtype} values`);
      }
      return t;
    };
    expectNumel(parts.weight, Math.ceil(numel / 2), 'uint8', 'weight');
    expectNumel(parts.quantMap, 16, 'float32', 'quant_map');
    const nested = state.nested_blocksize !== undefined;
    const device = parts.weight.device;
    const bind = binding();
    const flat = (t: Tensor, name: string): NativeTensor => {
      if (t.device !== device) throw new Error(`${what}: ${name} is on ${t.device}, weight on ${device}`);
      return bind.view(t.nativeHandle(what), [t.numel]);
    };
    let desc: NativeNF4;
    if (nested) {
      expectNumel(parts.absmax, blocks, 'uint8', 'absmax (double-quant codes)');
      const nestedBlocks = Math.ceil(blocks / state.nested_blocksize!);
      expectNumel(parts.nestedAbsmax, nestedBlocks, 'float32', 'nested_absmax');
      expectNumel(parts.nestedQuantMap, 256, 'float32', 'nested_quant_map');
      desc = {
        packed: flat(parts.weight, 'weight'),
        quantMap: flat(parts.quantMap, 'quant_map'),
        rows,
        cols,
        blocksize: state.blocksize,
        absmax: null,
        absmaxCodes: flat(parts.absmax, 'absmax'),
        nestedAbsmax: flat(parts.nestedAbsmax!, 'nested_absmax'),
        nestedQuantMap: flat(parts.nestedQuantMap!, 'nested_quant_map'),
        nestedBlocksize: state.nested_blocksize!,
        offset: state.nested_offset ?? 0,
      };
    } else {
      expectNumel(parts.absmax, blocks, 'float32', 'absmax');
      desc = {
        packed: flat(parts.weight, 'weight'),
        quantMap: flat(parts.quantMap, 'quant_map'),
        rows,
        cols,
        blocksize: state.blocksize,
        absmax: flat(parts.absmax, 'absmax'),
        absmaxCodes: null,
        nestedAbsmax: null,
        nestedQuantMap: null,
        nestedBlocksize: 0,
        offset: 0,
      };
    }
    // The fluxk kernels have bitsandbytes' code book built in: they take the weight only when quant_map is that
    // book, checked once here (16 floats read at load time).
    const codes = bind.nf4CodeValues();
    const map = parts.quantMap.toArray();
    desc.standardCodes = map.length === 16 && codes.every((c, i) => Object.is(c, map[i]));
    const original = isDType(state.dtype) && state.dtype !== 'nf4' ? state.dtype : 'float32';
    return new NF4Tensor(desc, original);
  }

  /** @internal The descriptor the native NF4 ops take; throws a use-after-dispose error naming `op`. */
  nf4Handle(op: string): NativeNF4 {
    this.nativeHandle(op);
    return this.#nf4!;
  }

  /** The quant_state JSON bitsandbytes stores, with its key order. */
  quantState(): BnbQuantState {
    const state: BnbQuantState = {
      quant_type: 'nf4',
      blocksize: this.blocksize,
      dtype: this.originalDtype,
      shape: [...this.shape],
    };
    if (this.doubleQuant) {
      const nf4 = this.nf4Handle('quantState');
      state.nested_blocksize = nf4.nestedBlocksize;
      state.nested_dtype = 'float32';
      state.nested_offset = this.offset;
    }
    return state;
  }

  /** The quant_state JSON text exactly as bitsandbytes writes it (Python json.dumps formatting). */
  quantStateJson(): string {
    const s = this.quantState();
    const parts = [
      `"quant_type": "nf4"`,
      `"blocksize": ${s.blocksize}`,
      `"dtype": "${s.dtype}"`,
      `"shape": [${s.shape.join(', ')}]`,
    ];
    if (this.doubleQuant) {
      parts.push(`"nested_blocksize": ${s.nested_blocksize}`, `"nested_dtype": "float32"`);
      parts.push(`"nested_offset": ${pythonFloatRepr(s.nested_offset!)}`);
    }
    return `{${parts.join(', ')}}`;
  }

  /** The parts as new tensors (views sharing storage; dispose them). */
  parts(): NF4Parts {
    const nf4 = this.nf4Handle('parts');
    const bind = binding();
    const wrap = (t: NativeTensor | null): Tensor | undefined => (t ? new Tensor(bind.view(t, t.shape)) : undefined);
    return {
      packed: wrap(nf4.packed)!,
      quantMap: wrap(nf4.quantMap)!,
      absmax: wrap(nf4.absmax),
      absmaxCodes: wrap(nf4.absmaxCodes),
      nestedAbsmax: wrap(nf4.nestedAbsmax),
      nestedQuantMap: wrap(nf4.nestedQuantMap),
    };
  }

  /**
   * The tensors bitsandbytes would save for this weight, keyed by their suffix after `<module>.`: `weight`,
   * `weight.absmax`, `weight.quant_map`, (`weight.nested_absmax`, `weight.nested_quant_map`) and
   * `weight.quant_state.bitsandbytes__nf4`, with bitsandbytes' shapes. New tensors: dispose them.
   */
  toBitsandbytes(): Record<string, Tensor> {
    const nf4 = this.nf4Handle('toBitsandbytes');
    const bind = binding();
    const out: Record<string, Tensor> = {};
    out['weight'] = new Tensor(bind.view(nf4.packed, [nf4.packed.shape[0], 1]));
    if (nf4.absmaxCodes) {
      out['weight.absmax'] = new Tensor(bind.view(nf4.absmaxCodes, nf4.absmaxCodes.shape));
      out['weight.nested_absmax'] = new Tensor(bind.view(nf4.nestedAbsmax!, nf4.nestedAbsmax!.shape));
      out['weight.nested_quant_map'] = new Tensor(bind.view(nf4.nestedQuantMap!, nf4.nestedQuantMap!.shape));
    } else {
      out['weight.absmax'] = new Tensor(bind.view(nf4.absmax!, nf4.absmax!.shape));
    }
    out['weight.quant_map'] = new Tensor(bind.view(nf4.quantMap, nf4.quantMap.shape));
    const json = Buffer.from(this.quantStateJson(), 'utf8');
    out['weight.quant_state.bitsandbytes__nf4'] = Tensor.fromArray(new Uint8Array(json), [json.length]);
    return out;
  }

  override dispose(): void {
    if (this.isDisposed) return;
    const nf4 = this.#nf4!;
    this.#nf4 = undefined;
    super.dispose();
    for (const part of [nf4.quantMap, nf4.absmax, nf4.absmaxCodes, nf4.nestedAbsmax, nf4.nestedQuantMap]) {
      part?.dispose();
    }
  }

  override get byteLength(): number {
    const nf4 = this.nf4Handle('byteLength');
    return [nf4.packed, nf4.quantMap, nf4.absmax, nf4.absmaxCodes, nf4.nestedAbsmax, nf4.nestedQuantMap].reduce(
      (sum, t) => sum + (t ? t.byteLength : 0),
      0,
    );
  }

  override reshape(shape: number[]): Tensor {
    throw new Error(`reshape: nf4 tensor ${this.describe()} cannot be reshaped to ${describeShape(shape)}; dequantize first`);
  }

  /**
   * To another device: moves every part (stays nf4). To a dense dtype: dequantizes (on the target device).
   */
  override to(target: Device | { device?: Device; dtype?: DType; nonBlocking?: boolean; pinned?: boolean }): Tensor {
    const nf4 = this.nf4Handle('to');
    const opts = typeof target === 'string' ? { device: target } : target;
    const device = resolveDevice(opts.device ?? this.device);
    const bind = binding();
    if (opts.dtype !== undefined && opts.dtype !== 'nf4') {
      const dtype = denseDType(opts.dtype, 'float32', 'to');
      if (device === this.device) return new Tensor(bind.nf4Dequantize(nf4, dtype));
      const moved = this.to({ device: device as Device, nonBlocking: opts.nonBlocking });
      try {
        return moved.to({ dtype });
      } finally {
        moved.dispose();
      }
    }
    const nb = opts.nonBlocking ?? false;
    const pinned = opts.pinned ?? false;
    const move = (t: NativeTensor | null): NativeTensor | null => (t ? bind.to(t, device, t.dtype, nb, pinned) : null);
    return new NF4Tensor(
      {
        ...nf4,
        packed: move(nf4.packed)!,
        quantMap: move(nf4.quantMap)!,
        absmax: move(nf4.absmax),
        absmaxCodes: move(nf4.absmaxCodes),
        nestedAbsmax: move(nf4.nestedAbsmax),
        nestedQuantMap: move(nf4.nestedQuantMap),
      },
      this.originalDtype,
    );
  }

  /** The dequantized values as float32. */
  override toArray(): Float32Array {
    const dense = new Tensor(binding().nf4Dequantize(this.nf4Handle('toArray'), 'float32'));
    try {
      return dense.toArray() as Float32Array;
    } finally {
      dense.dispose();
    }
  }

  override toBytes(): Uint8Array {
    throw new Error('toBytes: nf4 tensors have several parts; use toBitsandbytes()');
  }

  override copyFrom(): this {
    throw new Error('copyFrom: not supported for nf4 tensors; quantize or move instead');
  }
}
