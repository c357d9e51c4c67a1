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
