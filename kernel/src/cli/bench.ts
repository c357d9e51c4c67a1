// `fluxlab bench`: the table of the diffusers guide "Compile and offloading quantized models", measured on this
// machine — one row per quantization (bf16 | nf4: bitsandbytes NF4 on the transformer and T5, the guide's recipe)
// × compile (eager | compile: CUDA graphs) × offload (none | model | group | sequential CPU offloading) — or, with --component,
// single components (one transformer step, T5, the VAE decoder). Without weights, --random-weights builds a
// model at FLUX.1-dev's real shapes with RANDOM WEIGHTS (loudly labelled: timings and memory are real, images
// are noise). Figures go to stdout as a table and, with --json, to a file (bench/results/ keeps the claimed ones).
import { buildInfo, cuda, memory, type Device, type NativeBuildInfo } from '@fluxlab/native';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  BENCH_GROUP_OFFLOAD,
  BenchCompile,
  BenchConfig,
  BenchOffload,
  BenchQuantization,
  BenchRow,
  ComponentResult,
  SUPPORTED_OFFLOAD,
  benchPipeline,
  benchT5,
  benchTransformerStep,
  benchVaeDecode,
} from '../flux/benchmark';
import { Checkpoint } from '../flux/checkpoint';
import { readJson } from '../flux/config';
import { resolveModelDir } from '../flux/hub';
import { CheckpointWeights, ComponentLoadOptions, WeightSource } from '../flux/nn';
import { EMBEDDED_MODEL_DIR, FluxPipeline } from '../flux/pipeline';
import { PipelineConfigs, RANDOM_PRESETS, RandomPreset, presetConfigs } from '../flux/presets';
import { QuantizationOptions, onLoadPlan, resolveQuantization } from '../flux/quantization';
import { RandomWeights } from '../flux/random-weights';
import { T5EncoderModel } from '../flux/t5';
import { FluxTransformer2DModel } from '../flux/transformer';
import { AutoencoderKL } from '../flux/vae';
import { UsageError, integerOption } from './command.js';

export const usage = `usage: fluxlab bench [--model DIR | --random-weights flux1-dev|tiny-flux [--seed S]]
       [--size WxH] [--steps N] [--configs Q:C[:O],...] [--runs N] [--warmup-steps N]
       [--prompt TEXT] [--max-sequence-length L] [--device cuda|cuda:N|cpu] [--json [OUT.json]]
       fluxlab bench --component transformer|t5|vae|all [--sizes WxH,...] [--iterations N] [--profile] [...]

Runs the FLUX.1 pipeline end to end per configuration and prints the table of the diffusers guide
"Compile and offloading quantized models": whole-pipeline latency, median transformer step, graph capture,
text encoders, VAE decode, peak VRAM and the pinned host memory of offloaded weights.
  Q (quantization): bf16 (bfloat16 weights) | nf4 (bitsandbytes NF4 transformer + T5, bf16 compute)
  C (compile): eager | compile (CUDA graphs of the transformer step; eager under group and sequential offload)
  O (offload): none (default) | model (enableModelCpuOffload: one component on the GPU at a time)
               | group (enableGroupOffload: block_level, 1 block per group, next block prefetched on a side stream)
               | sequential (enableSequentialCpuOffload: each layer uploaded before it runs; slow at full size)
Defaults: --configs bf16:eager,bf16:compile,nf4:eager,nf4:compile,nf4:compile:model,nf4:eager:group
--size 1024x1024 --steps 28 --runs 1 --warmup-steps 2 --max-sequence-length 512; the device is cuda when
available, else cpu (where offloading does not apply: the default offload rows are left out).
MODEL: a diffusers FLUX.1 directory or cached repo id; --random-weights builds RANDOM WEIGHTS at the preset's
real shapes (FLUX.1-dev: 12B transformer, T5-XXL, CLIP-L, VAE); neither: the embedded tiny pipeline (random).
--component times single components instead: one transformer step per size (default 1024x1024,512x512) for each
quantization and compile mode that --configs names, T5 on L tokens per quantization, VAE decode at the first size
(bf16); each with the device memory resident when timing starts and the peak during the timed calls.
--profile (with --component, CUDA): one more call of each component timed op by op on the GPU (cuda.profile):
GPU time per op, and the slowest ops with their input shapes.
--json OUT writes the figures as JSON ({gpu, commit, date, height, width, steps, rows: [...]}); bare --json
prints the JSON instead of the table.`;

export interface BenchArgs {
  model?: string;
  randomWeights?: RandomPreset;
  seed: number;
  width: number;
  height: number;
  steps: number;
  configs: BenchConfig[];
  /** --configs was given (else the defaults, whose offload rows a CPU run leaves out). */
  configsGiven: boolean;
  runs: number;
  warmupSteps: number;
  prompt: string;
  maxSequenceLength: number;
  device?: Device;
  /** undefined: no JSON; '-': print JSON instead of the table; else a file. */
  json?: string;
  component?: 'transformer' | 't5' | 'vae' | 'all';
  sizes: { width: number; height: number }[];
  iterations: number;
  /** --component: profile one more call of each component by op (CUDA only). */
  profile: boolean;
  help: boolean;
}

const VALUE_OPTIONS = new Set([
  '--model',
  '--random-weights',
  '--seed',
  '--size',
  '--steps',
  '--configs',
  '--runs',
  '--warmup-steps',
  '--prompt',
  '--max-sequence-length',
  '--device',
  '--component',
  '--sizes',
  '--iterations',
]);

/**
 * The diffusers guide's rows (quantization; + compile; + compile and model CPU offloading) beside bf16, plus group
 * offloading with a prefetch stream. Sequential offload is asked for explicitly: every step uploads the whole
 * transformer without overlap (~7 GB in NF4, ~24 GB in bf16), tens of seconds per generation at full size.
 */
export const DEFAULT_CONFIGS: readonly BenchConfig[] = [
  { quantization: 'bf16', compile: 'eager', offload: 'none' },
  { quantization: 'bf16', compile: 'compile', offload: 'none' },
  { quantization: 'nf4', compile: 'eager', offload: 'none' },
  { quantization: 'nf4', compile: 'compile', offload: 'none' },
  { quantization: 'nf4', compile: 'compile', offload: 'model' },
  { quantization: 'nf4', compile: 'eager', offload: 'group' },
];

function size(option: string, value: string): { width: number; height: number } {
  const m = /^(\d+)x(\d+)$/.exec(value.trim());
  if (!m) throw new UsageError(`${option} expects WIDTHxHEIGHT such as 1024x1024, got '${value}'`);
  const [width, height] = [Number(m[1]), Number(m[2])];
  if (width < 16 || height < 16 || width % 16 !== 0 || height % 16 !== 0) {
    throw new UsageError(`${option}: ${value} must be multiples of 16 (2 × the VAE scale factor), at least 16x16`);
  }
  return { width, height };
}

/** 'bf16:eager,nf4:compile:none' → configs. */
export function parseConfigs(value: string): BenchConfig[] {
  const configs = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      const [quantization, compile, offload = 'none', ...rest] = item.split(':');
      if (rest.length > 0 || compile === undefined) throw new UsageError(`--configs: '${item}' is not QUANTIZATION:COMPILE[:OFFLOAD]`);
      if (quantization !== 'bf16' && quantization !== 'nf4') throw new UsageError(`--configs: quantization '${quantization}' is not bf16 or nf4`);
      if (compile !== 'eager' && compile !== 'compile') throw new UsageError(`--configs: compile '${compile}' is not eager or compile`);
      if (!SUPPORTED_OFFLOAD.includes(offload as BenchOffload)) throw new UsageError(`--configs: offload '${offload}' is not one of ${SUPPORTED_OFFLOAD.join(', ')}`);
      return { quantization, compile, offload } as BenchConfig;
    });
  if (configs.length === 0) throw new UsageError('--configs lists no configuration');
  const keys = configs.map((c) => `${c.quantization}:${c.compile}:${c.offload}`);
  const duplicate = keys.find((k, i) => keys.indexOf(k) !== i);
  if (duplicate) throw new UsageError(`--configs lists ${duplicate} twice`);
  return configs;
}

/** Parses the arguments after `bench`. Throws UsageError on malformed input. */
export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  const args: BenchArgs = {
    seed: 0,
    width: 1024,
    height: 1024,
    steps: 28,
    configs: [...DEFAULT_CONFIGS],
    configsGiven: false,
    runs: 1,
    warmupSteps: 2,
    prompt: 'a photo of a cat holding a sign that says hello world',
    maxSequenceLength: 512,
    sizes: [],
    iterations: 10,
    profile: false,
    help: false,
  };
  let seedGiven = false;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    if (eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--help' || arg === '-h') {
      args.help = true;
      continue;
    }
    if (arg === '--profile') {
      args.profile = true;
      continue;
    }
    if (arg === '--json') {
      if (value === undefined && i + 1 < argv.length && !argv[i + 1].startsWith('-')) value = argv[++i];
      args.json = value ?? '-';
      continue;
    }
    if (!VALUE_OPTIONS.has(arg)) {
      throw new UsageError(arg.startsWith('-') ? `unknown option ${arg}` : `unexpected argument '${arg}' (the model is given with --model)`);
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--model':
        args.model = value;
        break;
      case '--random-weights':
        if (!(RANDOM_PRESETS as readonly string[]).includes(value)) throw new UsageError(`--random-weights expects one of ${RANDOM_PRESETS.join(', ')}, got '${value}'`);
        args.randomWeights = value as RandomPreset;
        break;
      case '--seed':
        args.seed = integerOption(arg, value, 0);
        seedGiven = true;
        break;
      case '--size':
        ({ width: args.width, height: args.height } = size(arg, value));
        break;
      case '--steps':
        args.steps = integerOption(arg, value, 1);
        break;
      case '--configs':
        args.configs = parseConfigs(value);
        args.configsGiven = true;
        break;
      case '--runs':
        args.runs = integerOption(arg, value, 1);
        break;
      case '--warmup-steps':
        args.warmupSteps = integerOption(arg, value, 1);
        break;
      case '--prompt':
        if (value.trim() === '') throw new UsageError('--prompt is empty');
        args.prompt = value;
        break;
      case '--max-sequence-length':
        args.maxSequenceLength = integerOption(arg, value, 1);
        if (args.maxSequenceLength > 512) throw new UsageError(`--max-sequence-length ${value} exceeds 512`);
        break;
      case '--device':
        if (value !== 'cpu' && value !== 'cuda' && !/^cuda:\d+$/.test(value)) throw new UsageError(`--device expects cpu, cuda or cuda:N, got '${value}'`);
        args.device = value as Device;
        break;
      case '--component':
        if (!['transformer', 't5', 'vae', 'all'].includes(value)) throw new UsageError(`--component expects transformer, t5, vae or all, got '${value}'`);
        args.component = value as BenchArgs['component'];
        break;
      case '--sizes':
        args.sizes = value.split(',').map((s) => size(arg, s));
        break;
      case '--iterations':
        args.iterations = integerOption(arg, value, 1);
        break;
    }
  }
  if (args.help) return args;
  if (args.profile && !args.component) throw new UsageError('--profile profiles single components: use it with --component');
  if (args.model !== undefined && args.randomWeights !== undefined) throw new UsageError('give either --model or --random-weights, not both');
  if (seedGiven && args.randomWeights === undefined) throw new UsageError('--seed needs --random-weights (it seeds the random weights)');
  if (args.sizes.length === 0) args.sizes = args.component ? [{ width: 1024, height: 1024 }, { width: 512, height: 512 }] : [];
  return args;
}

function quantizationOf(q: BenchQuantization): QuantizationOptions | undefined {
  return q === 'nf4' ? { backend: 'bitsandbytes_4bit', components: ['transformer', 'text_encoder_2'], computeDtype: 'bfloat16', doubleQuant: false } : undefined;
}

/** What the figures were measured with: GPU, commit, date. */
export function environment(device: Device): { gpu: string; commit: string; date: string; timestamp: string; addon: NativeBuildInfo } {
  let commit = process.env.FLUXLAB_COMMIT ?? '';
  if (commit === '') {
    try {
      const root = resolve(__dirname, '..', '..', '..');
      const head = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      commit = dirty === '' ? head : `${head}+changes`;
    } catch {
      commit = 'unknown';
    }
  }
  const now = new Date();
  let gpu = 'none (CPU)';
  if (device !== 'cpu') {
    const index = device === 'cuda' ? cuda.currentDevice() : Number(device.slice(5));
    gpu = `${cuda.deviceName(index)} (${(memory.stats(index).total / 2 ** 30).toFixed(0)} GiB)`;
  }
  return { gpu, commit, date: now.toISOString().slice(0, 10), timestamp: now.toISOString(), addon: buildInfo() };
}

interface Source {
  label: string;
  random: boolean;
  pipeline(quantization: BenchQuantization, device: Device): Promise<FluxPipeline>;
  configs(): PipelineConfigs;
  weights(component: keyof PipelineConfigs): WeightSource;
}

function sourceOf(args: BenchArgs): Source {
  if (args.randomWeights !== undefined) {
    const preset = args.randomWeights;
    const random = new RandomWeights({ seed: args.seed });
    return {
      label: `RANDOM WEIGHTS at ${preset} shapes (seed ${args.seed})`,
      random: true,
      pipeline: (q, device) => FluxPipeline.fromRandom(preset, { device, dtype: 'bfloat16', quantization: quantizationOf(q), seed: args.seed }),
      configs: () => presetConfigs(preset, EMBEDDED_MODEL_DIR),
      weights: () => random,
    };
  }
  const embedded = args.model === undefined;
  const dir = embedded ? EMBEDDED_MODEL_DIR : resolveModelDir(args.model!, {});
  return {
    label: embedded ? 'embedded tiny-flux (RANDOM WEIGHTS)' : dir,
    random: embedded,
    pipeline: (q, device) => FluxPipeline.fromPretrained(embedded ? undefined : dir, { device, dtype: 'bfloat16', quantization: quantizationOf(q) }),
    configs: () => ({
      scheduler: readJson(join(dir, 'scheduler', 'scheduler_config.json'), 'scheduler'),
      text_encoder: readJson(join(dir, 'text_encoder', 'config.json'), 'text_encoder'),
      text_encoder_2: readJson(join(dir, 'text_encoder_2', 'config.json'), 'text_encoder_2'),
      transformer: readJson(join(dir, 'transformer', 'config.json'), 'transformer'),
      vae: readJson(join(dir, 'vae', 'config.json'), 'vae'),
    }),
    weights: (component) =>
      new CheckpointWeights(Checkpoint.open(join(dir, component), component.startsWith('text_encoder') ? 'model' : 'diffusion_pytorch_model')),
  };
}

const fmt = (value: number | null | undefined, digits: number): string => (value === null || value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits));

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatRows(rows: readonly BenchRow[]): string {
  return table(
    ['quantization', 'compile', 'offload', 'latency s', 'step s', 'capture s', 'text enc s', 'VAE s', 'peak VRAM GiB', 'graphs GiB', 'pinned GiB'],
    rows.map((r) => [
      r.quantization,
      r.compile,
      r.offload,
      fmt(r.latency_s, 3),
      fmt(r.step_s, 4),
      fmt(r.capture_s, 2),
      fmt(r.text_encoder_s, 4),
      fmt(r.vae_s, 4),
      r.peak_vram_gb === null ? `host ${fmt(r.peak_host_gb, 3)}` : fmt(r.peak_vram_gb, 2),
      fmt(r.graph_gb, 2),
      fmt(r.pinned_host_gb, 2),
    ]),
  );
}

export function formatComponents(results: readonly ComponentResult[]): string {
  return table(
    ['component', 'quantization', 'compile', 'shape', 'median ms', 'min ms', 'capture s', 'resident GiB', 'peak GiB'],
    results.map((r) => [
      r.component,
      r.quantization,
      r.compile,
      r.shape,
      fmt(r.median_s * 1000, 2),
      fmt(r.min_s * 1000, 2),
      fmt(r.capture_s, 2),
      fmt(r.resident_gb, 2),
      fmt(r.peak_gb, 2),
    ]),
  );
}

/** A component's op profile: GPU time by op, then the slowest op contexts. */
export function formatProfile(r: ComponentResult): string {
  const p = r.profile!;
  const share = (ms: number): string => `${((100 * ms) / p.total_ms).toFixed(1)}%`;
  return [
    `${r.component} ${r.quantization} ${r.compile} ${r.shape}: ${fmt(p.total_ms, 2)} ms of GPU time in ops`,
    table(['op', 'calls', 'ms', 'share'], p.by_op.map((g) => [g.op, String(g.calls), fmt(g.ms, 3), share(g.ms)])),
    '',
    table(['slowest (op, inputs)', 'calls', 'ms', 'share'], p.slowest.map((o) => [o.context, String(o.calls), fmt(o.ms, 3), share(o.ms)])),
  ].join('\n');
}

async function runComponents(args: BenchArgs, device: Device, source: Source, log: (line: string) => void): Promise<ComponentResult[]> {
  const which = args.component === 'all' ? ['transformer', 't5', 'vae'] : [args.component!];
  const configs = source.configs();
  const results: ComponentResult[] = [];
  const options = (component: string, q: BenchQuantization): ComponentLoadOptions => ({
    device,
    dtype: 'bfloat16',
    nf4: onLoadPlan(component, resolveQuantization(quantizationOf(q), 'bfloat16')),
  });
  const free = (model: { dispose(): void }): void => {
    model.dispose();
    if (device !== 'cpu') memory.emptyCache(device);
  };
  const quantizations = (['bf16', 'nf4'] as const).filter((q) => args.configs.some((c) => c.quantization === q));
  for (const q of quantizations) {
    const compileModes = (['eager', 'compile'] as const).filter((m) => args.configs.some((c) => c.quantization === q && c.compile === m));
    if (which.includes('transformer')) {
      const model = FluxTransformer2DModel.fromWeights(configs.transformer, source.weights('transformer'), options('transformer', q));
      try {
        for (const compile of compileModes) {
          for (const s of args.sizes) {
            const r = benchTransformerStep(model, { ...s, textLength: args.maxSequenceLength, iterations: args.iterations, profile: args.profile, quantization: q, compile });
            log(`transformer ${q} ${compile} ${r.shape}: ${(r.median_s * 1000).toFixed(2)} ms`);
            results.push(r);
          }
        }
      } finally {
        free(model);
      }
    }
    if (which.includes('t5')) {
      const model = T5EncoderModel.fromWeights(configs.text_encoder_2, source.weights('text_encoder_2'), options('text_encoder_2', q));
      try {
        const r = benchT5(model, { tokens: args.maxSequenceLength, iterations: args.iterations, profile: args.profile, quantization: q });
        log(`t5 ${q}: ${(r.median_s * 1000).toFixed(2)} ms`);
        results.push(r);
      } finally {
        free(model);
      }
    }
  }
  if (which.includes('vae')) {
    const model = AutoencoderKL.fromWeights(configs.vae, source.weights('vae'), { device, dtype: 'bfloat16' });
    try {
      const s = args.sizes[0];
      const r = benchVaeDecode(model, { ...s, iterations: args.iterations, profile: args.profile, quantization: 'bf16' });
      log(`vae: ${(r.median_s * 1000).toFixed(2)} ms`);
      results.push(r);
    } finally {
      free(model);
    }
  }
  return results;
}

/** Runs `fluxlab bench`; resolves to the exit status. */
export async function run(argv: string[]): Promise<number> {
  const args = parseBenchArgs(argv);
  if (args.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const device: Device = args.device ?? (cuda.isAvailable() ? 'cuda' : 'cpu');
  if (device !== 'cpu' && !cuda.isAvailable()) throw new Error(`--device ${device}: CUDA is unavailable: ${cuda.unavailableReason()}`);
  if (device === 'cpu' && args.profile) throw new UsageError('--profile times ops with CUDA events: it needs a CUDA device');
  if (device === 'cpu' && args.randomWeights === 'flux1-dev') {
    throw new Error('--random-weights flux1-dev on the CPU would draw 17 billion float32 parameters (~68 GB) and run for hours; use a CUDA device, or tiny-flux');
  }
  let configs = args.configs;
  const notes: string[] = [];
  if (device === 'cpu' && !args.component && configs.some((c) => c.offload !== 'none')) {
    if (args.configsGiven) {
      const asked = configs.filter((c) => c.offload !== 'none').map((c) => `${c.quantization}:${c.compile}:${c.offload}`);
      throw new Error(`--configs ${asked.join(',')}: CPU offloading needs a CUDA device (on the CPU the weights already are in host memory)`);
    }
    configs = configs.filter((c) => c.offload === 'none');
    notes.push('offload rows left out: CPU offloading needs a CUDA device (on the CPU the weights already are in host memory)');
  }
  if (!args.component && configs.some((c) => c.offload !== 'none')) {
    const group = `block_level, ${BENCH_GROUP_OFFLOAD.blocksPerGroup} block per group${BENCH_GROUP_OFFLOAD.useStream ? ', prefetch on a side stream' : ''}`;
    notes.push(
      `offload: model = enableModelCpuOffload(), group = enableGroupOffload(${group}), sequential = enableSequentialCpuOffload(); ` +
        'host copies in pinned memory (pinned_host_gb); compile is eager under group and sequential offload',
    );
  }
  const source = sourceOf(args);
  const env = environment(device);
  if (source.random) notes.push(`${source.label}: timings and memory are those of the model's shapes; the images are noise`);
  const jsonOnly = args.json === '-';
  const say = (line: string): void => void (jsonOnly ? process.stderr : process.stdout).write(`${line}\n`);
  const log = (line: string): void => void process.stderr.write(`bench: ${line}\n`);
  say(`fluxlab bench — ${source.label}`);
  say(`device ${device}: ${env.gpu}; commit ${env.commit}; ${env.date}`);
  for (const note of notes) say(`note: ${note}`);
  // Which kernels served linear / sdpa / conv2d (fluxk tensor-core routes or the portable fallback).
  if (device !== 'cpu') cuda.resetRouteCounts();
  const header = {
    gpu: env.gpu,
    commit: env.commit,
    date: env.date,
    timestamp: env.timestamp,
    device,
    addon: env.addon,
    model: source.label,
    random_weights: source.random,
  };
  let report: Record<string, unknown>;
  if (args.component) {
    const components = await runComponents(args, device, source, log);
    say('');
    say(formatComponents(components));
    for (const c of components) if (c.profile) say(`\n${formatProfile(c)}`);
    report = {
      ...header,
      text_tokens: args.maxSequenceLength,
      iterations: args.iterations,
      notes,
      components,
    };
  } else {
    const rows = await benchPipeline({
      load: (q) => source.pipeline(q, device),
      configs,
      height: args.height,
      width: args.width,
      steps: args.steps,
      runs: args.runs,
      warmupSteps: args.warmupSteps,
      prompt: args.prompt,
      maxSequenceLength: args.maxSequenceLength,
      log,
    });
    say('');
    say(`${args.width}x${args.height}, ${args.steps} steps, ${args.maxSequenceLength} T5 tokens, batch 1, bfloat16 activations`);
    say(formatRows(rows));
    report = {
      ...header,
      height: args.height,
      width: args.width,
      steps: args.steps,
      text_tokens: args.maxSequenceLength,
      runs: args.runs,
      notes,
      rows,
    };
  }
  if (device !== 'cpu') {
    const routes = Object.fromEntries(Object.entries(cuda.routeCounts()).filter(([, n]) => n > 0));
    report.kernel_routes = routes;
    say(`kernel routes: ${Object.entries(routes).map(([name, n]) => `${name} ×${n}`).join('; ') || 'none'}`);
  }
  // Six decimals (microseconds, kilobytes) are more than the measurements resolve.
  const json = `${JSON.stringify(report, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(6)) : v), 2)}\n`;
  if (jsonOnly) process.stdout.write(json);
  else if (args.json !== undefined) {
    writeFileSync(args.json, json);
    say(`wrote ${args.json}`);
  }
  return 0;
}
