// Safetensors files (https://github.com/huggingface/safetensors#format): an 8-byte little-endian header length N,
// N bytes of JSON ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data
// section. Only the header is read here; tensor bytes are read by range (native Tensor.fromFile for weights,
// readBytes for small tensors), so a 24 GB checkpoint never lands in a JS buffer.
import { closeSync, fstatSync, openSync, readSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

export type SafetensorsDType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

export const SAFETENSORS_ITEM_BYTES: Readonly<Record<SafetensorsDType, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

/** The reference implementation refuses headers above 100 MB; FLUX.1-dev's largest header is ~100 KB. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

/** A safetensors problem; `file` and (where one is concerned) `tensor` name what is wrong. */
export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    readonly tensor: string | undefined,
    detail: string,
  ) {
    super(`${file}${tensor === undefined ? '' : `: tensor '${tensor}'`}: ${detail}`);
    this.name = 'SafetensorsError';
  }
}

function isDType(value: unknown): value is SafetensorsDType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(SAFETENSORS_ITEM_BYTES, value);
}

function readExactly(fd: number, length: number, position: number): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buffer, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? buffer : buffer.subarray(0, done);
}

/** Parses and validates a header; `dataLength` is the size of the data section that follows it. */
export function parseSafetensorsHeader(
  file: string,
  json: string,
  dataStart: number,
  dataLength: number,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (err) {
    throw new SafetensorsError(file, undefined, `corrupt header (invalid JSON: ${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError(file, undefined, 'corrupt header (not a JSON object)');
  }
  const entries = new Map<string, SafetensorsEntry>();
  const metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new SafetensorsError(file, undefined, 'corrupt header (__metadata__ is not an object)');
      }
      for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof value !== 'string') {
          throw new SafetensorsError(file, undefined, `corrupt header (__metadata__.${key} is not a string)`);
        }
        metadata[key] = value;
      }
      continue;
    }
    if (raw === null || typeof raw !== 'object') {
      throw new SafetensorsError(file, name, 'corrupt header entry (not an object)');
    }
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isDType(dtype)) throw new SafetensorsError(file, name, `unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, name, `invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw new SafetensorsError(file, name, `invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = numel * SAFETENSORS_ITEM_BYTES[dtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(
        file,
        name,
        `${dtype}[${shape.join(', ')}] needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    if (end > dataLength) {
      throw new SafetensorsError(
        file,
        name,
        `data [${begin}, ${end}) lies beyond the end of the file (data section holds ${dataLength} bytes): ` +
          'the file is truncated or corrupt',
      );
    }
    entries.set(name, { name, dtype, shape: Object.freeze([...(shape as number[])]), offset: dataStart + begin, byteLength: end - begin });
    spans.push({ name, begin, end });
  }
  // As the reference reader: tensors tile the data section without gaps or overlaps.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const span of spans) {
    if (span.begin !== cursor) {
      throw new SafetensorsError(
        file,
        span.name,
        span.begin < cursor
          ? `data [${span.begin}, ${span.end}) overlaps the previous tensor (corrupt header)`
          : `data starts at ${span.begin} but the previous tensor ends at ${cursor} (corrupt header)`,
      );
    }
    cursor = span.end;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(
      file,
      undefined,
      `tensors cover ${cursor} bytes but the data section holds ${dataLength}: the file is corrupt`,
    );
  }
  return { entries, metadata };
}

/** One safetensors file, header parsed and validated against the file size. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly fileSize: number,
    readonly headerByteLength: number,
    readonly entries: ReadonlyMap<string, SafetensorsEntry>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new SafetensorsError(path, undefined, `cannot open (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    try {
      const fileSize = fstatSync(fd).size;
      if (fileSize < 8) throw new SafetensorsError(path, undefined, `${fileSize}-byte file has no header: truncated or not safetensors`);
      const lengthBytes = readExactly(fd, 8, 0);
      const headerLength = lengthBytes.readBigUInt64LE(0);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(path, undefined, `header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes: not a safetensors file or corrupt`);
      }
      const n = Number(headerLength);
      if (8 + n > fileSize) {
        throw new SafetensorsError(path, undefined, `header length ${n} runs past the end of the ${fileSize}-byte file: truncated or corrupt`);
      }
      const json = readExactly(fd, n, 8).toString('utf8');
      const { entries, metadata } = parseSafetensorsHeader(path, json, 8 + n, fileSize - 8 - n);
      return new SafetensorsFile(path, fileSize, n, entries, Object.freeze(metadata));
    } finally {
      closeSync(fd);
    }
  }

  get name(): string {
    return basename(this.path);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  get(name: string): SafetensorsEntry {
    const entry = this.entries.get(name);
    if (entry === undefined) throw new SafetensorsError(this.path, name, 'not in this file');
    return entry;
  }

  /** The raw bytes of one tensor (read by range; meant for small tensors such as quant states and goldens). */
  readBytes(name: string): Buffer {
    const entry = this.get(name);
    const fd = openSync(this.path, 'r');
    try {
      const bytes = readExactly(fd, entry.byteLength, entry.offset);
      if (bytes.length !== entry.byteLength) {
        throw new SafetensorsError(this.path, name, `file shrank while reading (got ${bytes.length} of ${entry.byteLength} bytes)`);
      }
      return bytes;
    } finally {
      closeSync(fd);
    }
  }

  /** One tensor as a host array: F16/BF16 widened to Float32Array, integers in their own typed array. */
  readArray(name: string): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array | Uint16Array {
    const entry = this.get(name);
    const bytes = this.readBytes(name);
    // A fresh, aligned ArrayBuffer: the Buffer pool's offset need not be a multiple of the element size.
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    switch (entry.dtype) {
      case 'F32':
        return new Float32Array(buffer);
      case 'F64':
        return new Float64Array(buffer);
      case 'I32':
        return new Int32Array(buffer);
      case 'I64':
        return new BigInt64Array(buffer);
      case 'U8':
      case 'BOOL':
        return new Uint8Array(buffer);
      case 'I8':
        return new Int8Array(buffer);
      case 'I16':
        return new Int16Array(buffer);
      case 'U16':
        return new Uint16Array(buffer);
      case 'BF16':
        return bfloat16ToFloat32(new Uint16Array(buffer));
      case 'F16':
        return float16ToFloat32(new Uint16Array(buffer));
      default:
        throw new SafetensorsError(this.path, name, `reading ${entry.dtype} into a host array is not supported`);
    }
  }
}

export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) out[i] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) out[i] = mantissa ? NaN : sign * Infinity;
    else out[i] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return out;
}

export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: ArrayBufferView;
}

/** Writes a safetensors file (header padded with spaces to 8 bytes, as the reference writer does). */
export function writeSafetensors(
  path: string,
  tensors: Iterable<readonly [string, TensorToWrite]>,
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, tensor] of tensors) {
    if (name === '__metadata__') throw new SafetensorsError(path, name, 'reserved name');
    if (Object.prototype.hasOwnProperty.call(header, name)) throw new SafetensorsError(path, name, 'written twice');
    const numel = tensor.shape.reduce((a, b) => a * b, 1);
    const expected = numel * SAFETENSORS_ITEM_BYTES[tensor.dtype];
    if (tensor.data.byteLength !== expected) {
      throw new SafetensorsError(path, name, `${tensor.dtype}[${tensor.shape.join(', ')}] needs ${expected} bytes, got ${tensor.data.byteLength}`);
    }
    header[name] = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [offset, offset + expected] };
    chunks.push(Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    offset += expected;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const jsonBytes = Buffer.from(json, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(jsonBytes.length));
  writeFileSync(path, Buffer.concat([lengthBytes, jsonBytes, ...chunks]));
}
