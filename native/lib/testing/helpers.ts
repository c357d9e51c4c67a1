// Shared by the spec files: seeded random data, comparisons with readable failures, a minimal safetensors
// reader (8-byte little-endian header length + JSON, as the format defines), and where fixtures live.
import assert from 'node:assert/strict';
import { existsSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor } from '../tensor';
import { dtypeFromSafetensors, type DType, type Device } from '../types';

/** mulberry32: small, fast, reproducible. */
export function rng(seed: number): { uniform(): number; normal(): number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => {
    const u = Math.max(uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return { uniform, normal };
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.normal() * scale;
  return out;
}

export function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A random tensor and the float values it actually holds (after rounding to dtype). */
export function randTensor(
  shape: number[],
  seed: number,
  opts: { dtype?: DType; device?: Device; scale?: number } = {},
): { t: Tensor; v: Float64Array } {
  const data = randn(product(shape), seed, opts.scale ?? 1);
  const t = Tensor.fromArray(data, shape, { dtype: opts.dtype ?? 'float32', device: opts.device });
  const held = t.toArray() as Float32Array;
  return { t, v: Float64Array.from(held) };
}

/** ‖a−b‖² / ‖b‖² (llama.cpp's normalised mean squared error); NaN anywhere gives Infinity. */
export function nmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'nmse: lengths differ');
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Infinity;
    if (Number.isNaN(a[i])) continue;
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : num / den;
}

/** Asserts |a−b| ≤ atol + rtol·|b| elementwise, reporting the worst element. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: { atol?: number; rtol?: number },
  what: string,
): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} values, expected ${expected.length}`);
  const atol = tol.atol ?? 1e-5;
  const rtol = tol.rtol ?? 1e-4;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const bothNaN = Number.isNaN(a) && Number.isNaN(b);
    const excess = bothNaN ? 0 : Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    assert.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

export function toF64(t: Tensor): Float64Array {
  return Float64Array.from(t.toArray() as Float32Array);
}

/** Where the committed fixtures are (test/fixtures at the repository root). */
export function fixturesDir(): string {
  return join(__dirname, '..', '..', '..', 'test', 'fixtures');
}

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export class SafetensorsFile {
  readonly header: Record<string, SafetensorsEntry>;
  readonly dataStart: number;

  constructor(readonly path: string) {
    const fd = openSync(path, 'r');
    try {
      const len = Buffer.alloc(8);
      readSync(fd, len, 0, 8, 0);
      const n = Number(len.readBigUInt64LE(0));
      const json = Buffer.alloc(n);
      readSync(fd, json, 0, n, 8);
      const parsed = JSON.parse(json.toString('utf8')) as Record<string, SafetensorsEntry>;
      delete (parsed as Record<string, unknown>)['__metadata__'];
      this.header = parsed;
      this.dataStart = 8 + n;
    } finally {
      closeSync(fd);
    }
  }

  names(): string[] {
    return Object.keys(this.header);
  }

  has(name: string): boolean {
    return name in this.header;
  }

  tensor(name: string, opts: { dtype?: DType; device?: Device } = {}): Tensor {
    const e = this.header[name];
    assert.ok(e, `${this.path}: no tensor ${name}`);
    const stored = dtypeFromSafetensors(e.dtype);
    assert.ok(stored, `${name}: unsupported dtype ${e.dtype}`);
    return Tensor.fromFile(this.path, this.dataStart + e.data_offsets[0], e.shape, stored, opts);
  }

  bytes(name: string): Uint8Array {
    const e = this.header[name];
    assert.ok(e, `${this.path}: no tensor ${name}`);
    const out = Buffer.alloc(e.data_offsets[1] - e.data_offsets[0]);
    const fd = openSync(this.path, 'r');
    try {
      readSync(fd, out, 0, out.length, this.dataStart + e.data_offsets[0]);
    } finally {
      closeSync(fd);
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

export function fixturePath(...parts: string[]): string {
  return join(fixturesDir(), ...parts);
}

export function haveFixtures(): boolean {
  return existsSync(fixturePath('tiny-flux', 'transformer', 'diffusion_pytorch_model.safetensors'));
}

// ---- reference math (float64, straightforward loops) ------------------------------------------------------

export function refMatmul(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number, bT = false): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k] * (bT ? b[j * K + k] : b[k * N + j]);
      out[i * N + j] = s;
    }
  }
  return out;
}

export function refSoftmaxRows(x: ArrayLike<number>, rows: number, L: number): Float64Array {
  const out = new Float64Array(rows * L);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let i = 0; i < L; i++) m = Math.max(m, x[r * L + i]);
    let s = 0;
    for (let i = 0; i < L; i++) s += Math.exp(x[r * L + i] - m);
    for (let i = 0; i < L; i++) out[r * L + i] = Math.exp(x[r * L + i] - m) / s;
  }
  return out;
}

export function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-6 checks: integrate the series / continued fraction instead
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  const erfc = Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f);
  return Math.sign(x) * (1 - erfc);
}

/**
 * GPU specs call this first: true when CUDA is usable. Otherwise the test is skipped with the reason printed,
 * or fails when FLUXLAB_REQUIRE_GPU=1 (set on the GPU machine so that a broken driver cannot pass as a skip).
 */
let gpuSkipReported = false;

export function gpuOrSkip(t: { skip(msg: string): void }): boolean {
  // imported lazily so that helpers stay usable without the addon's CUDA parts
  const { cuda } = require('../cuda') as typeof import('../cuda');
  if (cuda.isAvailable()) return true;
  const reason = `no usable GPU: ${cuda.unavailableReason()}`;
  if (process.env.FLUXLAB_REQUIRE_GPU === '1') assert.fail(`FLUXLAB_REQUIRE_GPU=1 but ${reason}`);
  if (!gpuSkipReported) console.log(`GPU tests skipped: ${reason}`);
  gpuSkipReported = true;
  t.skip(reason);
  return false;
}
