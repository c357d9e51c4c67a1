// `fluxlab generate`: one FluxPipeline run from the command line (the contract of issue 4; keep it stable).
//
//   fluxlab generate [MODEL] --prompt TEXT [--prompt TEXT …] [--prompt2 TEXT …] --height H --width W --steps N
//     --guidance G --max-sequence-length L [--seed S | --latents FILE.safetensors:TENSOR] [--device cpu|cuda]
//     [--dtype float32|bfloat16|float16] [--quantize nf4 [--double-quant] [--components transformer,text_encoder_2]
//     [--compute-dtype D]] [--num-images-per-prompt N] [--dump OUT.safetensors] [--output OUT.png]
//
// MODEL is a diffusers directory or a hub repo id in the local cache; without it the embedded tiny pipeline (random
// weights) runs. Several --prompt make a batch. --output writes OUT.png for one image and OUT.0.png, OUT.1.png, …
// for several (the golden files' <case>.<i>.png naming). --dump writes the intermediate tensors under the golden
// files' names: ids int32, image_uint8 uint8 [B, H, W, 3], everything else float32.
import { Tensor, dtypeFromSafetensors, type Device } from '@fluxlab/native';
import { basename, dirname, extname, join } from 'node:path';
import { FluxPipeline, GenerateOptions } from '../flux/pipeline';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../flux/safetensors';
import { dumpTensor } from '../flux/dump';
import { QuantizationOptions } from '../flux/quantization';
import { FloatDType } from '../flux/nn';
import { UsageError, integerOption } from './command.js';

export const usage = `usage: fluxlab generate [MODEL] --prompt TEXT [--prompt TEXT ...] [--prompt2 TEXT ...]
       [--height H] [--width W] [--steps N] [--guidance G] [--max-sequence-length L]
       [--seed S | --latents FILE.safetensors:TENSOR] [--num-images-per-prompt N]
       [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16|float16]
       [--quantize nf4 [--double-quant] [--components transformer,text_encoder_2] [--compute-dtype DTYPE]]
       [--dump OUT.safetensors] [--output OUT.png]

MODEL: a diffusers FLUX.1 directory or a Hugging Face repo id in the local cache
(HF_HUB_CACHE / HF_HOME); omitted: the embedded tiny pipeline with RANDOM weights.
Defaults as diffusers: 1024x1024 (128 x VAE scale factor), 28 steps, guidance 3.5, 512 T5 tokens.
--output with several images writes OUT.0.png, OUT.1.png, ...`;

export interface GenerateArgs {
  model?: string;
  prompts: string[];
  prompts2: string[];
  height?: number;
  width?: number;
  steps?: number;
  guidance?: number;
  maxSequenceLength?: number;
  seed?: number;
  latents?: { file: string; tensor: string };
  numImagesPerPrompt?: number;
  device: Device;
  dtype: FloatDType;
  quantization?: QuantizationOptions;
  dump?: string;
  output?: string;
  help: boolean;
}

const VALUE_OPTIONS = new Set([
  '--prompt',
  '--prompt2',
  '--height',
  '--width',
  '--steps',
  '--guidance',
  '--max-sequence-length',
  '--seed',
  '--latents',
  '--num-images-per-prompt',
  '--device',
  '--dtype',
  '--quantize',
  '--components',
  '--compute-dtype',
  '--dump',
  '--output',
]);
const FLAG_OPTIONS = new Set(['--double-quant', '--help', '-h']);

function float(option: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${option} expects a number, got '${value}'`);
  return n;
}

/** Parses the arguments after `generate`. Throws UsageError on malformed input. */
export function parseGenerateArgs(argv: readonly string[]): GenerateArgs {
  const args: GenerateArgs = { prompts: [], prompts2: [], device: 'cpu', dtype: 'float32', help: false };
  let quantize: string | undefined;
  let doubleQuant = false;
  let components: string[] | undefined;
  let computeDtype: string | undefined;
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    if (eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (FLAG_OPTIONS.has(arg)) {
      if (value !== undefined) throw new UsageError(`${arg} takes no value`);
      if (arg === '--double-quant') doubleQuant = true;
      else args.help = true;
      continue;
    }
    if (!VALUE_OPTIONS.has(arg)) {
      if (arg.startsWith('-') && arg !== '-') throw new UsageError(`unknown option ${arg}`);
      positional.push(arg);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--prompt':
        args.prompts.push(value);
        break;
      case '--prompt2':
        args.prompts2.push(value);
        break;
      case '--height':
        args.height = integerOption(arg, value, 1);
        break;
      case '--width':
        args.width = integerOption(arg, value, 1);
        break;
      case '--steps':
        args.steps = integerOption(arg, value, 1);
        break;
      case '--guidance':
        args.guidance = float(arg, value);
        break;
      case '--max-sequence-length':
        args.maxSequenceLength = integerOption(arg, value, 1);
        break;
      case '--seed':
        args.seed = integerOption(arg, value, 0);
        break;
      case '--latents': {
        const colon = value.lastIndexOf(':');
        if (colon <= 0 || colon === value.length - 1) throw new UsageError(`--latents expects FILE.safetensors:TENSOR, got '${value}'`);
        args.latents = { file: value.slice(0, colon), tensor: value.slice(colon + 1) };
        break;
      }
      case '--num-images-per-prompt':
        args.numImagesPerPrompt = integerOption(arg, value, 1);
        break;
      case '--device':
        if (value !== 'cpu' && value !== 'cuda' && !/^cuda:\d+$/.test(value)) throw new UsageError(`--device expects cpu, cuda or cuda:N, got '${value}'`);
        args.device = value as Device;
        break;
      case '--dtype':
        if (value !== 'float32' && value !== 'bfloat16' && value !== 'float16') throw new UsageError(`--dtype expects float32, bfloat16 or float16, got '${value}'`);
        args.dtype = value;
        break;
      case '--quantize':
        quantize = value;
        break;
      case '--components':
        components = value.split(',').map((c) => c.trim()).filter((c) => c !== '');
        break;
      case '--compute-dtype':
        computeDtype = value;
        break;
      case '--dump':
        args.dump = value;
        break;
      case '--output':
        args.output = value;
        break;
    }
  }
  if (args.help) return args;
  if (positional.length > 1) throw new UsageError(`expected one MODEL, got ${positional.length}: ${positional.join(' ')}`);
  args.model = positional[0];
  if (args.prompts.length === 0) throw new UsageError('--prompt is required');
  if (args.prompts2.length > 0 && args.prompts2.length !== args.prompts.length) {
    throw new UsageError(`--prompt2 given ${args.prompts2.length} times for ${args.prompts.length} --prompt`);
  }
  if (args.seed !== undefined && args.latents !== undefined) throw new UsageError('give either --seed or --latents, not both');
  if (quantize === undefined) {
    if (doubleQuant || components !== undefined || computeDtype !== undefined) throw new UsageError('--double-quant, --components and --compute-dtype need --quantize');
  } else {
    // The pipeline validates the backend name and components, with the library's messages.
    args.quantization = {
      backend: quantize as QuantizationOptions['backend'],
      doubleQuant,
      components,
      computeDtype: computeDtype as FloatDType | undefined,
    };
  }
  return args;
}

/** OUT.png for one image; OUT.0.png, OUT.1.png, … for several. */
export function outputPaths(output: string, count: number): string[] {
  if (count === 1) return [output];
  const ext = extname(output) || '.png';
  const stem = basename(output, extname(output));
  return Array.from({ length: count }, (_, i) => join(dirname(output), `${stem}.${i}${ext}`));
}

function readLatents(spec: { file: string; tensor: string }, device: Device): Tensor {
  const file = SafetensorsFile.open(spec.file);
  if (!file.has(spec.tensor)) {
    throw new Error(`${spec.file}: no tensor '${spec.tensor}' (it holds ${file.names().slice(0, 12).join(', ')}${file.names().length > 12 ? ', …' : ''})`);
  }
  const entry = file.get(spec.tensor);
  const stored = dtypeFromSafetensors(entry.dtype);
  if (stored !== 'float32' && stored !== 'bfloat16' && stored !== 'float16') {
    throw new Error(`${spec.file}: tensor '${spec.tensor}' is ${entry.dtype}, latents must be a float tensor`);
  }
  return Tensor.fromFile(spec.file, entry.offset, [...entry.shape], stored, { device, dtype: 'float32' });
}

/**
 * Runs `fluxlab generate` with the arguments after `generate`; resolves to the exit status. Usage errors throw
 * UsageError and other failures throw, for the dispatcher to print (exit 2 / 1); SIGINT stops at the next step (130).
 */
export async function run(argv: string[]): Promise<number> {
  const args = parseGenerateArgs(argv);
  if (args.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const abort = new AbortController();
  const onSigint = (): void => abort.abort(new Error('interrupted (SIGINT)'));
  process.on('SIGINT', onSigint);
  let pipe: FluxPipeline | undefined;
  let latents: Tensor | undefined;
  try {
    pipe = await FluxPipeline.fromPretrained(args.model, { device: args.device, dtype: args.dtype, quantization: args.quantization });
    if (args.latents) latents = readLatents(args.latents, 'cpu');
    const dump = new Map<string, TensorToWrite>();
    const options: GenerateOptions = {
      prompt: args.prompts,
      prompt2: args.prompts2.length > 0 ? args.prompts2 : undefined,
      height: args.height,
      width: args.width,
      numInferenceSteps: args.steps,
      guidanceScale: args.guidance,
      maxSequenceLength: args.maxSequenceLength,
      numImagesPerPrompt: args.numImagesPerPrompt,
      seed: args.seed,
      latents,
      signal: abort.signal,
      progress: false,
      onProgress: (p) => {
        if (p.stage === 'denoise') process.stderr.write(`step ${p.step}/${p.steps} (${(p.elapsedMs / 1000).toFixed(1)} s)\n`);
      },
      trace: args.dump ? (name, tensor) => dump.set(name, dumpTensor(name, tensor)) : undefined,
    };
    const result = await pipe.generate(options);
    if (args.dump) writeSafetensors(args.dump, dump, { format: 'pt', generator: 'fluxlab generate' });
    if (args.output) {
      const paths = outputPaths(args.output, result.images.length);
      result.images.forEach((image, i) => image.save(paths[i]));
      process.stdout.write(`wrote ${paths.join(', ')}\n`);
    }
    process.stdout.write(`${result.summary}\n`);
    return 0;
  } catch (err) {
    if (!abort.signal.aborted) throw err;
    process.stderr.write(`fluxlab generate: ${(err as Error).message}\n`);
    return 130;
  } finally {
    process.off('SIGINT', onSigint);
    latents?.dispose();
    pipe?.dispose();
  }
}
