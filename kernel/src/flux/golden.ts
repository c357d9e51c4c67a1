// The golden fixtures (diffusers' own outputs; test/fixtures/README.md) and the comparisons their README
// prescribes. Used by the specs and by anyone checking a build against diffusers.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SafetensorsFile } from './safetensors';

/** test/fixtures of this repository (FLUXLAB_FIXTURES overrides it, e.g. with /work/shared/fixtures). */
export function fixturesDir(): string {
  return process.env.FLUXLAB_FIXTURES ?? resolve(__dirname, '..', '..', '..', 'test', 'fixtures');
}

export interface GoldenCase {
  pipeline: string;
  name: string;
  prompt: string | string[];
  height: number;
  width: number;
  steps: number;
  guidance: number;
  seed: number;
  max_sequence_length: number;
  num_steps_recorded: number;
  tensors: Record<string, number[]>;
}

export function goldenCases(manifest: 'manifest.json' | 'manifest-nf4.json'): GoldenCase[] {
  const path = join(fixturesDir(), manifest);
  if (!existsSync(path)) throw new Error(`golden manifest ${path} is missing`);
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as { pipelines: Record<string, Omit<GoldenCase, 'pipeline'>[]> };
  return Object.entries(parsed.pipelines).flatMap(([pipeline, cases]) => cases.map((c) => ({ ...c, pipeline })));
}

export function goldenFile(c: GoldenCase): SafetensorsFile {
  return SafetensorsFile.open(join(fixturesDir(), `${c.pipeline}-golden`, `${c.name}.safetensors`));
}

/** ||a - b|| / ||b||, accumulated in float64. */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i] - expected[i]));
  return max;
}

/** A host copy of a traced tensor, as --dump writes it. */
export interface Recorded {
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

/** Reads every tensor of a dump (or golden) file into host arrays. */
export function readRecorded(path: string): Map<string, Recorded> {
  const file = SafetensorsFile.open(path);
  const out = new Map<string, Recorded>();
  for (const name of file.names()) {
    const data = file.readArray(name);
    if (!(data instanceof Float32Array || data instanceof Int32Array || data instanceof Uint8Array)) {
      throw new Error(`${path}: tensor '${name}' has dtype ${file.get(name).dtype}`);
    }
    out.set(name, { shape: [...file.get(name).shape], data });
  }
  return out;
}

export interface Comparison {
  name: string;
  /** 'ids': exact equality; 'image': max |a − b| over uint8 values; 'float': relative L2. */
  kind: 'ids' | 'image' | 'float';
  value: number;
  limit: number;
  ok: boolean;
}

/**
 * Compares what a run recorded with a golden case per the fixtures' README: token ids exact, image_uint8 within
 * `imageLimit` per value, every other recorded tensor within `floatLimit` relative L2.
 */
export function compareToGolden(c: GoldenCase, recorded: ReadonlyMap<string, Recorded>, floatLimit: number, imageLimit = 1): Comparison[] {
  const golden = goldenFile(c);
  const results: Comparison[] = [];
  for (const name of Object.keys(c.tensors)) {
    const expected = golden.readArray(name) as Float32Array | Int32Array | Uint8Array;
    const got = recorded.get(name);
    const kind: Comparison['kind'] = name.endsWith('_input_ids') ? 'ids' : name === 'image_uint8' ? 'image' : 'float';
    const limit = kind === 'ids' ? 0 : kind === 'image' ? imageLimit : floatLimit;
    const goldenShape = [...golden.get(name).shape];
    if (got === undefined || got.shape.length !== goldenShape.length || got.shape.some((d, i) => d !== goldenShape[i])) {
      results.push({ name, kind, value: Number.NaN, limit, ok: false });
      continue;
    }
    const value = kind === 'float' ? relativeL2(got.data, expected) : maxAbsDiff(got.data, expected);
    results.push({ name, kind, value, limit, ok: value <= limit });
  }
  return results;
}

/** One line per comparison, worst first, for test logs. */
export function formatComparisons(label: string, results: readonly Comparison[]): string {
  const worst = [...results].sort((a, b) => (b.ok ? 0 : 1) - (a.ok ? 0 : 1) || b.value / (b.limit || 1) - a.value / (a.limit || 1));
  const floats = results.filter((r) => r.kind === 'float');
  const maxFloat = floats.reduce((m, r) => Math.max(m, r.value), 0);
  const lines = worst.filter((r) => !r.ok).map((r) => `  FAIL ${r.name}: ${r.kind} ${r.value} > ${r.limit}`);
  return `${label}: ${results.length} tensors, max float rel L2 ${maxFloat.toExponential(2)}, ` +
    `ids ${results.filter((r) => r.kind === 'ids').every((r) => r.ok) ? 'exact' : 'DIFFER'}, ` +
    `image max |diff| ${results.find((r) => r.kind === 'image')?.value ?? 'n/a'}` + (lines.length ? `\n${lines.join('\n')}` : '');
}
