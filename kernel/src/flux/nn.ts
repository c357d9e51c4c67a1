// Building blocks shared by the networks: weight loading by checkpoint key (shape- and dtype-checked against the
// config, read by range straight onto the target device), and the torch.nn layers they use, named and laid out as
// the checkpoints store them. Every loaded tensor belongs to the component's Scope, so dispose() frees a model.
import { NF4Tensor, Scope, Tensor, dtypeFromSafetensors, memory, ops, resolveDevice, tidy, type Device } from '@fluxlab/native';
import { Checkpoint } from './checkpoint';

/** What a Linear fuses into its GEMM (ops.linear's options): out = residual + gate ⊙ act(x·Wᵀ + b). */
export interface LinearEpilogue {
  activation?: 'gelu_tanh';
  /** [B, 1, N] or [B, N]: one row of gates per batch element. */
  gate?: Tensor;
  /** The output's shape. */
  residual?: Tensor;
}

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

/** How a random weight source draws a parameter (a checkpoint ignores it). */
export type ParameterInit = { normal: number } | 'ones' | 'zeros';

/**
 * Where a component's tensors come from: a checkpoint on disk, or random numbers at the config's shapes (for
 * benchmarks without weights). Keys are checkpoint keys (prefix included).
 */
export interface WeightSource {
  /** The checkpoint directory, or a description of the random weights (for messages). */
  readonly description: string;
  /** True for random weights: nothing on disk. */
  readonly random: boolean;
  has(key: string): boolean;
  /** Every key the source holds (for a random source: the keys drawn so far). */
  names(): string[];
  /** The float tensor `key`, of exactly `shape`, as `dtype` on `device`; `init` says how a random source draws it. */
  float(component: string, key: string, shape: readonly number[], dtype: FloatDType, device: Device, init: ParameterInit): Tensor;
  /**
   * The float dtype `key` is stored in (undefined when absent or not a float tensor). A random source answers
   * bfloat16: it stands in for FLUX.1-dev, whose checkpoints store every tensor so.
   */
  storedDtype(key: string): FloatDType | undefined;
  /** A tensor in its stored dtype (the parts of a pre-quantized NF4 weight). */
  raw(component: string, key: string, device: Device): Tensor;
  /** The bytes of a uint8 tensor (bitsandbytes' quant_state JSON). */
  bytes(component: string, key: string): Buffer;
}

/** A component's safetensors checkpoint as a weight source: read by range straight onto the device. */
export class CheckpointWeights implements WeightSource {
  readonly random = false;

  constructor(readonly checkpoint: Checkpoint) {}

  get description(): string {
    return this.checkpoint.dir;
  }

  has(key: string): boolean {
    return this.checkpoint.has(key);
  }

  names(): string[] {
    return this.checkpoint.names();
  }

  float(component: string, key: string, shape: readonly number[], dtype: FloatDType, device: Device): Tensor {
    if (!this.checkpoint.has(key)) {
      throw new Error(`${component}: checkpoint ${this.checkpoint.dir} has no tensor '${key}' (the config implies it)`);
    }
    const { file, entry } = this.checkpoint.get(key);
    const stored = dtypeFromSafetensors(entry.dtype);
    if (stored !== 'float32' && stored !== 'bfloat16' && stored !== 'float16') {
      throw new Error(`${component}: ${file.path}: tensor '${key}' is stored as ${entry.dtype}, expected a float tensor`);
    }
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new Error(
        `${component}: ${file.path}: tensor '${key}' has shape [${entry.shape.join(', ')}] but the config implies [${shape.join(', ')}]`,
      );
    }
    return Tensor.fromFile(file.path, entry.offset, [...shape], stored, { device, dtype });
  }

  storedDtype(key: string): FloatDType | undefined {
    if (!this.checkpoint.has(key)) return undefined;
    const stored = dtypeFromSafetensors(this.checkpoint.get(key).entry.dtype);
    return isFloatDTypeName(stored) ? stored : undefined;
  }

  raw(component: string, key: string, device: Device): Tensor {
    const { file, entry } = this.checkpoint.get(key);
    const stored = dtypeFromSafetensors(entry.dtype);
    if (stored === undefined) throw new Error(`${component}: ${file.path}: tensor '${key}' has unsupported dtype ${entry.dtype}`);
    return Tensor.fromFile(file.path, entry.offset, [...entry.shape], stored, { device });
  }

  bytes(component: string, key: string): Buffer {
    const { file, entry } = this.checkpoint.get(key);
    return file.readBytes(entry.name);
  }

  /** Where `key` is stored, for messages. */
  where(key: string): string {
    return this.checkpoint.has(key) ? this.checkpoint.get(key).file.path : this.checkpoint.dir;
  }
}

/** Loads one component's tensors by checkpoint key into its Scope. */
export class WeightLoader {
  readonly scope = new Scope();
  /** Every Linear loaded, by module name (checkpoint key without '.weight'). */
  readonly linears = new Map<string, Linear>();
  private readonly used = new Set<string>();

  /** The options, with 'cuda' resolved to 'cuda:N' so the device compares equal to the tensors' device. */
  readonly options: ComponentLoadOptions;

  constructor(
    readonly component: string,
    readonly source: WeightSource,
    options: ComponentLoadOptions,
    /** Prefix of every key (e.g. 'text_model.' for CLIP checkpoints saved by transformers 4). */
    readonly prefix = '',
  ) {
    this.options = { ...options, device: resolveDevice(options.device) };
  }

  get device(): Device {
    return this.options.device;
  }

  get dtype(): FloatDType {
    return this.options.dtype;
  }

  has(name: string): boolean {
    return this.source.has(this.prefix + name);
  }

  /**
   * A float parameter of exactly `shape`, converted to `dtype` (default the model dtype) on the model device.
   * `init` is how random weights draw it (default: normal with std 1/sqrt(last dim), a fan-in init).
   */
  tensor(name: string, shape: readonly number[], dtype: FloatDType = this.options.dtype, init?: ParameterInit): Tensor {
    const key = this.prefix + name;
    this.used.add(key);
    const how = init ?? { normal: 1 / Math.sqrt(shape[shape.length - 1]) };
    return this.track(() => this.source.float(this.component, key, shape, dtype, this.device, how));
  }

  /** A raw tensor of any stored dtype (quant-state parts), kept in its stored dtype. */
  private raw(key: string): Tensor {
    this.used.add(key);
    return this.track(() => this.source.raw(this.component, key, this.device));
  }

  private track<T extends Tensor>(make: () => T): T {
    return this.scope.track(memory.withTag(this.component, make));
  }

  /**
   * torch.nn.Linear(inFeatures, outFeatures) at `name`, dense or NF4 as the plan says. `initStd` is the standard
   * deviation random weights draw it with (default 1/sqrt(inFeatures)).
   */
  linear(name: string, inFeatures: number, outFeatures: number, opts: { bias?: boolean; dtype?: FloatDType; initStd?: number } = {}): Linear {
    const layer = this.buildLinear(name, inFeatures, outFeatures, opts);
    this.linears.set(name, layer);
    return layer;
  }

  private buildLinear(name: string, inFeatures: number, outFeatures: number, opts: { bias?: boolean; dtype?: FloatDType; initStd?: number }): Linear {
    const plan = this.options.nf4;
    const weightInit: ParameterInit = { normal: opts.initStd ?? 1 / Math.sqrt(inFeatures) };
    // Trained biases are small next to the activations; random ones are drawn so, nonzero, to exercise bias paths.
    const bias = opts.bias === false ? undefined : this.tensor(`${name}.bias`, [outFeatures], opts.dtype, { normal: 0.02 });
    const stateKey = `${this.prefix}${name}.weight.quant_state.bitsandbytes__nf4`;
    if (this.source.has(stateKey)) {
      if (plan === undefined || plan.quantizeOnLoad) {
        throw new Error(`${this.component}: ${name}.weight is stored in NF4 but the config has no bitsandbytes quantization_config`);
      }
      return new Linear(this.nf4Weight(name, inFeatures, outFeatures), bias, plan.computeDtype);
    }
    if (plan !== undefined && !isSkippedModule(name, plan.skipModules)) {
      if (!plan.quantizeOnLoad) {
        throw new Error(`${this.component}: ${name}.weight is dense but the checkpoint is bitsandbytes-quantized (no quant_state)`);
      }
      const dense = this.tensor(`${name}.weight`, [outFeatures, inFeatures], this.dtype, weightInit);
      const quantized = this.track(() => ops.nf4Quantize(dense, { doubleQuant: plan.doubleQuant }));
      dense.dispose();
      return new Linear(quantized, bias, plan.computeDtype);
    }
    const dtype = opts.dtype ?? this.dtype;
    if (dtype === 'float32' && this.source.storedDtype(`${this.prefix}${name}.weight`) === 'bfloat16') {
      // A float32 layer over bf16 values (FLUX.1-dev's T5 wo, which transformers upcasts): the weight stays bf16 and
      // the product is computed in float32 on it (ops.linear widens exactly): the same numbers at half the memory.
      return new Linear(this.tensor(`${name}.weight`, [outFeatures, inFeatures], 'bfloat16', weightInit), bias, 'float32');
    }
    return new Linear(this.tensor(`${name}.weight`, [outFeatures, inFeatures], dtype, weightInit), bias);
  }

  private nf4Weight(name: string, inFeatures: number, outFeatures: number): NF4Tensor {
    const key = `${this.prefix}${name}.weight`;
    const stateKey = `${key}.quant_state.bitsandbytes__nf4`;
    const where = this.source.description;
    const stateBytes = this.source.bytes(this.component, stateKey);
    let state: { shape?: number[]; quant_type?: string };
    try {
      state = JSON.parse(stateBytes.toString('utf8'));
    } catch (err) {
      throw new Error(`${this.component}: ${where}: tensor '${stateKey}' is not valid quant_state JSON (${(err as Error).message})`);
    }
    if (state.quant_type !== 'nf4') {
      throw new Error(`${this.component}: ${where}: '${key}' is quantized as ${String(state.quant_type)}, only nf4 is supported`);
    }
    if (!Array.isArray(state.shape) || state.shape.length !== 2 || state.shape[0] !== outFeatures || state.shape[1] !== inFeatures) {
      throw new Error(
        `${this.component}: ${where}: '${key}' quant_state shape ${JSON.stringify(state.shape)} but the config implies [${outFeatures}, ${inFeatures}]`,
      );
    }
    const part = (suffix: string): Tensor | undefined => (this.source.has(`${key}${suffix}`) ? this.raw(`${key}${suffix}`) : undefined);
    const parts = {
      weight: this.raw(key),
      absmax: part('.absmax'),
      quantMap: part('.quant_map'),
      nestedAbsmax: part('.nested_absmax'),
      nestedQuantMap: part('.nested_quant_map'),
    };
    this.used.add(stateKey);
    try {
      return this.track(() =>
        NF4Tensor.fromBitsandbytes({
          weight: parts.weight,
          absmax: parts.absmax as Tensor,
          quantMap: parts.quantMap as Tensor,
          nestedAbsmax: parts.nestedAbsmax,
          nestedQuantMap: parts.nestedQuantMap,
          quantState: stateBytes,
        }),
      );
    } catch (err) {
      throw new Error(`${this.component}: ${where}: '${key}': ${(err as Error).message}`);
    } finally {
      for (const t of Object.values(parts)) t?.dispose();
    }
  }

  layerNorm(name: string, dim: number, eps: number): LayerNorm {
    return new LayerNorm(this.tensor(`${name}.weight`, [dim], this.dtype, 'ones'), this.tensor(`${name}.bias`, [dim], this.dtype, 'zeros'), eps);
  }

  /** RMS norm weights stay in the model dtype, as diffusers' RMSNorm and T5LayerNorm keep them. */
  rmsNorm(name: string, dim: number, eps: number): RMSNorm {
    return new RMSNorm(this.tensor(`${name}.weight`, [dim], this.dtype, 'ones'), eps);
  }

  groupNorm(name: string, groups: number, channels: number, eps: number): GroupNorm {
    return new GroupNorm(this.tensor(`${name}.weight`, [channels], this.dtype, 'ones'), this.tensor(`${name}.bias`, [channels], this.dtype, 'zeros'), groups, eps);
  }

  conv2d(name: string, inChannels: number, outChannels: number, kernel: number, padding: number): Conv2d {
    return new Conv2d(
      this.tensor(`${name}.weight`, [outChannels, inChannels, kernel, kernel], this.dtype, { normal: 1 / Math.sqrt(inChannels * kernel * kernel) }),
      this.tensor(`${name}.bias`, [outChannels], this.dtype, { normal: 0.02 }),
      padding,
    );
  }

  /** An embedding table [count, dim]; random weights draw it with `initStd` (transformers' per-model init). */
  embedding(name: string, count: number, dim: number, initStd: number): Tensor {
    return this.tensor(`${name}.weight`, [count, dim], this.dtype, { normal: initStd });
  }

  /**
   * Replaces the loaded Linears `names` (the same input features) by one whose weight stacks theirs by output rows,
   * [ΣNᵢ, K] (biases likewise), so that one GEMM yields their outputs side by side (fused QKV: [B, L, 3·D]). Exact:
   * the same values in the same order; NF4 weights keep their codes and absmax (NF4Tensor.concatRows, double-quant
   * absmax decoded to the float32 values the dequantization uses). Returns undefined, leaving the layers as they
   * are, where the stack is not exact or not possible: the layers differ in storage, compute dtype or bias, or NF4
   * with K not a multiple of the blocksize (the tiny test models only). linearLayers() then lists the stack as the
   * names' common prefix followed by their rests in braces, e.g. `blocks.0.attn.{to_q,to_k,to_v}`.
   */
  stackRows(names: readonly string[]): Linear | undefined {
    if (names.length === 0) throw new Error(`${this.component}: stackRows: no layers given`);
    const layers = names.map((name) => {
      const layer = this.linears.get(name);
      if (layer === undefined) throw new Error(`${this.component}: stackRows: no Linear '${name}' was loaded`);
      return layer;
    });
    const [first] = layers;
    const bad = layers.find((l) => l.inFeatures !== first.inFeatures);
    if (bad) throw new Error(`${this.component}: stackRows: [${names.join(', ')}] differ in input features (${first.inFeatures} and ${bad.inFeatures})`);
    const nf4 = first.weight instanceof NF4Tensor;
    const alike = layers.every(
      (l) =>
        l.weight instanceof NF4Tensor === nf4 &&
        l.weight.dtype === first.weight.dtype &&
        l.computeDtype === first.computeDtype &&
        l.bias?.dtype === first.bias?.dtype,
    );
    if (!alike || (nf4 && layers.some((l) => l.inFeatures % (l.weight as NF4Tensor).blocksize !== 0))) return undefined;
    const weight = this.track(() => (nf4 ? NF4Tensor.concatRows(layers.map((l) => l.weight as NF4Tensor)) : ops.concat(layers.map((l) => l.weight), 0)));
    const bias = first.bias ? this.track(() => ops.concat(layers.map((l) => l.bias!), 0)) : undefined;
    const stacked = new Linear(weight, bias, first.computeDtype);
    for (const l of layers) {
      l.weight.dispose();
      l.bias?.dispose();
    }
    for (const name of names) this.linears.delete(name);
    const common = names.reduce((prefix, name) => {
      let n = 0;
      while (n < prefix.length && n < name.length && prefix[n] === name[n]) n++;
      return prefix.slice(0, n);
    });
    const cut = common.lastIndexOf('.') + 1;
    this.linears.set(`${names[0].slice(0, cut)}{${names.map((n) => n.slice(cut)).join(',')}}`, stacked);
    return stacked;
  }

  /** Checkpoint keys under `prefix` that no layer loaded (e.g. the VAE encoder when only decoding). */
  unusedKeys(): string[] {
    return this.source.names().filter((n) => n.startsWith(this.prefix) && !this.used.has(n));
  }

  /** Frees everything loaded so far (after a failed load). */
  dispose(): void {
    this.scope.dispose();
  }
}

/**
 * torch.nn.Linear: y = x·Wᵀ + b. `computeDtype`, where set, is the dtype x is cast to and the product computed in,
 * independent of how the weight is stored: NF4 weights (bitsandbytes' Linear4bit compute dtype), or 'float32' over a
 * bfloat16 weight, a float32 layer whose values are bf16 (WeightLoader.linear keeps such checkpoint tensors as stored).
 */
export class Linear {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor | undefined,
    readonly computeDtype?: FloatDType,
  ) {}

  /** The dtype the product is computed in (and a dense layer returns): computeDtype, else the weight's. */
  get dtype(): FloatDType {
    return this.computeDtype ?? (this.weight.dtype as FloatDType);
  }

  get inFeatures(): number {
    return this.weight.shape[1];
  }

  get outFeatures(): number {
    return this.weight.shape[0];
  }

  get quantized(): boolean {
    return this.weight instanceof NF4Tensor;
  }

  /**
   * y = x·Wᵀ + b, with an optional fused epilogue (activation, gate, residual). x may be given as parts along its
   * last dim (ops.linear: the product with their concatenation, which the CUDA GEMM reads in place).
   */
  forward(x: Tensor | Tensor[], epilogue?: LinearEpilogue): Tensor {
    if (Array.isArray(x)) {
      const dtype = x[0].dtype;
      const fused = x.every((p) => p.dtype === dtype) && (this.computeDtype === undefined || this.computeDtype === dtype) &&
        [epilogue?.residual, epilogue?.gate].every((t) => t === undefined || t.dtype === dtype);
      if (fused) return ops.linear(x, this.weight, this.bias, epilogue);
      return tidy(() => this.forward(ops.concat(x, -1), epilogue));
    }
    if (this.computeDtype !== undefined && x.dtype !== this.computeDtype) {
      // bitsandbytes computes in its compute dtype and casts back; the epilogue then runs in x's dtype.
      return tidy(() => {
        const y = ops.linear(x.to({ dtype: this.computeDtype }), this.weight, this.bias);
        return epilogueOf(y.dtype === x.dtype ? y : y.to({ dtype: x.dtype }), epilogue);
      });
    }
    // The fused epilogue computes in x's dtype; a float32 residual or gate beside half-precision x (T5 under
    // bitsandbytes, whose float32 wo makes the residual stream float32) promotes to float32, as in torch.
    const mixed = (t: Tensor | undefined): boolean => t !== undefined && t.dtype !== x.dtype;
    if (epilogue !== undefined && (mixed(epilogue.residual) || mixed(epilogue.gate))) {
      return tidy(() => epilogueOf(ops.linear(x, this.weight, this.bias), epilogue));
    }
    return ops.linear(x, this.weight, this.bias, epilogue);
  }
}

/**
 * Independent layers' forwards, `layer.forward(x, epilogue)` each. together: through ops.linearGroup (two NF4
 * products of the same shape share one launch on sm_90), where every layer computes in its x's dtype and the
 * epilogue's tensors share it; otherwise, or when not together (weights streamed by group offload, whose hooks
 * watch each layer's own forward), one forward after another.
 */
export function linearGroup(calls: readonly (readonly [Linear, Tensor, LinearEpilogue?])[], together: boolean): Tensor[] {
  const plain = calls.every(
    ([layer, x, epilogue]) =>
      (layer.computeDtype === undefined || layer.computeDtype === x.dtype) &&
      [epilogue?.gate, epilogue?.residual].every((t) => t === undefined || t.dtype === x.dtype),
  );
  if (!together || !plain) return calls.map(([layer, x, epilogue]) => layer.forward(x, epilogue));
  return ops.linearGroup(calls.map(([layer, x, epilogue]) => ({ x, weight: layer.weight, bias: layer.bias, ...epilogue })));
}

/**
 * The layers' outputs for one x side by side, [..., ΣNᵢ], each as its forward computes it (ops.linearConcat: one
 * skinny launch for Flux's adaptive-norm projections on CUDA; layer by layer where a compute dtype converts x).
 */
export function linearConcat(layers: readonly Linear[], x: Tensor): Tensor {
  if (layers.every((layer) => layer.computeDtype === undefined || layer.computeDtype === x.dtype)) return ops.linearConcat(x, layers);
  return tidy(() => ops.concat(layers.map((layer) => layer.forward(x)), -1));
}

/** The epilogue applied to an existing GEMM result (a GEMM in another dtype than the epilogue's tensors). */
function epilogueOf(y: Tensor, epilogue: LinearEpilogue | undefined): Tensor {
  if (epilogue === undefined) return y;
  let out = y;
  if (epilogue.activation === 'gelu_tanh') out = ops.gelu(out, 'tanh');
  if (epilogue.gate) out = ops.mul(epilogue.gate, out);
  if (epilogue.residual) out = ops.add(epilogue.residual, out);
  return out;
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

  /** `silu` applies SiLU to the normalised output in the same pass (diffusers' norm → nonlinearity pairs). */
  forward(x: Tensor, opts: { silu?: boolean } = {}): Tensor {
    return ops.groupNorm(x, this.groups, this.weight, this.bias, this.eps, opts);
  }
}

export class Conv2d {
  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor,
    readonly padding: number,
  ) {}

  /**
   * `upsample: 'nearest2x'` convolves the 2x nearest upsampling of x (diffusers' Upsample2D) without storing it;
   * `norm` convolves norm.forward(x, { silu }) (diffusers' norm → SiLU → conv), without storing the normalised x
   * on CUDA: at the VAE's 1024² level that tensor is 512 MiB of the decoder's peak.
   */
  forward(x: Tensor, opts: { upsample?: 'nearest2x'; norm?: GroupNorm; silu?: boolean } = {}): Tensor {
    const { norm } = opts;
    return ops.conv2d(x, this.weight, this.bias, {
      padding: this.padding,
      upsample: opts.upsample,
      norm: norm && { groups: norm.groups, weight: norm.weight, bias: norm.bias, eps: norm.eps, silu: opts.silu },
    });
  }
}

/** [B, L, H·D] → [B, L, H, D]: a view, the layout ops.sdpa takes with `layout: 'BLHD'` (no head permutes). */
export function heads(x: Tensor, count: number): Tensor {
  const [b, l, hd] = x.shape;
  return x.reshape([b, l, count, hd / count]);
}

/** [B, L, H, D] → [B, L, H·D] (a view). */
export function mergeHeads(x: Tensor): Tensor {
  const [b, l, h, d] = x.shape;
  return x.reshape([b, l, h * d]);
}
