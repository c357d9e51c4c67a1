// `fluxlab bench`: argument parsing, the table and the JSON file, run for real on the embedded tiny pipeline on the
// CPU (2 steps, a small image) as a user would run it, plus the component mode and the usage errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { DEFAULT_CONFIGS, formatProfile, formatRows, parseBenchArgs, parseConfigs } from './bench';

const bin = resolve(__dirname, '..', '..', 'bin', 'fluxlab.js');
const scratch = mkdtempSync(join(tmpdir(), 'fluxlab-bench-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function fluxlab(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, 'bench', ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, FLUXLAB_COMMIT: 'abc1234' } });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const small = ['--size', '32x32', '--steps', '2', '--max-sequence-length', '16', '--device', 'cpu'];

describe('parseBenchArgs', () => {
  it('defaults to the rows of the diffusers guide (and bf16, group offload) at 1024x1024, 28 steps', () => {
    const args = parseBenchArgs([]);
    assert.deepEqual(args.configs, DEFAULT_CONFIGS);
    assert.equal(args.configsGiven, false);
    assert.deepEqual(
      DEFAULT_CONFIGS.map((c) => `${c.quantization}:${c.compile}:${c.offload}`),
      ['bf16:eager:none', 'bf16:compile:none', 'nf4:eager:none', 'nf4:compile:none', 'nf4:compile:model', 'nf4:eager:group'],
    );
    assert.deepEqual([args.width, args.height, args.steps, args.runs, args.warmupSteps, args.maxSequenceLength], [1024, 1024, 28, 1, 2, 512]);
    assert.equal(args.json, undefined);
    assert.equal(args.model, undefined);
    assert.equal(args.randomWeights, undefined);
    assert.deepEqual(args.sizes, []);
  });

  it('reads sizes as WIDTHxHEIGHT, configs, the random preset, and --json with or without a file', () => {
    const args = parseBenchArgs(['--random-weights', 'flux1-dev', '--seed=3', '--size', '768x512', '--configs', 'nf4:compile,bf16:eager:none', '--json', 'out.json']);
    assert.equal(args.randomWeights, 'flux1-dev');
    assert.equal(args.seed, 3);
    assert.deepEqual([args.width, args.height], [768, 512]);
    assert.deepEqual(args.configs, [
      { quantization: 'nf4', compile: 'compile', offload: 'none' },
      { quantization: 'bf16', compile: 'eager', offload: 'none' },
    ]);
    assert.equal(args.json, 'out.json');
    assert.equal(args.configsGiven, true);
    assert.deepEqual(parseConfigs('nf4:compile:model,bf16:eager:sequential,nf4:eager:group'), [
      { quantization: 'nf4', compile: 'compile', offload: 'model' },
      { quantization: 'bf16', compile: 'eager', offload: 'sequential' },
      { quantization: 'nf4', compile: 'eager', offload: 'group' },
    ]);
    assert.equal(parseBenchArgs(['--json']).json, '-');
    assert.equal(parseBenchArgs(['--json', '--steps', '3']).json, '-');
    const components = parseBenchArgs(['--component', 'all']);
    assert.deepEqual(components.sizes, [{ width: 1024, height: 1024 }, { width: 512, height: 512 }]);
  });

  it('rejects what it cannot run, naming the problem', () => {
    assert.throws(() => parseConfigs('bf16:eager:disk'), /offload 'disk' is not one of none, model, group, sequential/);
    assert.throws(() => parseConfigs('int8:eager'), /quantization 'int8' is not bf16 or nf4/);
    assert.throws(() => parseConfigs('bf16'), /not QUANTIZATION:COMPILE/);
    assert.throws(() => parseConfigs('bf16:eager,bf16:eager:none'), /lists bf16:eager:none twice/);
    assert.throws(() => parseBenchArgs(['--size', '1000x1000']), /multiples of 16/);
    assert.throws(() => parseBenchArgs(['--size', '1024']), /WIDTHxHEIGHT/);
    assert.throws(() => parseBenchArgs(['--model', 'x', '--random-weights', 'flux1-dev']), /either --model or --random-weights/);
    assert.throws(() => parseBenchArgs(['--seed', '1']), /--seed needs --random-weights/);
    assert.throws(() => parseBenchArgs(['--random-weights', 'sdxl']), /one of flux1-dev, tiny-flux/);
    assert.throws(() => parseBenchArgs(['--max-sequence-length', '600']), /exceeds 512/);
    assert.throws(() => parseBenchArgs(['somewhere']), /--model/);
    assert.throws(() => parseBenchArgs(['--profile']), /use it with --component/);
    assert.equal(parseBenchArgs(['--component', 't5', '--profile']).profile, true);
  });
});

describe('formatProfile', () => {
  it('shows GPU time by op and the slowest op contexts with their share', () => {
    const text = formatProfile({
      component: 'transformer', quantization: 'nf4', compile: 'eager', shape: '1024x1024, 512 text tokens',
      median_s: 0.17, min_s: 0.17, iterations: 1, resident_gb: 6, peak_gb: 6.3,
      profile: {
        total_ms: 200,
        by_op: [{ op: 'ops.linear', calls: 400, ms: 150 }, { op: 'ops.sdpa', calls: 57, ms: 50 }],
        slowest: [{ context: 'ops.linear: x [1,4096,3072] bfloat16 cuda:0, weight nf4 [12288,3072]', calls: 19, ms: 30 }],
      },
    });
    assert.match(text, /^transformer nf4 eager 1024x1024, 512 text tokens: 200\.00 ms of GPU time in ops/);
    assert.match(text, /ops\.linear\s+400\s+150\.000\s+75\.0%/);
    assert.match(text, /weight nf4 \[12288,3072\]\s+19\s+30\.000\s+15\.0%/);
  });
});

describe('fluxlab bench on the CPU (embedded tiny pipeline)', () => {
  it('prints the table and writes the JSON of the issue', () => {
    const out = join(scratch, 'bench.json');
    const run = fluxlab([...small, '--json', out]);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /fluxlab bench — embedded tiny-flux \(RANDOM WEIGHTS\)/);
    assert.match(run.stdout, /note: offload rows left out: CPU offloading needs a CUDA device/);
    assert.match(run.stdout, /quantization\s+compile\s+offload\s+latency s\s+step s\s+capture s\s+text enc s\s+VAE s\s+peak VRAM GiB\s+graphs GiB\s+pinned GiB/);
    assert.match(run.stdout, /^nf4\s+compile\s+none\s+\d+\.\d{3}/m);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    for (const key of ['gpu', 'commit', 'date', 'height', 'width', 'steps', 'rows']) assert.ok(key in report, `top-level ${key}`);
    assert.equal(report.gpu, 'none (CPU)');
    assert.equal(report.commit, 'abc1234');
    assert.match(report.date, /^\d{4}-\d{2}-\d{2}$/);
    assert.deepEqual([report.height, report.width, report.steps, report.random_weights], [32, 32, 2, true]);
    assert.deepEqual(
      report.rows.map((r: Record<string, unknown>) => `${r.quantization}:${r.compile}:${r.offload}`),
      ['bf16:eager:none', 'bf16:compile:none', 'nf4:eager:none', 'nf4:compile:none'],
    );
    for (const row of report.rows) {
      for (const key of ['latency_s', 'step_s', 'text_encoder_s', 'vae_s', 'denoise_s', 'peak_host_gb']) assert.ok(row[key] > 0, `${key} = ${row[key]}`);
      assert.ok(row.step_s < row.latency_s);
      assert.equal(row.peak_vram_gb, null, 'no VRAM on the CPU');
      assert.equal(row.capture_s, null, 'nothing is captured on the CPU');
      assert.equal(row.graph_gb, 0);
      assert.equal(row.pinned_host_gb, 0, 'nothing is offloaded (or pinned) in these rows');
      assert.equal(row.finite, true);
    }
    assert.match(report.rows[1].note, /compile\(\) is a no-op on cpu/);
  });

  it('builds random weights at a preset\'s shapes, runs the configs asked for, prints JSON with bare --json', () => {
    const run = fluxlab([...small, '--random-weights', 'tiny-flux', '--seed', '4', '--configs', 'nf4:eager', '--runs', '2', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.model, 'RANDOM WEIGHTS at tiny-flux shapes (seed 4)');
    assert.equal(report.rows.length, 1);
    assert.equal(report.rows[0].runs, 2);
    assert.match(run.stderr, /RANDOM WEIGHTS/);
  });

  it('times single components with --component', () => {
    const run = fluxlab(['--component', 'all', '--sizes', '32x32', '--max-sequence-length', '16', '--iterations', '2', '--device', 'cpu', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    const names = report.components.map((c: Record<string, unknown>) => `${c.component} ${c.quantization} ${c.compile}`);
    assert.deepEqual(names, [
      'transformer bf16 eager',
      'transformer bf16 compile',
      't5 bf16 eager',
      'transformer nf4 eager',
      'transformer nf4 compile',
      't5 nf4 eager',
      'vae bf16 eager',
    ]);
    for (const c of report.components) {
      assert.ok(c.median_s > 0 && c.min_s <= c.median_s && c.iterations === 2, JSON.stringify(c));
      assert.ok(c.resident_gb === null && c.peak_gb === null, 'device memory is null on the CPU');
    }
    assert.equal(report.components[0].tokens, 16);
    assert.deepEqual([report.components[6].width, report.components[6].height], [32, 32]);
  });

  it('times only the quantizations and compile modes --configs names', () => {
    const run = fluxlab(['--component', 'transformer', '--configs', 'nf4:compile', '--sizes', '32x32', '--max-sequence-length', '16', '--iterations', '1', '--device', 'cpu', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.deepEqual(report.components.map((c: Record<string, unknown>) => `${c.component} ${c.quantization} ${c.compile}`), ['transformer nf4 compile']);
  });

  it('refuses FLUX.1-dev\'s full size on the CPU (exit 1, with the reason)', () => {
    const run = fluxlab(['--random-weights', 'flux1-dev', '--device', 'cpu']);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /flux1-dev on the CPU would draw 17 billion/);
  });

  it('exits 2 with the usage on bad arguments', () => {
    const run = fluxlab(['--configs', 'bf16:eager:disk']);
    assert.equal(run.status, 2);
    assert.match(run.stderr, /offload 'disk' is not one of none, model, group, sequential/);
    assert.match(run.stderr, /usage: fluxlab bench/);
  });

  it('refuses offload rows asked for on the CPU (exit 1: offloading needs a CUDA device)', () => {
    const run = fluxlab([...small, '--configs', 'nf4:eager:none,nf4:compile:model']);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /--configs nf4:compile:model: CPU offloading needs a CUDA device/);
  });
});

describe('formatRows', () => {
  it('aligns a row per configuration, with - for what was not measured', () => {
    const text = formatRows([
      {
        quantization: 'nf4',
        compile: 'compile',
        offload: 'none',
        latency_s: 3.21,
        step_s: 0.1049,
        capture_s: 1.5,
        text_encoder_s: 0.03,
        vae_s: 0.09,
        peak_vram_gb: 10.2,
        peak_reserved_gb: 11,
        graph_gb: 0.4,
        peak_host_gb: null,
        pinned_host_gb: 0,
        load_s: 9,
        runs: 1,
        finite: true,
      },
    ]);
    const [header, rule, row] = text.split('\n');
    assert.match(header, /^quantization/);
    assert.match(rule, /^-+\s+-+/);
    assert.match(row, /^nf4\s+compile\s+none\s+3\.210\s+0\.1049\s+1\.50\s+0\.0300\s+0\.0900\s+10\.20\s+0\.40\s+0\.00$/);
  });
});
