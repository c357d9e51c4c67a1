// Random weights at a model's real shapes, for benchmarks and tests without a checkpoint (FLUX.1-dev's weights
// cannot be downloaded here). Each parameter is drawn from its own seed (the source's seed and the parameter's key),
// so a model gets the same numbers whatever order or subset of layers it loads. Scales follow the models' own
// initialisation (nn.ts, t5.ts, clip.ts): Linear weights N(0, 1/fan_in), biases N(0, 0.02), norm weights 1 and
// biases 0, embeddings as transformers initialises them, so activations stay O(1) and finite in bfloat16.
// The numbers come from the addon's counter-based generator (Tensor.randn with a seed: Philox, drawn where the
// model lives, so gigabytes need no host work; not torch's sequence). The CPU draws the same bits as CUDA, so a CPU
// model and a CUDA model of one seed hold the same weights (up to the last ulps of log/sin/cos).
import { Tensor, type Device } from '@fluxlab/native';
import type { FloatDType, ParameterInit, WeightSource } from './nn';

export interface RandomWeightsOptions {
  /** Base seed (default 0). */
  seed?: number;
}

/** 64-bit FNV-1a of the text, folded with the seed into 53 bits (a safe integer seed per parameter). */
export function parameterSeed(seed: number, key: string): number {
  let h = 0xcbf29ce484222325n ^ BigInt(seed);
  for (const byte of Buffer.from(key, 'utf8')) h = BigInt.asUintN(64, (h ^ BigInt(byte)) * 0x100000001b3n);
  return Number(h >> 11n);
}

export class RandomWeights implements WeightSource {
  readonly random = true;
  readonly seed: number;
  private readonly drawn = new Set<string>();

  constructor(options: RandomWeightsOptions = {}) {
    this.seed = options.seed ?? 0;
    if (!Number.isSafeInteger(this.seed) || this.seed < 0) throw new Error(`random weights: seed must be a non-negative integer, got ${String(options.seed)}`);
  }

  get description(): string {
    return `RANDOM WEIGHTS (seed ${this.seed})`;
  }

  /** Every parameter exists; checkpoint-only entries (bitsandbytes quant states) do not. */
  has(key: string): boolean {
    return !key.includes('.quant_state.') && /\.(weight|bias)$/.test(key);
  }

  names(): string[] {
    return [...this.drawn];
  }

  /** FLUX.1-dev's checkpoints store every tensor in bfloat16: float32 layers over them keep bf16 values (nn.ts). */
  storedDtype(key: string): FloatDType | undefined {
    return this.has(key) ? 'bfloat16' : undefined;
  }

  float(component: string, key: string, shape: readonly number[], dtype: FloatDType, device: Device, init: ParameterInit): Tensor {
    this.drawn.add(key);
    if (init === 'ones' || init === 'zeros') return Tensor.full([...shape], init === 'ones' ? 1 : 0, { device, dtype });
    return Tensor.randn([...shape], { device, dtype, seed: parameterSeed(this.seed, `${component}/${key}`), std: init.normal });
  }

  raw(component: string, key: string): Tensor {
    throw new Error(`${component}: random weights have no stored tensor '${key}'`);
  }

  bytes(component: string, key: string): Buffer {
    throw new Error(`${component}: random weights have no stored tensor '${key}'`);
  }
}
