// Measurements behind `fluxlab bench` (and usable from a notebook): the whole pipeline per configuration
// (quantization × compile × offload: none, model, group or sequential CPU offloading), and single components (one transformer step, T5, the VAE decoder) timed
// with CUDA events on the GPU and the host clock on the CPU. Every figure is a median of repeated runs after a
// warm-up at the same shapes (allocator caches, lazily loaded kernels and, compiled, the graph capture happen
// there), the way the diffusers guide "Compile and offloading quantized models" measures its table.
import { Generator, Tensor, cuda, memory, tidy, type Device } from '@fluxlab/native';
import { AutoencoderKL } from './vae';
import { DeviceClock } from './timing';
import { GroupOffloadOptions, OffloadTransport } from './offload';
import { FluxPipeline, GenerateOptions } from './pipeline';
import { latentImageIds, latentSize, textIds } from './latents';
import { T5EncoderModel } from './t5';
import { FluxTransformer2DModel } from './transformer';

export type BenchQuantization = 'bf16' | 'nf4';
export type BenchCompile = 'eager' | 'compile';
export type BenchOffload = 'none' | 'model' | 'group' | 'sequential';

export interface BenchConfig {
  quantization: BenchQuantization;
  compile: BenchCompile;
  offload: BenchOffload;
}

/** The offload modes: none, enableModelCpuOffload, enableGroupOffload (BENCH_GROUP_OFFLOAD), enableSequentialCpuOffload. */
export const SUPPORTED_OFFLOAD: readonly BenchOffload[] = ['none', 'model', 'group', 'sequential'];

/**
 * What the 'group' rows run: block-level groups of one block, the next one copied on a side stream while the current
 * one computes (the group offloading that can hide transfers; leaf_level without a stream is the 'sequential' row).
 */
export const BENCH_GROUP_OFFLOAD: GroupOffloadOptions = { type: 'block_level', blocksPerGroup: 1, useStream: true };

/** Puts `pipe` in the offload mode of a row (from whatever mode it was in). */
export function applyOffload(pipe: FluxPipeline, offload: BenchOffload, transport?: OffloadTransport<Tensor>): void {
  if (offload === 'none') pipe.disableOffload();
  else if (offload === 'model') pipe.enableModelCpuOffload({ transport });
  else if (offload === 'group') pipe.enableGroupOffload({ ...BENCH_GROUP_OFFLOAD, transport });
  else pipe.enableSequentialCpuOffload({ transport });
}

/** One row of the table (snake_case: the JSON file's field names). Seconds and GiB (2^30 bytes, as torch prints). */
export interface BenchRow extends BenchConfig {
  /** Wall-clock seconds of one whole generate() (text encoders, denoising, VAE, post-processing); median of runs. */
  latency_s: number;
  /** Median transformer step (device time on CUDA; CUDA-graph replays when compiled). */
  step_s: number;
  /** Seconds spent capturing CUDA graphs (compiled rows; null when eager or when capture is unavailable). */
  capture_s: number | null;
  /** Median text-encoder (CLIP + T5) and VAE-decode times. */
  text_encoder_s: number;
  vae_s: number;
  /**
   * Median times of the other parts of generate(): latents and step inputs prepared, all steps (with the
   * modulation table made before the first), images to uint8 on the host. latency_s less these and the two above
   * is host time between them (tokenizers, pipeline bookkeeping).
   */
  prepare_s?: number;
  denoise_s?: number;
  postprocess_s?: number;
  /**
   * Peak device memory of a measured run (null on the CPU): the allocator's peak of live tensors plus, compiled, the
   * captured graphs' private pools (reserved for the graphs' intermediates, outside the tensor peak).
   */
  peak_vram_gb: number | null;
  /** Peak bytes the caching allocator held from the driver (null on the CPU). */
  peak_reserved_gb: number | null;
  /** Memory of the captured graphs (pools and static inputs), included in the peaks. */
  graph_gb: number;
  /** CPU runs: peak host bytes held by tensors. */
  peak_host_gb: number | null;
  /** Pinned host memory after a measured run: the offloaded weights' host copies (0 without offloading). */
  pinned_host_gb: number;
  /** Seconds to build or load the pipeline of this quantization (shared by its rows). */
  load_s: number;
  runs: number;
  /** The warm-up run's final latents were all finite. */
  finite: boolean;
  note?: string;
}

export interface PipelineBenchOptions {
  /** Builds the pipeline for a quantization (the caller decides: checkpoint or random weights). */
  load(quantization: BenchQuantization): Promise<FluxPipeline>;
  configs: readonly BenchConfig[];
  height: number;
  width: number;
  steps: number;
  /** Measured runs per row (default 1; each run has `steps` steps, whose median is step_s). */
  runs?: number;
  /** Steps of the warm-up run before the measured ones (default 2). */
  warmupSteps?: number;
  prompt?: string;
  maxSequenceLength?: number;
  guidanceScale?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** How offloaded weights move, one per loaded pipeline (default: CUDA; specs pass a CPU stand-in). */
  offloadTransport?: (pipe: FluxPipeline) => OffloadTransport<Tensor>;
}

const GIB = 2 ** 30;

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs the pipeline rows: one load per quantization, then its eager and compiled rows in the order given. */
export async function benchPipeline(options: PipelineBenchOptions): Promise<BenchRow[]> {
  const log = options.log ?? (() => undefined);
  const runs = options.runs ?? 1;
  const warmupSteps = options.warmupSteps ?? 2;
  for (const c of options.configs) {
    if (!SUPPORTED_OFFLOAD.includes(c.offload)) throw new Error(`offload '${c.offload}' is not one of ${SUPPORTED_OFFLOAD.join(', ')}`);
  }
  const rows: BenchRow[] = [];
  const quantizations = [...new Set(options.configs.map((c) => c.quantization))];
  for (const quantization of quantizations) {
    const start = performance.now();
    const pipe = await options.load(quantization);
    const loadS = (performance.now() - start) / 1000;
    log(`${quantization}: loaded in ${loadS.toFixed(1)} s`);
    const transport = options.offloadTransport?.(pipe);
    try {
      const generate = (steps: number): GenerateOptions => ({
        prompt: options.prompt ?? 'a photo of a cat',
        height: options.height,
        width: options.width,
        numInferenceSteps: steps,
        guidanceScale: options.guidanceScale ?? 3.5,
        maxSequenceLength: options.maxSequenceLength ?? 512,
        seed: 0,
        progress: false,
      });
      for (const config of options.configs.filter((c) => c.quantization === quantization)) {
        applyOffload(pipe, config.offload, transport);
        const compiled = config.compile === 'compile';
        if (compiled) pipe.compile();
        else pipe.transformer.uncompile();
        const capturing = compiled && pipe.transformer.compiled;
        // The warm-up also checks the numbers: random weights must keep activations finite (bf16 overflows show here).
        let finite = true;
        const warm = await pipe.generate({
          ...generate(warmupSteps),
          trace: (name, t) => void (name === 'latents_final' && (finite = (t.toArray() as Float32Array).every(Number.isFinite))),
        });
        const measured = [];
        for (let r = 0; r < runs; r++) measured.push(await pipe.generate(generate(options.steps)));
        const last = measured[measured.length - 1];
        const onDevice = pipe.device !== 'cpu';
        // Pools as the runs held them (model offload drops the graphs when the transformer leaves the device).
        const graphPools = Math.max(...measured.map((m) => m.memory.graphPoolBytes));
        const row: BenchRow = {
          ...config,
          latency_s: median(measured.map((m) => m.timings.totalMs)) / 1000,
          step_s: median(measured.flatMap((m) => m.timings.stepMs)) / 1000,
          capture_s: capturing ? (warm.timings.captureMs + measured.reduce((s, m) => s + m.timings.captureMs, 0)) / 1000 : null,
          text_encoder_s: median(measured.map((m) => m.timings.encodePromptMs)) / 1000,
          vae_s: median(measured.map((m) => m.timings.decodeMs)) / 1000,
          prepare_s: median(measured.map((m) => m.timings.prepareLatentsMs)) / 1000,
          denoise_s: median(measured.map((m) => m.timings.denoiseMs)) / 1000,
          postprocess_s: median(measured.map((m) => m.timings.postprocessMs)) / 1000,
          peak_vram_gb: onDevice ? (Math.max(...measured.map((m) => m.memory.peakAllocatedBytes)) + graphPools) / GIB : null,
          peak_reserved_gb: onDevice ? (memory.stats(pipe.device).peakReserved / GIB) : null,
          graph_gb: last.memory.graphBytes / GIB,
          peak_host_gb: onDevice ? null : Math.max(...measured.map((m) => m.memory.peakAllocatedBytes)) / GIB,
          pinned_host_gb: Math.max(...measured.map((m) => m.memory.pinnedHostBytes)) / GIB,
          load_s: loadS,
          runs,
          finite,
        };
        if (compiled && !capturing) {
          row.note =
            config.offload === 'group' || config.offload === 'sequential'
              ? `compile() falls back to eager under ${config.offload} offload (the weights stream through the device inside each step; graphs replay fixed addresses)`
              : `compile() is a no-op on ${pipe.device} (CUDA graphs need a CUDA device): ran eagerly`;
        }
        if (!finite) row.note = `${row.note ? `${row.note}; ` : ''}NON-FINITE latents after the warm-up run`;
        log(`${quantization} ${config.compile} ${config.offload}: ${row.latency_s.toFixed(2)} s, step ${(row.step_s * 1000).toFixed(1)} ms`);
        rows.push(row);
      }
    } finally {
      pipe.dispose();
      transport?.dispose();
      if (pipe.device !== 'cpu') memory.emptyCache(pipe.device);
    }
  }
  return rows;
}

/** One component figure of the micro-benchmark. */
export interface ComponentResult {
  component: 'transformer' | 't5' | 'vae';
  quantization: BenchQuantization;
  compile: BenchCompile;
  /** What was run: e.g. '1024x1024, 512 text tokens', '512 tokens', 'decode 1024x1024'. */
  shape: string;
  /** Image size (transformer, VAE) and text tokens (transformer, T5). */
  width?: number;
  height?: number;
  tokens?: number;
  median_s: number;
  min_s: number;
  iterations: number;
  /** Compiled: seconds to capture the graph at this shape. */
  capture_s?: number | null;
  /** Device memory in live tensors when the timed calls started (the weights and inputs); null on the CPU. */
  resident_gb: number | null;
  /**
   * Peak device memory during the timed calls (resident + working memory; compiled: + the graphs' pools); null on
   * the CPU.
   */
  peak_gb: number | null;
  /** With `profile`: GPU time per op of one more call (cuda.profile). */
  profile?: ComponentProfile;
  note?: string;
}

/** Where one call's GPU time goes: by op name, and the slowest op contexts (op with input shapes). */
export interface ComponentProfile {
  total_ms: number;
  by_op: { op: string; calls: number; ms: number }[];
  slowest: { context: string; calls: number; ms: number }[];
}

export interface TimingOptions {
  iterations: number;
  /** Profile one more call by op (CUDA devices only). */
  profile?: boolean;
}

/** Seconds per call of `iterations` timed calls, and the device memory around them. */
export interface Timed {
  times: number[];
  resident_gb: number | null;
  peak_gb: number | null;
  profile?: ComponentProfile;
}

const PROFILE_CONTEXTS = 25;

type Figures = Pick<ComponentResult, 'median_s' | 'min_s' | 'iterations' | 'resident_gb' | 'peak_gb' | 'profile'>;

/** The figures of a ComponentResult from timed calls; `extraPeakBytes` adds memory outside the tensor peak. */
function figures(timed: Timed, extraPeakBytes = 0): Figures {
  return {
    median_s: median(timed.times),
    min_s: Math.min(...timed.times),
    iterations: timed.times.length,
    resident_gb: timed.resident_gb,
    peak_gb: timed.peak_gb === null ? null : timed.peak_gb + extraPeakBytes / GIB,
    profile: timed.profile,
  };
}

/**
 * Times `fn` (device work, returns tensors to free) `iterations` times after `warmup` calls. The warm-up calls
 * (and a compiled model's capture) happen before the memory baseline, so the peak is that of steady-state calls.
 */
export function timeIterations(device: Device, fn: () => Tensor, { iterations, profile = false }: TimingOptions, warmup = 2): Timed {
  for (let i = 0; i < warmup; i++) fn().dispose();
  const onDevice = device !== 'cpu';
  if (onDevice) {
    cuda.synchronize();
    memory.resetPeak(device);
  }
  const resident = onDevice ? memory.stats(device).allocated : 0;
  const clock = new DeviceClock(device);
  try {
    const marks = [clock.mark()];
    for (let i = 0; i < iterations; i++) {
      fn().dispose();
      marks.push(clock.mark());
    }
    const timed: Timed = {
      times: marks.slice(1).map((mark, i) => clock.elapsedMs(marks[i], mark) / 1000),
      resident_gb: onDevice ? resident / GIB : null,
      peak_gb: onDevice ? memory.stats(device).peakAllocated / GIB : null,
    };
    if (profile && onDevice) {
      const { totalMs, byName, ops, result } = cuda.profile(fn);
      result.dispose();
      timed.profile = {
        total_ms: totalMs,
        by_op: byName.map((g) => ({ op: g.name, calls: g.calls, ms: g.totalMs })),
        slowest: ops.slice(0, PROFILE_CONTEXTS).map((o) => ({ context: o.context, calls: o.calls, ms: o.totalMs })),
      };
    }
    return timed;
  } finally {
    clock.dispose();
  }
}

function randn(shape: number[], device: Device, dtype: string, seed: number): Tensor {
  return tidy(() => Tensor.randn(shape, { generator: new Generator(seed) }).to({ device, dtype: dtype as 'bfloat16' }));
}

/** One transformer step (as the pipeline calls it) at `height`×`width` with `textLength` T5 tokens. */
export function benchTransformerStep(
  model: FluxTransformer2DModel,
  opts: TimingOptions & { height: number; width: number; textLength: number; quantization: BenchQuantization; compile: BenchCompile },
): ComponentResult {
  const device = model.device;
  const latent = latentSize(opts.height, opts.width, 8);
  const rows = latent.height / 2;
  const columns = latent.width / 2;
  const config = model.config;
  const inputs = tidy(() => ({
    hiddenStates: randn([1, rows * columns, config.in_channels], device, model.dtype, 1),
    encoderHiddenStates: randn([1, opts.textLength, config.joint_attention_dim], device, model.dtype, 2),
    pooledProjections: randn([1, config.pooled_projection_dim], device, model.dtype, 3),
    timestep: Tensor.fromArray([0.75], [1], { device }),
    guidance: Tensor.fromArray([3.5], [1], { device }),
  }));
  const rotary = model.posEmbed(textIds(opts.textLength), latentImageIds(rows, columns));
  const compiled = opts.compile === 'compile';
  if (compiled) model.compile();
  else model.uncompile();
  try {
    const before = model.graphInfo().reduce((s, g) => s + g.captureMs, 0);
    const timed = timeIterations(device, () => model.forward({ ...inputs, rotary }), opts);
    const captured = model.graphInfo().reduce((s, g) => s + g.captureMs, 0) - before;
    // A replay's intermediates live in the graphs' private pools, outside the tensor peak: count them, as the
    // pipeline rows do.
    const pools = model.graphInfo().reduce((s, g) => s + g.poolBytes, 0);
    return {
      component: 'transformer',
      quantization: opts.quantization,
      compile: opts.compile,
      shape: `${opts.width}x${opts.height}, ${opts.textLength} text tokens`,
      width: opts.width,
      height: opts.height,
      tokens: opts.textLength,
      ...figures(timed, pools),
      capture_s: compiled ? (model.compiled ? captured / 1000 : null) : undefined,
      note: compiled && !model.compiled ? `compile() is a no-op on ${device}` : undefined,
    };
  } finally {
    model.uncompile();
    rotary.dispose();
    for (const t of Object.values(inputs)) t.dispose();
  }
}

/** T5 encoder on `tokens` tokens (batch 1). */
export function benchT5(model: T5EncoderModel, opts: TimingOptions & { tokens: number; quantization: BenchQuantization }): ComponentResult {
  const ids = Tensor.fromArray(Int32Array.from({ length: opts.tokens }, (_, i) => (i * 7919) % model.config.vocab_size), [1, opts.tokens], { device: model.device });
  try {
    const timed = timeIterations(model.device, () => model.forward(ids), opts);
    return {
      component: 't5',
      quantization: opts.quantization,
      compile: 'eager',
      shape: `${opts.tokens} tokens`,
      tokens: opts.tokens,
      ...figures(timed),
    };
  } finally {
    ids.dispose();
  }
}

/** VAE decode of one latent for a `height`×`width` image. */
export function benchVaeDecode(model: AutoencoderKL, opts: TimingOptions & { height: number; width: number; quantization: BenchQuantization }): ComponentResult {
  const factor = model.scaleFactor;
  const z = randn([1, model.config.latent_channels, opts.height / factor, opts.width / factor], model.device, model.dtype, 4);
  try {
    const timed = timeIterations(model.device, () => model.decode(z), opts);
    return {
      component: 'vae',
      quantization: opts.quantization,
      compile: 'eager',
      shape: `decode ${opts.width}x${opts.height}`,
      width: opts.width,
      height: opts.height,
      ...figures(timed),
    };
  } finally {
    z.dispose();
  }
}
