// `fluxlab generate` as outside checks run it: a child process per golden case, --dump compared with the golden
// file, plus argument parsing and error exits.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { GoldenCase, compareToGolden, fixturesDir, formatComparisons, goldenCases, readRecorded } from '../flux/golden';
import { decodePng } from '../flux/png';
import { outputPaths, parseGenerateArgs } from './generate';

const bin = resolve(__dirname, '..', '..', 'bin', 'fluxlab.js');
const fixtures = fixturesDir();
const scratch = mkdtempSync(join(tmpdir(), 'fluxlab-generate-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function fluxlab(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, 'generate', ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

function caseArgs(c: GoldenCase): string[] {
  const prompts = Array.isArray(c.prompt) ? c.prompt : [c.prompt];
  return [
    ...prompts.flatMap((p) => ['--prompt', p]),
    '--height', String(c.height),
    '--width', String(c.width),
    '--steps', String(c.steps),
    '--guidance', String(c.guidance),
    '--max-sequence-length', String(c.max_sequence_length),
  ];
}

function check(label: string, c: GoldenCase, args: string[], limit: number): void {
  const dump = join(scratch, `${label.replace(/[^\w.-]+/g, '_')}.safetensors`);
  const output = join(scratch, `${label.replace(/[^\w.-]+/g, '_')}.png`);
  const run = fluxlab([...args, '--dump', dump, '--output', output]);
  assert.equal(run.status, 0, `fluxlab generate failed (${run.status}):\n${run.stderr}`);
  const results = compareToGolden(c, readRecorded(dump), limit);
  const report = formatComparisons(label, results);
  console.log(report);
  assert.ok(results.every((r) => r.ok), report);
  const images = outputPaths(output, c.tensors.image_uint8[0]);
  const uint8 = readRecorded(dump).get('image_uint8')!;
  images.forEach((path, i) => {
    const png = decodePng(readFileSync(path));
    assert.deepEqual([png.height, png.width], [uint8.shape[1], uint8.shape[2]]);
    const plane = png.width * png.height * 3;
    assert.deepEqual(png.rgb, uint8.data.subarray(i * plane, (i + 1) * plane));
  });
}

describe('fluxlab generate: goldens through the CLI', () => {
  it('has the fluxlab executable', () => assert.ok(existsSync(bin), `${bin} is missing`));
  for (const c of goldenCases('manifest.json')) {
    it(`${c.pipeline}/${c.name} (--seed)`, () => {
      check(`cli ${c.pipeline} ${c.name}`, c, [join(fixtures, c.pipeline), ...caseArgs(c), '--seed', String(c.seed)], 1e-4);
    });
  }
  const cat = goldenCases('manifest.json').find((c) => c.pipeline === 'tiny-flux' && c.name === 'cat')!;
  it('tiny-flux/cat with --latents FILE:TENSOR (the golden latents_init)', () => {
    const golden = join(fixtures, 'tiny-flux-golden', 'cat.safetensors');
    check('cli latents', cat, [join(fixtures, 'tiny-flux'), ...caseArgs(cat), '--latents', `${golden}:latents_init`], 1e-4);
  });
  for (const c of goldenCases('manifest-nf4.json')) {
    const dq = c.pipeline.endsWith('nf4dq');
    it(`pre-quantized ${c.pipeline}/${c.name}`, () => {
      check(`cli ${c.pipeline} ${c.name}`, c, [join(fixtures, c.pipeline), ...caseArgs(c), '--seed', String(c.seed)], 1e-3);
    });
    it(`--quantize nf4${dq ? ' --double-quant' : ''} vs ${c.pipeline}/${c.name}`, () => {
      const quantize = ['--quantize', 'nf4', ...(dq ? ['--double-quant'] : []), '--components', 'transformer,text_encoder_2', '--compute-dtype', 'float32'];
      check(`cli quantize ${c.pipeline} ${c.name}`, c, [join(fixtures, 'tiny-flux'), ...caseArgs(c), '--seed', String(c.seed), ...quantize], 1e-3);
    });
  }
});

describe('fluxlab generate: errors', () => {
  it('exits 2 with usage on malformed arguments', () => {
    const run = fluxlab(['--height', 'tall', '--prompt', 'x']);
    assert.equal(run.status, 2);
    assert.match(run.stderr, /--height expects an integer ≥ 1, got 'tall'/);
    assert.match(run.stderr, /usage: fluxlab generate/);
  });

  it('exits 1 with a clear message on bad input', () => {
    const tiny = join(fixtures, 'tiny-flux');
    const cases: [string[], RegExp][] = [
      [[tiny, '--prompt', ''], /empty prompt/],
      [[join(scratch, 'nowhere'), '--prompt', 'x'], /is not a directory/],
      [[tiny, '--prompt', 'x', '--quantize', 'int3'], /unknown quantization backend "int3"/],
      [[tiny, '--prompt', 'x', '--latents', `${join(fixtures, 'tiny-flux-golden', 'cat.safetensors')}:nope`], /no tensor 'nope'/],
    ];
    for (const [args, message] of cases) {
      const run = fluxlab([...args, '--height', '16', '--width', '16', '--steps', '1']);
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stderr, message);
    }
  });
});

describe('parseGenerateArgs', () => {
  it('collects repeated prompts and options in both spellings', () => {
    const args = parseGenerateArgs(['m', '--prompt', 'a', '--prompt=b', '--steps=3', '--seed', '9', '--quantize', 'nf4', '--double-quant']);
    assert.equal(args.model, 'm');
    assert.deepEqual(args.prompts, ['a', 'b']);
    assert.equal(args.steps, 3);
    assert.equal(args.seed, 9);
    assert.deepEqual(args.quantization, { backend: 'nf4', doubleQuant: true, components: undefined, computeDtype: undefined });
  });

  it('splits --latents at the last colon and rejects conflicting options', () => {
    assert.deepEqual(parseGenerateArgs(['--prompt', 'a', '--latents', 'C:/x.safetensors:latents_init']).latents, { file: 'C:/x.safetensors', tensor: 'latents_init' });
    assert.throws(() => parseGenerateArgs(['--prompt', 'a', '--seed', '1', '--latents', 'f:t']), /either --seed or --latents/);
    assert.throws(() => parseGenerateArgs(['--prompt', 'a', '--double-quant']), /need --quantize/);
    assert.throws(() => parseGenerateArgs(['--steps', '2']), /--prompt is required/);
    assert.throws(() => parseGenerateArgs(['--prompt', 'a', '--bogus']), /unknown option --bogus/);
  });

  it('names batch outputs OUT.0.png, OUT.1.png', () => {
    assert.deepEqual(outputPaths('out.png', 1), ['out.png']);
    assert.deepEqual(outputPaths('/tmp/run/out.png', 2), ['/tmp/run/out.0.png', '/tmp/run/out.1.png']);
  });
});
