/** Element types. `nf4` is bitsandbytes' packed 4-bit NormalFloat (see {@link NF4Tensor}). */
export type DType = 'float32' | 'bfloat16' | 'float16' | 'uint8' | 'int32' | 'int64' | 'nf4';

/** Element types stored densely (everything except the composite `nf4`). */
export type DenseDType = Exclude<DType, 'nf4'>;

/** Where a tensor lives. `'cuda'` means the current CUDA device; tensors always report `'cuda:N'`. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint8ClampedArray
  | Uint16Array
  | Uint32Array
  | BigInt64Array;

/**
 * What `Tensor.toArray()` returns: float32, bfloat16, float16 and nf4 as Float32Array, int32 as Int32Array,
 * int64 as BigInt64Array, uint8 as Uint8Array.
 */
export type HostArray = Float32Array | Int32Array | BigInt64Array | Uint8Array;

export interface TensorOptions {
  /** Element type of the result (default float32, or the source's type where it has one). */
  dtype?: DType;
  /** Target device (default 'cpu'). */
  device?: Device;
  /** For host tensors: allocate page-locked (pinned) memory so copies to the GPU run asynchronously. */
  pinned?: boolean;
}

export const DTYPE_BYTES: Readonly<Record<DenseDType, number>> = Object.freeze({
  float32: 4,
  bfloat16: 2,
  float16: 2,
  uint8: 1,
  int32: 4,
  int64: 8,
});

const DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16', 'uint8', 'int32', 'int64', 'nf4'];

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'bfloat16' || dtype === 'float16';
}

/** Safetensors dtype names ('F32', 'BF16', ...) to ours; undefined for types we do not hold. */
export function dtypeFromSafetensors(name: string): DenseDType | undefined {
  switch (name) {
    case 'F32':
      return 'float32';
    case 'BF16':
      return 'bfloat16';
    case 'F16':
      return 'float16';
    case 'U8':
      return 'uint8';
    case 'I32':
      return 'int32';
    case 'I64':
      return 'int64';
    default:
      return undefined;
  }
}

/** Ours to safetensors dtype names. */
export function dtypeToSafetensors(dtype: DenseDType): string {
  return { float32: 'F32', bfloat16: 'BF16', float16: 'F16', uint8: 'U8', int32: 'I32', int64: 'I64' }[dtype];
}
