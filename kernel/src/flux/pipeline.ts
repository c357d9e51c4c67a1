// diffusers' FluxPipeline: loads a diffusers directory (or a hub-cache snapshot), encodes prompts with CLIP
// (pooled) and T5 (sequence), draws torch-identical starting noise, runs the flow-matching Euler loop with the
// guidance embedding, decodes with the VAE and post-processes to 8-bit RGB — the same numbers diffusers computes.
import { Generator, Scope, Tensor, cuda, memory, ops, resolveDevice, tidy, type Device } from '@fluxlab/native';
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { interruptSignal } from '../runtime/interrupt';
import { CLIPTextModel } from './clip';
import { readJson, readModelIndex } from './config';
import { resolveModelDir } from './hub';
import { FluxImage, imagesToUint8 } from './image';
import { latentImageIds, latentSize, packLatents, textIds as makeTextIds, unpackLatents } from './latents';
import { Checkpoint } from './checkpoint';
import { CheckpointWeights, ComponentLoadOptions, FloatDType, Nf4Plan, WeightSource, isFloatDTypeName } from './nn';
import { PipelineConfigs, RandomPreset, presetConfigs } from './presets';
import { CudaTransport, GroupOffloadOptions, OffloadEvent, OffloadInfo, OffloadPolicy, OffloadTransport, Offloader, checkGroupOptions } from './offload';
import { QuantizationOptions, onLoadPlan, prequantizedPlan, resolveQuantization } from './quantization';
import { RandomWeights } from './random-weights';
import { FlowMatchEulerDiscreteScheduler, fluxSchedule } from './scheduler';
import { T5EncoderModel } from './t5';
import { displayProgress } from './progress';
import { DeviceClock } from './timing';
import { ClipTokenizer, T5Tokenizer, loadClipTokenizer, loadT5Tokenizer } from './tokenizers';
import { FluxTransformer2DModel } from './transformer';
import { AutoencoderKL } from './vae';

const f32 = Math.fround;
const mimeBundle = Symbol.for('fluxlab.mimeBundle');

/** The largest modulation table generate() makes (FluxTransformer2DModel.modulationTable): 128 steps × samples of FLUX.1 in bf16. */
const MODULATION_TABLE_MAX_BYTES = 256 * 2 ** 20;

/** The pipeline shipped with fluxlab: tiny-flux (seeded RANDOM weights) in diffusers' FLUX.1 layout. */
export const EMBEDDED_MODEL_DIR = resolve(__dirname, '..', '..', 'assets', 'tiny-flux');

/** FluxPipeline.default_sample_size: the default image side is this times the VAE scale factor (1024 for FLUX.1). */
const DEFAULT_SAMPLE_SIZE = 128;

const COMPONENT_CLASSES: Record<string, readonly string[]> = {
  scheduler: ['FlowMatchEulerDiscreteScheduler'],
  text_encoder: ['CLIPTextModel'],
  text_encoder_2: ['T5EncoderModel'],
  tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
  tokenizer_2: ['T5Tokenizer', 'T5TokenizerFast'],
  transformer: ['FluxTransformer2DModel'],
  vae: ['AutoencoderKL'],
};

export interface FluxPipelineLoadOptions {
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: Device;
  /** Weights and activations: 'float32' (default, like diffusers), 'bfloat16' or 'float16'. */
  dtype?: FloatDType;
  /** Quantize on load (bitsandbytes NF4), mirroring diffusers' PipelineQuantizationConfig. */
  quantization?: QuantizationOptions;
  /** Hub revision (branch, tag or commit) when given a repo id. */
  revision?: string;
  /** Hub cache directory (default from HF_HUB_CACHE / HF_HOME). */
  cacheDir?: string;
  /** diffusers' weight variant, e.g. 'fp16'. */
  variant?: string;
  /** Called as each component finishes loading. */
  onLoad?: (event: { component: string; ms: number }) => void;
  /**
   * Offload as each component is loaded ('model', 'sequential' or group options: what enableModelCpuOffload(),
   * enableSequentialCpuOffload() and enableGroupOffload() do after a load), so the device never holds more than one
   * component, loading included. CUDA only.
   */
  offload?: OffloadRequest;
}

/** The components that hold weights. */
type ModelComponent = 'text_encoder' | 'text_encoder_2' | 'transformer' | 'vae';

/** The pipeline's offloading: enableModelCpuOffload, enableSequentialCpuOffload or enableGroupOffload. */
export type PipelineOffloadMode = 'model' | 'sequential' | 'group';

export interface OffloadOptions {
  /** How weights move between host and device (default: CUDA pinned memory and streams; specs pass their own). */
  transport?: OffloadTransport<Tensor>;
  /** Called with every upload, prefetch, wait and release (what is where, when). */
  onEvent?: (event: OffloadEvent) => void;
}

export interface PipelineOffloadInfo extends OffloadInfo {
  mode: PipelineOffloadMode;
}

/** An offload mode as a load option asks for it: 'model', 'sequential', or group offload's options. */
export type OffloadRequest = 'model' | 'sequential' | GroupOffloadOptions;

/** The mode and per-model policy of a request; `what` names the call in errors. */
function offloadPlan(request: OffloadRequest, what: string): { mode: PipelineOffloadMode; policy: OffloadPolicy } {
  if (request === 'model') return { mode: 'model', policy: { kind: 'model' } };
  if (request === 'sequential') return { mode: 'sequential', policy: { kind: 'group', type: 'leaf_level', useStream: false } };
  if (typeof request !== 'object' || request === null) throw new Error(`${what}: offload must be 'model', 'sequential' or group options, got ${String(request)}`);
  return { mode: 'group', policy: { kind: 'group', ...checkGroupOptions(request, what) } };
}

export interface FluxPipelineRandomOptions {
  device?: Device;
  dtype?: FloatDType;
  /** Quantize on the device as fromPretrained would (bitsandbytes NF4). */
  quantization?: QuantizationOptions;
  /** Seed of the weights (default 0). */
  seed?: number;
  /** Config fields to replace, per component, e.g. { transformer: { num_layers: 1, num_single_layers: 1 } }. */
  overrides?: Partial<Record<keyof PipelineConfigs, Record<string, unknown>>>;
  onLoad?: (event: { component: string; ms: number }) => void;
  /** Offload as each component is drawn (see FluxPipelineLoadOptions.offload). */
  offload?: OffloadRequest;
}

export interface EncodePromptOptions {
  prompt: string | string[];
  /** Prompt(s) for T5 (default: `prompt`), as diffusers' prompt_2. */
  prompt2?: string | string[];
  /** T5 tokens (≤ 512, default 512). */
  maxSequenceLength?: number;
  numImagesPerPrompt?: number;
}

/** encodePrompt's result; the tensors belong to the caller (dispose()). */
export interface EncodedPrompt {
  /** T5 sequence embeddings [B·n, L, 4096]. */
  promptEmbeds: Tensor;
  /** CLIP pooled embeddings [B·n, 768]. */
  pooledPromptEmbeds: Tensor;
  /** Zeros [L, 3]. */
  textIds: Float32Array;
  /** Tokenizer outputs per prompt: [B, 77] and [B, L]. */
  clipInputIds: Int32Array;
  t5InputIds: Int32Array;
  /** diffusers' truncation warnings, if any. */
  warnings: string[];
  dispose(): void;
}

export interface FluxProgress {
  stage: 'encode' | 'denoise' | 'decode' | 'done';
  /** Steps done (denoise), of `steps`. */
  step: number;
  steps: number;
  /** The scheduler timestep of the step just done (denoise). */
  timestep?: number;
  /** Wall-clock milliseconds since generate() started. */
  elapsedMs: number;
}

export interface GenerateOptions extends EncodePromptOptions {
  /** Image size in pixels (default 128 × VAE scale factor); rounded down to a multiple of 2 × scale factor, with diffusers' warning. */
  height?: number;
  width?: number;
  /** Denoising steps (default 28). */
  numInferenceSteps?: number;
  /** Custom sigmas (diffusers' `sigmas`); default linspace(1, 1/steps, steps). */
  sigmas?: number[];
  /** Guidance embedding value (default 3.5). */
  guidanceScale?: number;
  /** Seed of a torch.Generator('cpu') for the starting noise (default: a random seed, reported in the result). */
  seed?: number;
  /** An existing generator (its state advances, as torch's does). */
  generator?: Generator;
  /** Packed starting latents [B·n, S, 4C] instead of random noise (diffusers' `latents`). */
  latents?: Tensor;
  /** Stops at the next step boundary when aborted (the kernel's interrupt does the same). */
  signal?: AbortSignal;
  /** Show progress (default true): a display updated in place in the kernel, a text line per update elsewhere. */
  progress?: boolean;
  /** Also called with each progress event. */
  onProgress?: (progress: FluxProgress) => void;
  /**
   * Receives intermediate tensors under the golden files' names (clip_input_ids, t5_input_ids, prompt_embeds,
   * pooled_prompt_embeds, text_ids, img_ids, latents_init, sigmas, timesteps, step{i}.hidden_states,
   * step{i}.timestep, step{i}.guidance, step{i}.noise_pred, latents_final, image_decoded, image_uint8). Copy what
   * you keep: the tensors are freed after the call.
   */
  trace?: (name: string, value: Tensor) => void;
}

export interface GenerationTimings {
  totalMs: number;
  /** Host milliseconds spent capturing CUDA graphs during this run (compiled pipelines, at a new size). */
  captureMs: number;
  encodePromptMs: number;
  prepareLatentsMs: number;
  denoiseMs: number;
  /** Per denoising step (device time on CUDA). */
  stepMs: number[];
  decodeMs: number;
  postprocessMs: number;
}

export interface GenerationMemory {
  device: Device;
  /** Peak bytes held by tensors during the generation (device allocator on CUDA, host tensors on the CPU). */
  peakAllocatedBytes: number;
  /** Bytes held by tensors when it finished (the weights, mostly). */
  allocatedBytes: number;
  /** CUDA: bytes the caching allocator reserved from the driver. */
  reservedBytes?: number;
  /** Live bytes per component (allocation tag). */
  byComponent: Record<string, number>;
  /**
   * Bytes held by the transformer's captured CUDA graphs at the end of the denoising loop (0 when eager): their
   * private memory pools, which the allocated figures leave out, plus their static input tensors, which they include.
   */
  graphBytes: number;
  /** Of graphBytes, the graphs' private pools (outside peakAllocatedBytes). */
  graphPoolBytes: number;
  /** Pinned host memory when it finished (offloaded weights' host copies, memory.hostStats().pinned). */
  pinnedHostBytes: number;
}

/** What generate() returns: the images (displayed inline by the kernel) and how long and how much it took. */
export class FluxGenerationResult {
  constructor(
    readonly images: FluxImage[],
    readonly width: number,
    readonly height: number,
    readonly seed: number | undefined,
    readonly timings: GenerationTimings,
    readonly memory: GenerationMemory,
    readonly randomWeights: boolean,
    readonly warnings: string[],
    /** What the weights were (a directory, or which random weights). */
    readonly weights: string,
  ) {}

  get summary(): string {
    const t = this.timings;
    const perStep = t.stepMs.length > 0 ? t.stepMs.reduce((a, b) => a + b, 0) / t.stepMs.length : 0;
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
    return (
      `${this.images.length} image(s) ${this.width}x${this.height}` +
      (this.seed !== undefined ? `, seed ${this.seed}` : '') +
      `: total ${t.totalMs.toFixed(0)} ms (text ${t.encodePromptMs.toFixed(0)} ms, ${t.stepMs.length} steps × ${perStep.toFixed(1)} ms, ` +
      `VAE ${t.decodeMs.toFixed(0)} ms); peak ${mib(this.memory.peakAllocatedBytes)} on ${this.memory.device}` +
      (this.randomWeights ? ` — ${this.weights.includes('RANDOM') ? this.weights : `RANDOM WEIGHTS: ${this.weights}`}, images are noise by design` : '')
    );
  }

  toString(): string {
    return `FluxGenerationResult(${this.summary})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  [mimeBundle](): Record<string, unknown> {
    const imgs = this.images
      .map((im) => `<img src="data:image/png;base64,${Buffer.from(im.toPNG()).toString('base64')}" width="${im.width}" height="${im.height}" style="image-rendering:pixelated;margin:2px">`)
      .join('');
    const caption = this.summary.replace(/&/g, '&amp;').replace(/</g, '&lt;');
    const bundle: Record<string, unknown> = {
      'text/html': `<div class="fluxlab-generation">${imgs}<div class="fluxlab-generation-caption"><small>${caption}</small></div></div>`,
      'text/plain': this.toString(),
    };
    if (this.images.length > 0) bundle['image/png'] = this.images[0].toPNG();
    return bundle;
  }
}

function promptList(value: unknown, name: string): string[] {
  if (value === undefined || value === null) throw new Error(`${name} is required: a non-empty string or an array of them`);
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list)) throw new Error(`${name} must be a string or an array of strings, got ${typeof value}`);
  if (list.length === 0) throw new Error(`${name} is an empty array: give at least one prompt`);
  list.forEach((p, i) => {
    if (typeof p !== 'string') throw new Error(`${name}${list.length > 1 ? `[${i}]` : ''} is a ${typeof p}, not a string`);
    if (p.trim() === '') throw new Error(`empty prompt${Array.isArray(value) ? ` (${name}[${i}])` : ''}: describe the image to generate`);
  });
  return list as string[];
}

function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${String(value)}`);
  return value;
}

/** [B, ...] → [B·n, ...], each row repeated n times in a row (diffusers' repeat + view). */
function repeatRows(x: Tensor, n: number): Tensor {
  if (n === 1) return ops.contiguous(x);
  const [batch, ...rest] = x.shape;
  const width = rest.reduce((a, b) => a * b, 1);
  const rows = Int32Array.from({ length: batch * n }, (_, i) => Math.floor(i / n));
  return tidy(() => ops.embedding(x.reshape([batch, width]), Tensor.fromArray(rows, [batch * n], { device: x.device })).reshape([batch * n, ...rest]));
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  const interrupt = interruptSignal();
  if (interrupt.aborted) throw interrupt.reason;
  if (signal?.aborted) throw signal.reason ?? new Error('generation aborted');
}

function componentDir(root: string, index: ReturnType<typeof readModelIndex>, name: string): string {
  const entry = index.components[name];
  const dir = join(root, name);
  if (entry === undefined || entry === null) throw new Error(`missing component '${name}': ${join(root, 'model_index.json')} does not list it`);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`missing component '${name}': ${dir} does not exist`);
  const allowed = COMPONENT_CLASSES[name];
  if (!allowed.includes(entry[1])) throw new Error(`component '${name}' is a ${entry[1]}; FluxPipeline needs ${allowed.join(' or ')}`);
  return dir;
}

/** The device ('cuda' resolved to 'cuda:N'), dtype and quantization plan a load asks for, checked. */
function loadTarget(options: { device?: Device; dtype?: FloatDType; quantization?: QuantizationOptions }): {
  device: Device;
  dtype: FloatDType;
  quantization: ReturnType<typeof resolveQuantization>;
} {
  const requested: Device = options.device ?? 'cpu';
  const dtype = options.dtype ?? 'float32';
  if (!isFloatDTypeName(dtype)) throw new Error(`dtype '${String(dtype)}' is not one of float32, bfloat16, float16`);
  if (requested !== 'cpu' && !cuda.isAvailable()) throw new Error(`device '${requested}' requested but CUDA is unavailable: ${cuda.unavailableReason()}`);
  return { device: resolveDevice(requested), dtype, quantization: resolveQuantization(options.quantization, dtype) };
}

export class FluxPipeline {
  private offloader?: Offloader<Tensor>;
  private offloadMode?: PipelineOffloadMode;
  private offloadObserver?: (event: OffloadEvent) => void;

  private constructor(
    /** The directory the pipeline was loaded from. */
    readonly modelPath: string,
    readonly device: Device,
    readonly dtype: FloatDType,
    readonly tokenizer: ClipTokenizer,
    readonly tokenizer2: T5Tokenizer,
    readonly textEncoder: CLIPTextModel,
    readonly textEncoder2: T5EncoderModel,
    readonly transformer: FluxTransformer2DModel,
    readonly vae: AutoencoderKL,
    readonly scheduler: FlowMatchEulerDiscreteScheduler,
    /** True when the weights are seeded random numbers (the embedded test pipeline, or fromRandom). */
    readonly randomWeights: boolean,
    /** Milliseconds each component took to load. */
    readonly loadTimings: Record<string, number>,
    /** What the weights are, for captions and PNG metadata (the directory, or which random weights). */
    readonly weightsDescription: string,
  ) {}

  /**
   * Loads a diffusers FluxPipeline directory, or the hub-cache snapshot of a repo id (e.g.
   * 'black-forest-labs/FLUX.1-dev', resolved from HF_HUB_CACHE / HF_HOME, never downloaded). Without a model,
   * loads the embedded tiny pipeline, whose weights are RANDOM (it exists so everything runs anywhere).
   */
  static async fromPretrained(pathOrRepoId?: string | null, options: FluxPipelineLoadOptions = {}): Promise<FluxPipeline> {
    const { device, dtype, quantization } = loadTarget(options);
    const randomWeights = pathOrRepoId === undefined || pathOrRepoId === null || pathOrRepoId === '';
    if (randomWeights) {
      console.warn(
        'fluxlab: no model given: using the embedded tiny-flux pipeline, whose weights are RANDOM (seeded) — it produces noise by design. ' +
          "Pass a FLUX.1 directory or repo id (e.g. 'black-forest-labs/FLUX.1-dev') for real images.",
      );
    }
    const root = randomWeights ? EMBEDDED_MODEL_DIR : resolveModelDir(pathOrRepoId as string, options);
    const indexPath = join(root, 'model_index.json');
    if (!existsSync(indexPath)) throw new Error(`${root} is not a diffusers pipeline directory: model_index.json is missing`);
    const index = readModelIndex(root, indexPath);
    if (index._class_name !== 'FluxPipeline') {
      throw new Error(`${indexPath} describes a ${index._class_name}; fluxlab loads FluxPipeline directories`);
    }
    const dirs = Object.fromEntries(Object.keys(COMPONENT_CLASSES).map((name) => [name, componentDir(root, index, name)]));
    const configs: PipelineConfigs = {
      scheduler: readJson(join(dirs.scheduler, 'scheduler_config.json'), 'scheduler'),
      text_encoder: readJson(join(dirs.text_encoder, 'config.json'), 'text_encoder'),
      text_encoder_2: readJson(join(dirs.text_encoder_2, 'config.json'), 'text_encoder_2'),
      transformer: readJson(join(dirs.transformer, 'config.json'), 'transformer'),
      vae: readJson(join(dirs.vae, 'config.json'), 'vae'),
    };
    const nf4 = (component: ModelComponent): Nf4Plan | undefined => {
      const prequantized = prequantizedPlan(component, configs[component].quantization_config, join(dirs[component], 'config.json'));
      const onLoad = onLoadPlan(component, quantization);
      if (prequantized && onLoad) {
        console.warn(`fluxlab: ${component} is already bitsandbytes-quantized; its own quantization_config applies`);
      }
      return prequantized ?? onLoad;
    };
    const checkpoint = (component: ModelComponent): WeightSource =>
      new CheckpointWeights(Checkpoint.open(dirs[component], component === 'text_encoder' || component === 'text_encoder_2' ? 'model' : 'diffusion_pytorch_model'));
    return FluxPipeline.assemble({
      modelPath: root,
      device,
      dtype,
      configs,
      source: checkpoint,
      nf4,
      tokenizerDirs: [dirs.tokenizer, dirs.tokenizer_2],
      randomWeights,
      weightsDescription: randomWeights ? 'embedded tiny-flux (random weights)' : root,
      onLoad: options.onLoad,
      offload: options.offload,
    });
  }

  /**
   * A pipeline with RANDOM WEIGHTS at a model's real shapes, for benchmarks and tests where no checkpoint is at hand:
   * 'flux1-dev' builds FLUX.1-dev's exact configs (19 + 38 blocks of width 3072, T5-XXL, CLIP-L, the 16-channel
   * VAE; presets.ts), 'tiny-flux' the embedded tiny pipeline's. Weights are drawn on the target device (random-
   * weights.ts), NF4-quantized there when `quantization` asks, exactly as loaded weights would be. Tokenizers are
   * the embedded pipeline's (same algorithms, smaller vocabularies: the shapes are FLUX.1's). Images are noise.
   * `overrides` replaces config fields per component (e.g. `{ transformer: { num_layers: 1 } }`).
   */
  static async fromRandom(preset: RandomPreset = 'flux1-dev', options: FluxPipelineRandomOptions = {}): Promise<FluxPipeline> {
    const { device, dtype, quantization } = loadTarget(options);
    const configs = presetConfigs(preset, EMBEDDED_MODEL_DIR);
    for (const [component, fields] of Object.entries(options.overrides ?? {})) {
      if (!(component in configs)) throw new Error(`fromRandom: overrides names '${component}', not one of ${Object.keys(configs).join(', ')}`);
      Object.assign(configs[component as keyof PipelineConfigs], fields);
    }
    const source = new RandomWeights({ seed: options.seed ?? 0 });
    const description = `RANDOM WEIGHTS at ${preset} shapes (seed ${source.seed})`;
    console.warn(`fluxlab: ${description}: for benchmarks and tests only; the images are noise by design.`);
    return FluxPipeline.assemble({
      modelPath: `random:${preset}`,
      device,
      dtype,
      configs,
      source: () => source,
      nf4: (component) => onLoadPlan(component, quantization),
      tokenizerDirs: [join(EMBEDDED_MODEL_DIR, 'tokenizer'), join(EMBEDDED_MODEL_DIR, 'tokenizer_2')],
      randomWeights: true,
      weightsDescription: description,
      onLoad: options.onLoad,
      offload: options.offload,
    });
  }

  /** Builds the components from their configs and weight sources (fromPretrained and fromRandom). */
  private static async assemble(spec: {
    modelPath: string;
    device: Device;
    dtype: FloatDType;
    configs: PipelineConfigs;
    source: (component: ModelComponent) => WeightSource;
    nf4: (component: ModelComponent) => Nf4Plan | undefined;
    tokenizerDirs: [string, string];
    randomWeights: boolean;
    weightsDescription: string;
    onLoad?: FluxPipelineLoadOptions['onLoad'];
    offload?: OffloadRequest;
  }): Promise<FluxPipeline> {
    const { device, dtype, configs } = spec;
    const loadTimings: Record<string, number> = {};
    const loaded: { dispose(): void }[] = [];
    // Offloading on load: each component leaves the device as soon as it is built (checked before anything loads).
    let built: FluxPipeline | undefined;
    const offloading =
      spec.offload === undefined
        ? undefined
        : {
            ...offloadPlan(spec.offload, 'load option offload'),
            offloader: new Offloader<Tensor>(new CudaTransport(device, 'the load option offload'), { onEvent: (event) => built?.offloadObserver?.(event) }),
          };
    const offloadLoaded = (component: ModelComponent, model: object): void => offloading?.offloader.attach(model, component, offloading.policy);
    const timed = async <T>(component: string, load: () => T): Promise<T> => {
      const start = performance.now();
      const value = memory.withTag(component, load);
      const disposable = value as Partial<{ dispose(): void }>;
      if (typeof disposable.dispose === 'function') loaded.push(value as { dispose(): void });
      loadTimings[component] = performance.now() - start;
      spec.onLoad?.({ component, ms: loadTimings[component] });
      // Let the event loop run (interrupts, I/O) between components; an interrupt frees what was loaded.
      await new Promise((r) => setImmediate(r));
      throwIfAborted(undefined);
      return value;
    };
    const options = (component: ModelComponent): ComponentLoadOptions => ({ device, dtype, nf4: spec.nf4(component) });
    try {
      const scheduler = new FlowMatchEulerDiscreteScheduler(configs.scheduler);
      const tokenizer = await timed('tokenizer', () => loadClipTokenizer(spec.tokenizerDirs[0]));
      const tokenizer2 = await timed('tokenizer_2', () => loadT5Tokenizer(spec.tokenizerDirs[1]));
      const textEncoder = await timed('text_encoder', () =>
        CLIPTextModel.fromWeights(configs.text_encoder, spec.source('text_encoder'), options('text_encoder')),
      );
      offloadLoaded('text_encoder', textEncoder);
      const textEncoder2 = await timed('text_encoder_2', () =>
        T5EncoderModel.fromWeights(configs.text_encoder_2, spec.source('text_encoder_2'), options('text_encoder_2')),
      );
      offloadLoaded('text_encoder_2', textEncoder2);
      const transformer = await timed('transformer', () =>
        FluxTransformer2DModel.fromWeights(configs.transformer, spec.source('transformer'), options('transformer')),
      );
      offloadLoaded('transformer', transformer);
      const vae = await timed('vae', () => AutoencoderKL.fromWeights(configs.vae, spec.source('vae'), options('vae')));
      offloadLoaded('vae', vae);
      if (transformer.config.joint_attention_dim !== textEncoder2.config.d_model) {
        throw new Error(`transformer joint_attention_dim ${transformer.config.joint_attention_dim} != text_encoder_2 d_model ${textEncoder2.config.d_model}`);
      }
      if (transformer.config.pooled_projection_dim !== textEncoder.config.hidden_size) {
        throw new Error(`transformer pooled_projection_dim ${transformer.config.pooled_projection_dim} != text_encoder hidden_size ${textEncoder.config.hidden_size}`);
      }
      if (transformer.config.in_channels !== vae.config.latent_channels * 4) {
        throw new Error(`transformer in_channels ${transformer.config.in_channels} != 4 × vae latent_channels ${vae.config.latent_channels}`);
      }
      built = new FluxPipeline(
        spec.modelPath,
        device,
        dtype,
        tokenizer,
        tokenizer2,
        textEncoder,
        textEncoder2,
        transformer,
        vae,
        scheduler,
        spec.randomWeights,
        loadTimings,
        spec.weightsDescription,
      );
      built.offloader = offloading?.offloader;
      built.offloadMode = offloading?.mode;
      return built;
    } catch (err) {
      offloading?.offloader.dispose();
      for (const model of loaded) model.dispose();
      throw err;
    }
  }

  /**
   * Captures the transformer's denoising step as CUDA graphs (FluxTransformer2DModel.compile): the first
   * generation at a new size or batch captures, later ones replay. The text encoders and the VAE run once per
   * generation and are bound by their kernels, not by launches: they stay eager. On the CPU a no-op, with a message.
   */
  compile(): this {
    const blocked = this.offloader?.compileBlockedReason(this.transformer);
    if (blocked !== undefined) {
      console.warn(`fluxlab: compile(): ${blocked}`);
      return this;
    }
    this.transformer.compile();
    return this;
  }

  /**
   * diffusers' enable_model_cpu_offload: every component's weights move to pinned host memory; a component is
   * uploaded when the pipeline calls it and the previously used one leaves (text_encoder → text_encoder_2 →
   * transformer → vae), so the GPU holds the largest component plus activations. The transformer stays resident
   * through the steps; at the end of generate() everything is back in host memory. Compiled graphs are dropped when
   * the transformer leaves and recaptured at its next call (~0.02 s at FLUX.1-dev's size). Needs a CUDA device.
   */
  enableModelCpuOffload(options: OffloadOptions = {}): this {
    return this.setOffload('model', options, 'enableModelCpuOffload()');
  }

  /**
   * diffusers' enable_sequential_cpu_offload: each module's own weights (a Linear, a norm, a conv) are uploaded
   * right before it runs and dropped right after, on every component — the least memory and the slowest (every
   * weight crosses PCIe on every call, without overlap). leaf_level group offload without a stream. Needs CUDA.
   */
  enableSequentialCpuOffload(options: OffloadOptions = {}): this {
    return this.setOffload('sequential', options, 'enableSequentialCpuOffload()');
  }

  /**
   * diffusers' enable_group_offload on every component: 'block_level' streams groups of `blocksPerGroup` consecutive
   * blocks (the rest of each model stays for the whole call), 'leaf_level' each module's own weights; `useStream`
   * copies the next group on a side stream while the current one computes. The transformer then runs eagerly
   * (compile() says why). Needs a CUDA device. `applyGroupOffloading(model, …)` does it for one model.
   */
  enableGroupOffload(options: GroupOffloadOptions & OffloadOptions): this {
    const { type, blocksPerGroup, useStream } = options;
    return this.setOffload({ type, blocksPerGroup, useStream }, options, 'enableGroupOffload()');
  }

  /** Ends offloading: every weight back on the device (diffusers' remove_all_hooks followed by .to(device)). */
  disableOffload(): this {
    const offloader = this.offloader;
    this.offloader = undefined;
    this.offloadMode = undefined;
    offloader?.dispose({ restore: true });
    return this;
  }

  /** Where the weights are: the mode, and per component its groups, resident groups, host and device bytes. */
  offloadInfo(): PipelineOffloadInfo | undefined {
    if (this.offloader === undefined || this.offloadMode === undefined) return undefined;
    return { mode: this.offloadMode, ...this.offloader.info() };
  }

  private setOffload(request: OffloadRequest, options: OffloadOptions, what: string): this {
    const { mode, policy } = offloadPlan(request, what);
    const components: [ModelComponent, object][] = [
      ['text_encoder', this.textEncoder],
      ['text_encoder_2', this.textEncoder2],
      ['transformer', this.transformer],
      ['vae', this.vae],
    ];
    this.offloadObserver = options.onEvent;
    const current = this.offloader;
    if (current !== undefined && (options.transport === undefined || options.transport === current.transport)) {
      // Another mode over the same host copies: only the grouping and the hooks change.
      for (const [name, model] of components) current.attach(model, name, policy);
      this.offloadMode = mode;
      return this;
    }
    const transport = options.transport ?? new CudaTransport(this.device, what);
    this.disableOffload();
    const offloader = new Offloader<Tensor>(transport, { onEvent: (event) => this.offloadObserver?.(event) });
    try {
      for (const [name, model] of components) offloader.attach(model, name, policy);
    } catch (err) {
      offloader.dispose({ restore: true });
      throw err;
    }
    this.offloader = offloader;
    this.offloadMode = mode;
    return this;
  }

  /** 2^(VAE levels − 1): 8 for FLUX.1. */
  get vaeScaleFactor(): number {
    return this.vae.scaleFactor;
  }

  /** CLIP pooled and T5 sequence embeddings for the prompts, as FluxPipeline.encode_prompt. */
  encodePrompt(options: EncodePromptOptions): EncodedPrompt {
    const prompts = promptList(options.prompt, 'prompt');
    const prompts2 = options.prompt2 === undefined || options.prompt2 === null ? prompts : promptList(options.prompt2, 'prompt2');
    if (prompts2.length !== prompts.length) {
      throw new Error(`prompt2 has ${prompts2.length} entries but prompt has ${prompts.length}: give one per prompt`);
    }
    const maxSequenceLength = positiveInteger(options.maxSequenceLength ?? 512, 'maxSequenceLength');
    if (maxSequenceLength > 512) throw new Error(`\`max_sequence_length\` cannot be greater than 512 but is ${maxSequenceLength}`);
    const n = positiveInteger(options.numImagesPerPrompt ?? 1, 'numImagesPerPrompt');
    const clipTokens = this.tokenizer.tokenize(prompts);
    const t5Tokens = this.tokenizer2.tokenize(prompts2, maxSequenceLength, this.tokenizer.modelMaxLength);
    const warnings = [clipTokens.warning, t5Tokens.warning].filter((w): w is string => w !== null);
    for (const w of warnings) console.warn(w);
    const concat = (rows: Int32Array[]): Int32Array => {
      const out = new Int32Array(rows.reduce((a, r) => a + r.length, 0));
      let offset = 0;
      for (const r of rows) {
        out.set(r, offset);
        offset += r.length;
      }
      return out;
    };
    const clipInputIds = concat(clipTokens.inputIds);
    const t5InputIds = concat(t5Tokens.inputIds);
    const batch = prompts.length;
    const { promptEmbeds, pooledPromptEmbeds } = tidy(() => {
      const clipIds = Tensor.fromArray(clipInputIds, [batch, clipInputIds.length / batch], { device: this.device });
      const { pooledOutput } = this.textEncoder.forward(clipIds, clipInputIds);
      const t5Ids = Tensor.fromArray(t5InputIds, [batch, maxSequenceLength], { device: this.device });
      const sequence = this.textEncoder2.forward(t5Ids);
      return { promptEmbeds: repeatRows(sequence, n), pooledPromptEmbeds: repeatRows(pooledOutput, n) };
    });
    return {
      promptEmbeds,
      pooledPromptEmbeds,
      textIds: makeTextIds(maxSequenceLength),
      clipInputIds,
      t5InputIds,
      warnings,
      dispose(): void {
        promptEmbeds.dispose();
        pooledPromptEmbeds.dispose();
      },
    };
  }

  /** Runs the whole pipeline. Interrupts (kernel or `signal`) stop it at the next step and free what it allocated. */
  async generate(options: GenerateOptions): Promise<FluxGenerationResult> {
    const start = performance.now();
    const scope = new Scope();
    const clock = new DeviceClock(this.device);
    const trace = options.trace;
    const traceHost = (name: string, data: Float32Array | Int32Array | Uint8Array, shape: number[]): void => {
      if (!trace) return;
      const t = Tensor.fromArray(data, shape);
      try {
        trace(name, t);
      } finally {
        t.dispose();
      }
    };
    const shown = options.progress === false ? undefined : displayProgress();
    const progress = (event: Omit<FluxProgress, 'elapsedMs'>): void => {
      const full = { ...event, elapsedMs: performance.now() - start };
      shown?.(full);
      options.onProgress?.(full);
    };
    const warnings: string[] = [];
    const onDevice = this.device !== 'cpu';
    if (onDevice) memory.resetPeak(this.device);
    else memory.resetHostPeak();

    // Argument checks first: nothing is allocated before they pass.
    const vsf = this.vaeScaleFactor;
    const height = positiveInteger(options.height ?? DEFAULT_SAMPLE_SIZE * vsf, 'height');
    const width = positiveInteger(options.width ?? DEFAULT_SAMPLE_SIZE * vsf, 'width');
    if (height % (vsf * 2) !== 0 || width % (vsf * 2) !== 0) {
      const message = `\`height\` and \`width\` have to be divisible by ${vsf * 2} but are ${height} and ${width}. Dimensions will be resized accordingly`;
      console.warn(message);
      warnings.push(message);
    }
    const latent = latentSize(height, width, vsf);
    if (latent.height === 0 || latent.width === 0) throw new Error(`height and width must be at least ${vsf * 2}, got ${height}x${width}`);
    const steps = options.sigmas !== undefined ? options.sigmas.length : positiveInteger(options.numInferenceSteps ?? 28, 'numInferenceSteps');
    if (steps < 1) throw new Error('sigmas must not be empty');
    const guidanceScale = options.guidanceScale ?? 3.5;
    if (typeof guidanceScale !== 'number' || !Number.isFinite(guidanceScale)) throw new Error(`guidanceScale must be a finite number, got ${String(guidanceScale)}`);
    const n = positiveInteger(options.numImagesPerPrompt ?? 1, 'numImagesPerPrompt');
    if (options.seed !== undefined && (!Number.isSafeInteger(options.seed) || options.seed < 0)) {
      throw new Error(`seed must be a non-negative integer, got ${String(options.seed)}`);
    }
    if ([options.seed, options.generator, options.latents].filter((v) => v !== undefined).length > 1) {
      throw new Error('give at most one of seed, generator and latents');
    }
    throwIfAborted(options.signal);

    try {
      clock.mark();
      progress({ stage: 'encode', step: 0, steps });
      const encoded = this.encodePrompt(options);
      scope.track(encoded.promptEmbeds);
      scope.track(encoded.pooledPromptEmbeds);
      warnings.push(...encoded.warnings);
      const batch = encoded.promptEmbeds.shape[0];
      const prompts = batch / n;
      traceHost('clip_input_ids', encoded.clipInputIds, [prompts, encoded.clipInputIds.length / prompts]);
      traceHost('t5_input_ids', encoded.t5InputIds, [prompts, encoded.t5InputIds.length / prompts]);
      trace?.('prompt_embeds', encoded.promptEmbeds);
      trace?.('pooled_prompt_embeds', encoded.pooledPromptEmbeds);
      traceHost('text_ids', encoded.textIds, [encoded.textIds.length / 3, 3]);
      const afterEncode = clock.mark();
      throwIfAborted(options.signal);

      // prepare_latents: randn [B, C, H, W] from a CPU generator in float32, packed, then to the model.
      const channels = this.transformer.config.in_channels / 4;
      const seqLen = (latent.height / 2) * (latent.width / 2);
      let seed: number | undefined;
      let latents: Tensor;
      if (options.latents !== undefined) {
        const given = options.latents;
        if (!(given instanceof Tensor)) throw new Error('latents must be a Tensor');
        if (given.ndim !== 3 || given.shape[0] !== batch || given.shape[1] !== seqLen || given.shape[2] !== channels * 4) {
          throw new Error(`latents must be packed [${batch}, ${seqLen}, ${channels * 4}] for ${batch} image(s) of ${height}x${width}, got ${given.describe()}`);
        }
        latents = scope.track(given.to({ device: this.device, dtype: this.dtype }));
      } else {
        seed = options.generator === undefined ? (options.seed ?? Math.floor(Math.random() * 2 ** 32)) : undefined;
        const generator = options.generator ?? new Generator(seed);
        latents = scope.track(
          tidy(() => {
            const noise = Tensor.randn([batch, channels, latent.height, latent.width], { generator });
            return packLatents(noise).to({ device: this.device, dtype: this.dtype });
          }),
        );
      }
      trace?.('latents_init', latents);
      const imgIds = latentImageIds(latent.height / 2, latent.width / 2);
      traceHost('img_ids', imgIds, [seqLen, 3]);

      const scheduler = new FlowMatchEulerDiscreteScheduler(this.scheduler.config);
      fluxSchedule(scheduler, steps, seqLen, options.sigmas);
      traceHost('sigmas', scheduler.sigmas, [scheduler.sigmas.length]);
      traceHost('timesteps', scheduler.timesteps, [scheduler.timesteps.length]);
      const guidance = this.transformer.config.guidance_embeds ? new Array<number>(batch).fill(f32(guidanceScale)) : undefined;
      // Every step's inputs go to the device once, so that a step needs no host work (and can be a CUDA graph).
      // The transformer gets t / 1000 (float32; see FluxTransformer2DModel.conditioning on bfloat16).
      const modelTimesteps = Float32Array.from(scheduler.timesteps, (t) => f32(t / 1000));
      const stepTimesteps = scope.track(
        Tensor.fromArray(Float32Array.from({ length: steps * batch }, (_, j) => modelTimesteps[Math.floor(j / batch)]), [steps, batch], { device: this.device }),
      );
      const guidanceTensor = guidance ? scope.track(Tensor.fromArray(Float32Array.from(guidance), [batch], { device: this.device })) : undefined;
      const rotary = this.transformer.posEmbed(encoded.textIds, imgIds);
      scope.track(rotary.cos);
      scope.track(rotary.sin);
      const capturedBefore = this.transformer.graphInfo().reduce((sum, g) => sum + g.captureMs, 0);
      const afterLatents = clock.mark();
      // Every step's adaptive-norm projections at once (FluxTransformer2DModel.modulationTable), counted in the
      // denoising time; model offload uploads the transformer for it as for a step. Group and sequential offload
      // stream the blocks through each step, where each block projects its own (one more pass over every block's
      // weights per generation would cost more than the 28 steps' projections save). The table holds
      // modulationWidth values per step and sample (2 MB in bf16 for FLUX.1): past MODULATION_TABLE_MAX_BYTES (many
      // steps times many images) the steps project their own.
      const tableBytes = steps * batch * this.transformer.modulationWidth * (this.transformer.dtype === 'float32' ? 4 : 2);
      const modulation =
        (this.offloadMode === undefined || this.offloadMode === 'model') && tableBytes <= MODULATION_TABLE_MAX_BYTES
          ? scope.track(this.transformer.modulationTable({ timestep: stepTimesteps, guidance: guidanceTensor, pooledProjections: encoded.pooledPromptEmbeds }))
          : undefined;

      const stepMarks: number[] = [afterLatents];
      for (let i = 0; i < scheduler.timesteps.length; i++) {
        throwIfAborted(options.signal);
        const t = scheduler.timesteps[i];
        if (trace) {
          trace(`step${i}.hidden_states`, latents);
          traceHost(`step${i}.timestep`, new Float32Array(batch).fill(modelTimesteps[i]), [batch]);
          if (guidance) traceHost(`step${i}.guidance`, Float32Array.from(guidance), [batch]);
        }
        const next = tidy(() => {
          const noise = this.transformer.forward({
            hiddenStates: latents,
            encoderHiddenStates: encoded.promptEmbeds,
            pooledProjections: encoded.pooledPromptEmbeds,
            timestep: ops.slice(stepTimesteps, 0, i, i + 1),
            guidance: guidanceTensor,
            rotary,
            modulation: modulation && ops.slice(modulation, 0, i, i + 1).reshape([batch, this.transformer.modulationWidth]),
          });
          trace?.(`step${i}.noise_pred`, noise);
          // FlowMatchEulerDiscreteScheduler.step: float32 sample + (sigma_next − sigma)·v, cast back to v's dtype.
          const sample = latents.dtype === 'float32' ? latents : latents.to({ dtype: 'float32' });
          const updated = ops.add(sample, ops.scale(noise, scheduler.stepDelta(i)));
          return updated.dtype === noise.dtype ? updated : updated.to({ dtype: noise.dtype });
        });
        latents.dispose();
        latents = scope.track(next);
        stepMarks.push(clock.mark());
        // Keep the host at most one step ahead of the device, so progress follows the GPU.
        clock.waitFor(stepMarks[stepMarks.length - 2]);
        progress({ stage: 'denoise', step: i + 1, steps, timestep: t });
        await new Promise((r) => setImmediate(r));
      }
      throwIfAborted(options.signal);
      // Read before the VAE runs: model offload drops the transformer's graphs when the VAE comes in.
      const graphs = this.transformer.graphInfo();
      const captureMs = graphs.reduce((sum, g) => sum + g.captureMs, 0) - capturedBefore;
      const graphPoolBytes = graphs.reduce((sum, g) => sum + g.poolBytes, 0);
      const graphBytes = graphs.reduce((sum, g) => sum + g.poolBytes + g.staticBytes, 0);
      trace?.('latents_final', latents);

      progress({ stage: 'decode', step: steps, steps });
      const vaeConfig = this.vae.config;
      const decoded = scope.track(
        tidy(() => {
          const unpacked = unpackLatents(latents, latent.height, latent.width);
          // (latents / scaling_factor) + shift_factor, as float32 scalars like torch's wrapped numbers.
          const scaled = ops.div(unpacked, Tensor.full([1], vaeConfig.scaling_factor, { device: this.device }));
          const shifted = vaeConfig.shift_factor === null ? scaled : ops.add(scaled, Tensor.full([1], vaeConfig.shift_factor, { device: this.device }));
          return this.vae.decode(shifted.dtype === this.dtype ? shifted : shifted.to({ dtype: this.dtype }));
        }),
      );
      trace?.('image_decoded', decoded);
      const afterDecode = clock.mark();
      const pixels = imagesToUint8(decoded);
      const imageHeight = decoded.shape[2];
      const imageWidth = decoded.shape[3];
      traceHost('image_uint8', pixels, [batch, imageHeight, imageWidth, 3]);
      const afterPost = clock.mark();

      const plane = imageHeight * imageWidth * 3;
      const promptsList = promptList(options.prompt, 'prompt');
      const images = Array.from({ length: batch }, (_, b) => {
        const metadata: Record<string, string> = {
          Software: 'fluxlab',
          'fluxlab:prompt': promptsList[Math.floor(b / n)],
          'fluxlab:model': this.weightsDescription,
          'fluxlab:steps': String(steps),
          'fluxlab:guidance': String(guidanceScale),
          'fluxlab:random-weights': String(this.randomWeights),
        };
        if (seed !== undefined) metadata['fluxlab:seed'] = String(seed);
        return new FluxImage(imageWidth, imageHeight, pixels.slice(b * plane, (b + 1) * plane), metadata);
      });

      const stepMs = stepMarks.slice(1).map((mark, i) => clock.elapsedMs(stepMarks[i], mark));
      const timings: GenerationTimings = {
        totalMs: performance.now() - start,
        captureMs,
        encodePromptMs: clock.elapsedMs(0, afterEncode),
        prepareLatentsMs: clock.elapsedMs(afterEncode, afterLatents),
        denoiseMs: clock.elapsedMs(afterLatents, stepMarks[stepMarks.length - 1]),
        stepMs,
        decodeMs: clock.elapsedMs(stepMarks[stepMarks.length - 1], afterDecode),
        postprocessMs: clock.elapsedMs(afterDecode, afterPost),
      };
      scope.dispose();
      this.offloader?.offloadAll();
      progress({ stage: 'done', step: steps, steps });
      const stats = onDevice ? memory.stats(this.device) : undefined;
      const host = memory.hostStats();
      const graphFigures = { graphBytes, graphPoolBytes, pinnedHostBytes: host.pinned };
      const usage: GenerationMemory = stats
        ? { device: this.device, peakAllocatedBytes: stats.peakAllocated, allocatedBytes: stats.allocated, reservedBytes: stats.reserved, byComponent: { ...stats.byTag }, ...graphFigures }
        : { device: this.device, peakAllocatedBytes: host.peakAllocated, allocatedBytes: host.allocated, byComponent: { ...host.byTag }, ...graphFigures };
      return new FluxGenerationResult(images, imageWidth, imageHeight, seed, timings, usage, this.randomWeights, warnings, this.weightsDescription);
    } finally {
      scope.dispose();
      clock.dispose();
      // diffusers' maybe_free_model_hooks: also after an error or an interrupt, the weights go back to host memory.
      this.offloader?.offloadAll();
    }
  }

  /** Frees every component's weights (with offloading: the host copies too). */
  dispose(): void {
    const offloader = this.offloader;
    this.offloader = undefined;
    offloader?.dispose();
    this.textEncoder.dispose();
    this.textEncoder2.dispose();
    this.transformer.dispose();
    this.vae.dispose();
  }
}
