// Building blocks shared by the networks: weight loading by checkpoint key (shape- and dtype-checked against the
// config, read by range straight onto the target device), and the torch.nn layers they use, named and laid out as
// the checkpoints store them. Every loaded tensor belongs to the component's Scope, so dispose() frees a model.
import { NF4Tensor, Scope, Tensor, dtypeFromSafetensors, memory, ops, type Device } from '@fluxlab/native';
import { Checkpoint } from './checkpoint';

export type FloatDType = 'float32' | 'bfloat16' | 'float16';

export function isFloatDTypeName(value: unknown): value is FloatDType {
  return value === 'float32' || value === 'bfloat16' || value === 'float16';
}

/** How the Linear layers of a component are stored: dense in the model dtype, or bitsandbytes NF4. */
export interface Nf4Plan {
  /** Quantize dense checkpoint weights while loading (false: the checkpoint is pre-quantized). */
  quantizeOnLoad: boolean;
  doubleQuant: boolean;
  computeDtype: FloatDType;
  /** Module names (or their last components) bitsandbytes leaves dense, e.g. T5's `wo`. */
  skipModules: readonly string[];
}

/** bitsandbytes' replace_with_bnb_linear rule: skipped if its own name is listed, or a listed key names it or a parent. */
export function isSkippedModule(module: string, skip: readonly string[]): boolean {
  const own = module.slice(module.lastIndexOf('.') + 1);
  return skip.some((key) => key === own || key === module || module.includes(`${key}.`));
}

export interface ComponentLoadOptions {
  device: Device;
  dtype: FloatDType;
  nf4?: Nf4Plan;
}

/** Loads one component's tensors by checkpoint key into its Scope. */
export class WeightLoader {
  readonly scope = new Scope();
  /** Every Linear loaded, by module name (checkpoint key without '.weight'). */
  readonly linears = new Map<string, Linear>();
  private readonly used = new Set<string>();

  constructor(
    readonly component: string,
    readonly checkpoint: Checkpoint,
    readonly options: ComponentLoadOptions,
    /** Prefix of every key (e.g. 'text_model.' for CLIP checkpoints saved by transformers 4). */
    readonly prefix = '',
  ) {}

  get device(): Device {
    return this.options.device;
  }

  get dtype(): FloatDType {
    return this.options.dtype;
  }

  has(name: string): boolean {
    return this.checkpoint.has(this.prefix + name);
  }

  /** A float parameter of exactly `shape`, converted to `dtype` (default the model dtype) on the model device. */
  tensor(name: string, shape: readonly number[], dtype: FloatDType = this.options.dtype): Tensor {
    const key = this.prefix + name;
    if (!this.checkpoint.has(key)) {
      throw new Error(`${this.component}: checkpoint ${this.checkpoint.dir} has no tensor '${key}' (the config implies it)`);
    }
    const { file, entry } = this.checkpoint.get(key);
    const stored = dtypeFromSafetensors(entry.dtype);
    if (stored !== 'float32' && stored !== 'bfloat16' && stored !== 'float16') {
      throw new Error(`${this.component}: ${file.path}: tensor '${key}' is stored as ${entry.dtype}, expected a float tensor`);
    }
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new Error(
        `${this.component}: ${file.path}: tensor '${key}' has shape [${entry.shape.join(', ')}] but the config implies [${shape.join(', ')}]`,
      );
    }
    this.used.add(key);
    return this.track(() => Tensor.fromFile(file.path, entry.offset, [...shape], stored, { device: this.device, dtype }));
  }

  /** A raw tensor of any stored dtype (quant-state parts), kept in its stored dtype. */
  private raw(key: string): Tensor {
    const { file, entry } = this.checkpoint.get(key);
    const stored = dtypeFromSafetensors(entry.dtype);
    if (stored === undefined) throw new Error(`${this.component}: ${file.path}: tensor '${key}' has unsupported dtype ${entry.dtype}`);
    this.used.add(key);
    return this.track(() => Tensor.fromFile(file.path, entry.offset, [...entry.shape], stored, { device: this.device }));
  }

  private track<T extends Tensor>(make: () => T): T {
    return this.scope.track(memory.withTag(this.component, make));
  }

  /** torch.nn.Linear(inFeatures, outFeatures) at `name`, dense or NF4 as the plan says. */
  linear(name: string, inFeatures: number, outFeatures: number, opts: { bias?: boolean; dtype?: FloatDType } = {}): Linear {
    const layer = this.buildLinear(name, inFeatures, outFeatures, opts);
    this.linears.set(name, layer);
    return layer;
  }

  private buildLinear(name: string, inFeatures: number, outFeatures: number, opts: { bias?: boolean; dtype?: FloatDType }): Linear {
    const plan = this.options.nf4;
    const bias = opts.bias === false ? undefined : this.tensor(`${name}.bias`, [outFeatures], opts.dtype);
    const stateKey = `${this.prefix}${name}.weight.quant_state.bitsandbytes__nf4`;
    if (this.checkpoint.has(stateKey)) {
      if (plan === undefined || plan.quantizeOnLoad) {
        throw new Error(`${this.component}: ${name}.weight is stored in NF4 but the config has no bitsandbytes quantization_config`);
      }
      return new Linear(this.nf4Weight(name, inFeatures, outFeatures), bias, plan.computeDtype);
    }
    if (plan !== undefined && !isSkippedModule(name, plan.skipModules)) {
      if (!plan.quantizeOnLoad) {
        throw new Error(`${this.component}: ${name}.weight is dense but the checkpoint is bitsandbytes-quantized (no quant_state)`);
      }
      const dense = this.tensor(`${name}.weight`, [outFeatures, inFeatures]);
      const quantized = this.track(() => ops.nf4Quantize(dense, { doubleQuant: plan.doubleQuant }));
      dense.dispose();
      return new Linear(quantized, bias, plan.computeDtype);
    }
    return new Linear(this.tensor(`${name}.weight`, [outFeatures, inFeatures], opts.dtype), bias);
  }

  private nf4Weight(name: string, inFeatures: number, outFeatures: number): NF4Tensor {
    const key = `${this.prefix}${name}.weight`;
    const stateEntry = this.checkpoint.get(`${key}.quant_state.bitsandbytes__nf4`);
    let state: { shape?: number[]; quant_type?: string };
    try {
      state = JSON.parse(stateEntry.file.readBytes(stateEntry.entry.name).toString('utf8'));
    } catch (err) {
      throw new Error(`${this.component}: ${stateEntry.file.path}: tensor '${stateEntry.entry.name}' is not valid quant_state JSON (${(err as Error).message})`);
    }
    if (state.quant_type !== 'nf4') {
      throw new Error(`${this.component}: ${stateEntry.file.path}: '${key}' is quantized as ${String(state.quant_type)}, only nf4 is supported`);
    }
    if (!Array.isArray(state.shape) || state.shape.length !== 2 || state.shape[0] !== outFeatures || state.shape[1] !== inFeatures) {
      throw new Error(
        `${this.component}: ${stateEntry.file.path}: '${key}' quant_state shape ${JSON.stringify(state.shape)} but the config implies [${outFeatures}, ${inFeatures}]`,
      );
    }
    const part = (suffix: string): Tensor | undefined => (this.checkpoint.has(`${key}${suffix}`) ? this.raw(`${key}${suffix}`) : undefined);
    const parts = {
      weight: this.raw(key),
      absmax: part('.absmax'),
      quantMap: part('.quant_map'),
      nestedAbsmax: part('.nested_absmax'),
      nestedQuantMap: part('.nested_quant_map'),
    };
    this.used.add(stateEntry.entry.name);
    try {
      return this.track(() =>
        NF4Tensor.fromBitsandbytes({
          weight: parts.weight,
          absmax: parts.absmax as Tensor,
          quantMap: parts.quantMap as Tensor,
          nestedAbsmax: parts.nestedAbsmax,
          nestedQuantMap: parts.nestedQuantMap,
          quantState: stateEntry.file.readBytes(stateEntry.entry.name),
        }),
      );
    } catch (err) {
      throw new Error(`${this.component}: ${stateEntry.file.path}: '${key}': ${(err as Error).message}`);
    } finally {
      for (const t of Object.values(parts)) t?.dispose();
    }
  }

  layerNorm(name: string, dim: number, eps: number): LayerNorm {
    return new LayerNorm(this.tensor(`${name}.weight`, [dim]), this.tensor(`${name}.bias`, [dim]), eps);
  }

  /** RMS norm weights stay in the model dtype, as diffusers' RMSNorm and T5LayerNorm keep them. */
  rmsNorm(name: string, dim: number, eps: number): RMSNorm {
    return new RMSNorm(this.tensor(`${name}.weight`, [dim]), eps);
  }

  groupNorm(name: string, groups: number, channels: number, eps: number): GroupNorm {
    return new GroupNorm(this.tensor(`${name}.weight`, [channels]), this.tensor(`${name}.bias`, [channels]), groups, eps);
  }

  conv2d(name: string, inChannels: number, outChannels: number, kernel: number, padding: number): Conv2d {
    return new Conv2d(
      this.tensor(`${name}.weight`, [outChannels, inChannels, kernel, kernel]),
      this.tensor(`${name}.bias`, [outChannels]),
      padding,
    );
  }

  embedding(name: string, count: number, dim: number): Tensor {
    return this.tensor(`${name}.weight`, [count, dim]);
  }

  /** Checkpoint keys under `prefix` that no layer loaded (e.g. the VAE encoder when only decoding). */
  unusedKeys(): string[] {
    return this.checkpoint.names().filter((n) => n.startsWith(this.prefix) && !this.used.has(n));
  }

  /** Frees everything loaded so far (after a failed load). */
  dispose(): void {
    this.scope.dispose();
  }
}

/** torch.nn.Linear: y = x·Wᵀ + b; NF4 weights compute in their compute dtype as bitsandbytes' Linear4bit does. */
export class Linear {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor | undefined,
    readonly computeDtype?: FloatDType,
  ) {}

  get inFeatures(): number {
    return this.weight.shape[1];
  }

  get outFeatures(): number {
    return this.weight.shape[0];
  }

  get quantized(): boolean {
    return this.weight instanceof NF4Tensor;
  }

  forward(x: Tensor): Tensor {
    if (this.computeDtype !== undefined && x.dtype !== this.computeDtype) {
      const input = x.to({ dtype: this.computeDtype });
      try {
        const y = ops.linear(input, this.weight, this.bias);
        if (y.dtype === x.dtype) return y;
        try {
          return y.to({ dtype: x.dtype });
        } finally {
          y.dispose();
        }
      } finally {
        input.dispose();
      }
    }
    return ops.linear(x, this.weight, this.bias);
  }
}

export class LayerNorm {
  constructor(
    readonly weight: Tensor | undefined,
    readonly bias: Tensor | undefined,
    readonly eps: number,
  ) {}

  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class RMSNorm {
  constructor(
    readonly weight: Tensor,
    readonly eps: number,
  ) {}

  forward(x: Tensor): Tensor {
    return ops.rmsNorm(x, this.weight, this.eps);
  }
}

export class GroupNorm {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor,
    readonly groups: number,
    readonly eps: number,
  ) {}

  forward(x: Tensor): Tensor {
    return ops.groupNorm(x, this.groups, this.weight, this.bias, this.eps);
  }
}

export class Conv2d {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor,
    readonly padding: number,
  ) {}

  forward(x: Tensor): Tensor {
    return ops.conv2d(x, this.weight, this.bias, { padding: this.padding });
  }
}

/** [B, L, H·D] → [B, H, L, D]. */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [b, l, hd] = x.shape;
  const view = x.reshape([b, l, heads, hd / heads]);
  try {
    return ops.permute(view, [0, 2, 1, 3]);
  } finally {
    view.dispose();
  }
}

/** [B, H, L, D] → [B, L, H·D]. */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, l, d] = x.shape;
  const permuted = ops.permute(x, [0, 2, 1, 3]);
  try {
    return permuted.reshape([b, l, h * d]);
  } finally {
    permuted.dispose();
  }
}
