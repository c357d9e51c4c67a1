// diffusers' FluxTransformer2DModel (FLUX.1's MMDiT): x/context embedders, timestep + guidance + pooled-text
// conditioning, 3-axis RoPE, double-stream blocks (joint attention, text tokens first), single-stream blocks
// (attention and MLP in parallel), AdaLayerNormContinuous and the output projection. Module names are the
// checkpoint keys. Activations stay [B, L, H·D] ([B, L, H, D] views around attention: no head permutes); the
// adaptive norms are ops.layerNormModulate; each stream's q, k, v projections are one GEMM (weights stacked by rows
// at load) and ops.jointQkv turns them into the joint attention inputs (QK-norm, RoPE, no concatenation); GELU,
// gates and residuals run in the GEMMs' epilogues. The step computes everything on the device (the timestep embedding too), so compile()
// can capture it as a CUDA graph. The RoPE table is computed once per image size on the host with torch's roundings.
import { Tensor, ops, tidy, type Device, type JointQkvStream, type JointQkvTables } from '@fluxlab/native';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint';
import { FluxTransformerConfig, fluxTransformerConfig, readJson } from './config';
import { GraphCache, GraphInfo, graphCaptureUnavailableReason } from './graphs';
import { CheckpointWeights, ComponentLoadOptions, FloatDType, Linear, RMSNorm, WeightLoader, WeightSource, linearConcat, linearGroup } from './nn';

/**
 * FluxPosEmbed(theta=10000, axes_dim): for each axis, get_1d_rotary_pos_embed with float64 frequencies
 * 1/theta^(2j/d) and angles pos·freq, cos/sin repeated pairwise (repeat_interleave_real), concatenated over axes,
 * then float32. ids [S, axes] → cos, sin [S, Σaxes].
 */
export function fluxRope(ids: Float32Array, axesDims: readonly number[], theta = 10000): { cos: Float32Array; sin: Float32Array } {
  const axes = axesDims.length;
  const seq = ids.length / axes;
  if (!Number.isInteger(seq)) throw new Error(`fluxRope: ids of length ${ids.length} are not [S, ${axes}]`);
  const width = axesDims.reduce((a, b) => a + b, 0);
  const cos = new Float32Array(seq * width);
  const sin = new Float32Array(seq * width);
  let column = 0;
  for (let a = 0; a < axes; a++) {
    const dim = axesDims[a];
    const freqs = new Float64Array(dim / 2);
    for (let j = 0; j < dim / 2; j++) freqs[j] = 1.0 / theta ** ((2 * j) / dim);
    // Positions repeat (text ids are all 0, image rows/columns recur), so each distinct one is evaluated once.
    const cache = new Map<number, { c: Float32Array; s: Float32Array }>();
    for (let s = 0; s < seq; s++) {
      const pos = ids[s * axes + a];
      let entry = cache.get(pos);
      if (entry === undefined) {
        entry = { c: new Float32Array(dim), s: new Float32Array(dim) };
        for (let j = 0; j < dim / 2; j++) {
          const angle = pos * freqs[j];
          entry.c[2 * j] = entry.c[2 * j + 1] = Math.cos(angle);
          entry.s[2 * j] = entry.s[2 * j + 1] = Math.sin(angle);
        }
        cache.set(pos, entry);
      }
      const base = s * width + column;
      for (let j = 0; j < dim; j++) {
        cos[base + j] = entry.c[j];
        sin[base + j] = entry.s[j];
      }
    }
    column += dim;
  }
  return { cos, sin };
}

/** Device tensors of the rotary table for one token layout (text ids then image ids). */
export interface RotaryEmbedding {
  cos: Tensor;
  sin: Tensor;
  dispose(): void;
}

/** The modulation vector [B, count·D] as `count` [B, 1, D] pieces. */
/**
 * What a block's adaptive norm gets: silu(temb) [B, D] to project with its own linear, or that projection already
 * made (a row of FluxTransformer2DModel.modulationTable, the block's columns).
 */
type Conditioning = { siluTemb: Tensor } | { modulation: Tensor };

function modulationOf(linear: Linear, conditioning: Conditioning): Tensor {
  return 'modulation' in conditioning ? conditioning.modulation : linear.forward(conditioning.siluTemb);
}

function modulationChunks(emb: Tensor, count: number): Tensor[] {
  const [batch, width] = emb.shape;
  return ops.split(emb, width / count, 1).map((chunk) => chunk.reshape([batch, 1, width / count]));
}

/** diffusers' TimestepEmbedding / PixArtAlphaTextProjection: linear_1 → SiLU → linear_2. */
class MLPEmbedder {
  readonly linear_1: Linear;
  readonly linear_2: Linear;

  constructor(w: WeightLoader, prefix: string, inDim: number, dim: number) {
    this.linear_1 = w.linear(`${prefix}.linear_1`, inDim, dim);
    this.linear_2 = w.linear(`${prefix}.linear_2`, dim, dim);
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.linear_2.forward(ops.silu(this.linear_1.forward(x))));
  }
}

/** Rows [start, end) of the rotary table (views: the table is contiguous). */
function ropeRows(rope: RotaryEmbedding, start: number, end: number): { cos: Tensor; sin: Tensor } {
  return { cos: ops.slice(rope.cos, 0, start, end), sin: ops.slice(rope.sin, 0, start, end) };
}

/**
 * One token stream's q, k and v projections as ONE Linear whose weight stacks the checkpoint's three by output rows
 * ([3·D, D]; WeightLoader.stackRows: the same values, NF4 codes included), so a single GEMM (N = 9216 at FLUX.1's
 * width, instead of three with N = 3072 and their wave tails) yields [B, L, 3·D] for ops.jointQkv. The three layers
 * stay separate only where NF4 blocks forbid the stack (the tiny test models), and their outputs are concatenated.
 */
class QkvProjection {
  readonly stacked?: Linear;
  readonly parts?: [Linear, Linear, Linear];

  constructor(w: WeightLoader, names: [string, string, string], dim: number) {
    const parts = names.map((name) => w.linear(name, dim, dim)) as [Linear, Linear, Linear];
    this.stacked = w.stackRows(names);
    if (this.stacked === undefined) this.parts = parts;
  }

  /** x [B, L, D] → [B, L, 3·D]: q, k, v side by side. */
  forward(x: Tensor): Tensor {
    if (this.stacked) return this.stacked.forward(x);
    return tidy(() => ops.concat(this.parts!.map((p) => p.forward(x)), 2));
  }

  /**
   * The stream of ops.jointQkv for x: the projection's inputs when one GEMM of the stacked weight in x's dtype
   * computes it (the op then projects, on sm_90 straight into q, k, v), else the projection itself.
   */
  jointStream(x: Tensor, tables: JointQkvTables): JointQkvStream {
    const stacked = this.stacked;
    if (stacked && (stacked.computeDtype === undefined || stacked.computeDtype === x.dtype)) {
      return { x, weight: stacked.weight, bias: stacked.bias, ...tables };
    }
    return { qkv: this.forward(x), ...tables };
  }
}

/** FluxAttention: per-head RMS QK-norm, RoPE on the joint sequence, optional context projections (double blocks). */
class FluxAttention {
  /** to_q, to_k, to_v (checkpoint keys unchanged) stacked by rows. */
  readonly to_qkv: QkvProjection;
  readonly norm_q: RMSNorm;
  readonly norm_k: RMSNorm;
  readonly to_out?: [Linear];
  /** add_q_proj, add_k_proj, add_v_proj stacked by rows. */
  readonly add_qkv?: QkvProjection;
  readonly norm_added_q?: RMSNorm;
  readonly norm_added_k?: RMSNorm;
  readonly to_add_out?: Linear;

  constructor(
    w: WeightLoader,
    prefix: string,
    readonly heads: number,
    readonly headDim: number,
    joint: boolean,
  ) {
    const dim = heads * headDim;
    this.to_qkv = new QkvProjection(w, [`${prefix}.to_q`, `${prefix}.to_k`, `${prefix}.to_v`], dim);
    this.norm_q = w.rmsNorm(`${prefix}.norm_q`, headDim, 1e-6);
    this.norm_k = w.rmsNorm(`${prefix}.norm_k`, headDim, 1e-6);
    if (joint) {
      this.to_out = [w.linear(`${prefix}.to_out.0`, dim, dim)];
      this.add_qkv = new QkvProjection(w, [`${prefix}.add_q_proj`, `${prefix}.add_k_proj`, `${prefix}.add_v_proj`], dim);
      this.norm_added_q = w.rmsNorm(`${prefix}.norm_added_q`, headDim, 1e-6);
      this.norm_added_k = w.rmsNorm(`${prefix}.norm_added_k`, headDim, 1e-6);
      this.to_add_out = w.linear(`${prefix}.to_add_out`, dim, dim);
    }
  }

  /**
   * Attention over the joint sequence [context; x], before the output projections (the blocks fuse those with
   * their gates and residuals): [B, L+S, H·D], or for joint blocks its context rows [B, L, H·D] and x rows [B, S, H·D].
   * ops.jointQkv writes each stream's normed, rotated q, k and its v into the joint [B, L+S, H, D] tensors (diffusers
   * concatenates [context; x] after the norms and before RoPE; the math per row is the same).
   */
  forward(x: Tensor, context: Tensor | undefined, rope: RotaryEmbedding, alongside?: Linear): { x: Tensor; context?: Tensor; alongside?: Tensor } {
    return tidy(() => {
      const [b, s] = x.shape;
      const l = context ? context.shape[1] : 0;
      const streams: JointQkvStream[] = [];
      if (context) {
        streams.push(this.add_qkv!.jointStream(context, { normQ: this.norm_added_q!.weight, normK: this.norm_added_k!.weight, ...ropeRows(rope, 0, l) }));
      }
      streams.push(this.to_qkv.jointStream(x, { normQ: this.norm_q.weight, normK: this.norm_k.weight, ...ropeRows(rope, l, l + s) }));
      // A single block's MLP up (GELU) of the same x in the QKV projection's launch, where jointQkv projects x itself.
      const side = alongside && !context && 'x' in streams[0] && (alongside.computeDtype === undefined || alongside.computeDtype === x.dtype)
        ? { weight: alongside.weight, bias: alongside.bias, activation: 'gelu_tanh' as const }
        : undefined;
      const joint = ops.jointQkv(streams, this.heads, this.norm_q.eps, { alongside: side }); // [B, L+S, H, D] each
      const attended = ops.sdpa(joint.q, joint.k, joint.v, { layout: 'BLHD' }).reshape([b, l + s, this.heads * this.headDim]);
      if (!context) {
        return { x: attended, alongside: alongside && (joint.alongside ?? alongside.forward(x, { activation: 'gelu_tanh' })) };
      }
      const [contextOut, xOut] = ops.split(attended, [l, s], 1);
      return { x: xOut, context: contextOut };
    });
  }
}

/** diffusers' FeedForward(dim, activation_fn="gelu-approximate"): net.0.proj → GELU(tanh) → net.2. */
class FeedForward {
  readonly net: [{ proj: Linear }, null, Linear];

  constructor(w: WeightLoader, prefix: string, dim: number, hidden: number) {
    this.net = [{ proj: w.linear(`${prefix}.net.0.proj`, dim, hidden) }, null, w.linear(`${prefix}.net.2`, hidden, dim)];
  }

  /** residual + gate ⊙ FF(x). */
  forward(x: Tensor, gate: Tensor, residual: Tensor): Tensor {
    return tidy(() => this.net[2].forward(this.net[0].proj.forward(x, { activation: 'gelu_tanh' }), { gate, residual }));
  }

  /** Each item's forward; together: each layer of the items through one linearGroup (the streams' GEMMs in one launch). */
  static forwardEach(items: readonly { ff: FeedForward; x: Tensor; gate: Tensor; residual: Tensor }[], together: boolean): Tensor[] {
    if (!together) return items.map(({ ff, x, gate, residual }) => ff.forward(x, gate, residual));
    return tidy(() => {
      const hidden = linearGroup(items.map(({ ff, x }) => [ff.net[0].proj, x, { activation: 'gelu_tanh' }] as const), true);
      return linearGroup(items.map(({ ff, gate, residual }, i) => [ff.net[2], hidden[i], { gate, residual }] as const), true);
    });
  }
}

/** FluxTransformerBlock (double stream). */
class FluxTransformerBlock {
  // norm1.linear / norm1_context.linear: AdaLayerNormZero, [6D, D]
  readonly norm1: { linear: Linear };
  readonly norm1_context: { linear: Linear };
  readonly attn: FluxAttention;
  readonly ff: FeedForward;
  readonly ff_context: FeedForward;

  constructor(w: WeightLoader, prefix: string, heads: number, headDim: number) {
    const dim = heads * headDim;
    this.norm1 = { linear: w.linear(`${prefix}.norm1.linear`, dim, 6 * dim) };
    this.norm1_context = { linear: w.linear(`${prefix}.norm1_context.linear`, dim, 6 * dim) };
    this.attn = new FluxAttention(w, `${prefix}.attn`, heads, headDim, true);
    this.ff = new FeedForward(w, `${prefix}.ff`, dim, 4 * dim);
    this.ff_context = new FeedForward(w, `${prefix}.ff_context`, dim, 4 * dim);
  }

  /** Columns of this block in a modulation table: norm1.linear's 6D, then norm1_context.linear's 6D. */
  get modulationWidth(): number {
    return this.norm1.linear.outFeatures + this.norm1_context.linear.outFeatures;
  }

  /**
   * x [B, S, D], context [B, L, D] → new x and context. together: the two streams' linears go through linearGroup
   * (false while group offload streams the weights: its hooks watch each layer's own call).
   */
  forward(x: Tensor, context: Tensor, conditioning: Conditioning, rope: RotaryEmbedding, together: boolean): { x: Tensor; context: Tensor } {
    return tidy(() => {
      const [mod, cMod] =
        'modulation' in conditioning
          ? ops.split(conditioning.modulation, this.norm1.linear.outFeatures, 1)
          : [modulationOf(this.norm1.linear, conditioning), modulationOf(this.norm1_context.linear, conditioning)];
      // AdaLayerNormZero: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp; LayerNorm without affine, eps 1e-6.
      const [shift, scale, gate, shiftMlp, scaleMlp, gateMlp] = modulationChunks(mod, 6);
      const [cShift, cScale, cGate, cShiftMlp, cScaleMlp, cGateMlp] = modulationChunks(cMod, 6);
      const attended = this.attn.forward(ops.layerNormModulate(x, shift, scale, 1e-6), ops.layerNormModulate(context, cShift, cScale, 1e-6), rope);

      const [h, c] = linearGroup(
        [
          [this.attn.to_out![0], attended.x, { gate, residual: x }],
          [this.attn.to_add_out!, attended.context!, { gate: cGate, residual: context }],
        ],
        together,
      );
      const [newX, newContext] = FeedForward.forwardEach(
        [
          { ff: this.ff, x: ops.layerNormModulate(h, shiftMlp, scaleMlp, 1e-6), gate: gateMlp, residual: h },
          { ff: this.ff_context, x: ops.layerNormModulate(c, cShiftMlp, cScaleMlp, 1e-6), gate: cGateMlp, residual: c },
        ],
        together,
      );
      return { x: newX, context: newContext };
    });
  }
}

/** FluxSingleTransformerBlock: AdaLayerNormZeroSingle, attention ∥ MLP, both into proj_out. */
class FluxSingleTransformerBlock {
  // norm.linear [3D, D]; proj_mlp [4D, D]; proj_out [D, 5D]
  readonly norm: { linear: Linear };
  readonly proj_mlp: Linear;
  readonly attn: FluxAttention;
  readonly proj_out: Linear;

  constructor(w: WeightLoader, prefix: string, heads: number, headDim: number) {
    const dim = heads * headDim;
    this.norm = { linear: w.linear(`${prefix}.norm.linear`, dim, 3 * dim) };
    this.proj_mlp = w.linear(`${prefix}.proj_mlp`, dim, 4 * dim);
    this.attn = new FluxAttention(w, `${prefix}.attn`, heads, headDim, false);
    this.proj_out = w.linear(`${prefix}.proj_out`, 5 * dim, dim);
  }

  /** Columns of this block in a modulation table: norm.linear's 3D. */
  get modulationWidth(): number {
    return this.norm.linear.outFeatures;
  }

  /**
   * x [B, L+S, D] (text tokens first) → [B, L+S, D]. together: proj_mlp goes into the QKV projection's launch
   * (false while group offload streams the weights: its hooks watch each layer's own call).
   */
  forward(x: Tensor, conditioning: Conditioning, rope: RotaryEmbedding, together: boolean): Tensor {
    return tidy(() => {
      const [shift, scale, gate] = modulationChunks(modulationOf(this.norm.linear, conditioning), 3);
      const normed = ops.layerNormModulate(x, shift, scale, 1e-6);
      const attention = this.attn.forward(normed, undefined, rope, together ? this.proj_mlp : undefined);
      const attended = attention.x;
      const mlp = attention.alongside ?? this.proj_mlp.forward(normed, { activation: 'gelu_tanh' });
      // proj_out over [attended | mlp] as diffusers concatenates them; given as parts, the CUDA GEMM reads each
      // k-block from its part, so the [B, L+S, 5D] tensor (141 MB at 1024²) is never written.
      return this.proj_out.forward([attended, mlp], { gate, residual: x });
    });
  }
}

export interface FluxTransformerInputs {
  /** Packed latents [B, S, in_channels]. */
  hiddenStates: Tensor;
  /** T5 embeddings [B, L, joint_attention_dim]. */
  encoderHiddenStates: Tensor;
  /** CLIP pooled embeddings [B, pooled_projection_dim]. */
  pooledProjections: Tensor;
  /**
   * Per-sample timestep as FluxPipeline passes it (t / 1000): host numbers, or a float32 [B] tensor (on the model's
   * device, nothing is copied through the host).
   */
  timestep: ArrayLike<number> | Tensor;
  /** Per-sample guidance scale (guidance-distilled models only), numbers or a float32 [B] tensor. */
  guidance?: ArrayLike<number> | Tensor;
  /** The rotary table for [txt_ids; img_ids] (see posEmbed). */
  rotary: RotaryEmbedding;
  /**
   * This step's row of modulationTable ([B, modulationWidth] on the model's device, the model's dtype): every adaptive
   * norm's projection made for all steps at once. timestep, guidance and pooled projections are then not used.
   */
  modulation?: Tensor;
}

/** What the conditioning embeddings are made from (modulationTable takes timesteps [T, B] here). */
export interface ConditioningInputs {
  timestep: Tensor;
  guidance?: Tensor;
  pooledProjections: Tensor;
}

/** One forward's inputs, all on the model's device (what a captured graph copies in). */
interface StepInputs extends Record<string, Tensor | undefined> {
  hiddenStates: Tensor;
  encoderHiddenStates: Tensor;
  pooledProjections: Tensor;
  timestep: Tensor;
  guidance?: Tensor;
  cos: Tensor;
  sin: Tensor;
  modulation?: Tensor;
}

export class FluxTransformer2DModel {
  readonly x_embedder: Linear;
  readonly context_embedder: Linear;
  readonly time_text_embed: { timestep_embedder: MLPEmbedder; guidance_embedder?: MLPEmbedder; text_embedder: MLPEmbedder };
  readonly transformer_blocks: FluxTransformerBlock[] = [];
  readonly single_transformer_blocks: FluxSingleTransformerBlock[] = [];
  readonly norm_out: { linear: Linear };
  readonly proj_out: Linear;
  readonly innerDim: number;
  readonly outChannels: number;
  private graphs?: GraphCache<StepInputs>;
  private weightsStreamed = false;
  private compileWarned = false;

  private constructor(
    readonly config: FluxTransformerConfig,
    private readonly weights: WeightLoader,
  ) {
    const w = weights;
    const heads = config.num_attention_heads;
    const headDim = config.attention_head_dim;
    const dim = heads * headDim;
    this.innerDim = dim;
    this.outChannels = config.out_channels ?? config.in_channels;
    this.x_embedder = w.linear('x_embedder', config.in_channels, dim);
    this.context_embedder = w.linear('context_embedder', config.joint_attention_dim, dim);
    this.time_text_embed = {
      timestep_embedder: new MLPEmbedder(w, 'time_text_embed.timestep_embedder', 256, dim),
      guidance_embedder: config.guidance_embeds ? new MLPEmbedder(w, 'time_text_embed.guidance_embedder', 256, dim) : undefined,
      text_embedder: new MLPEmbedder(w, 'time_text_embed.text_embedder', config.pooled_projection_dim, dim),
    };
    for (let i = 0; i < config.num_layers; i++) this.transformer_blocks.push(new FluxTransformerBlock(w, `transformer_blocks.${i}`, heads, headDim));
    for (let i = 0; i < config.num_single_layers; i++) {
      this.single_transformer_blocks.push(new FluxSingleTransformerBlock(w, `single_transformer_blocks.${i}`, heads, headDim));
    }
    this.norm_out = { linear: w.linear('norm_out.linear', dim, 2 * dim) };
    this.proj_out = w.linear('proj_out', dim, config.patch_size * config.patch_size * this.outChannels);
  }

  static fromPretrained(dir: string, options: ComponentLoadOptions, component = 'transformer'): FluxTransformer2DModel {
    const config = readJson(join(dir, 'config.json'), component);
    return FluxTransformer2DModel.fromWeights(config, new CheckpointWeights(Checkpoint.open(dir, 'diffusion_pytorch_model')), options, component);
  }

  /** Builds the model of `rawConfig` (config.json's contents) from `source` (a checkpoint, or random weights). */
  static fromWeights(rawConfig: Record<string, unknown>, source: WeightSource, options: ComponentLoadOptions, component = 'transformer'): FluxTransformer2DModel {
    const config = fluxTransformerConfig(rawConfig, component);
    const weights = new WeightLoader(component, source, options);
    try {
      return new FluxTransformer2DModel(config, weights);
    } catch (err) {
      weights.dispose();
      throw err;
    }
  }

  get device(): Device {
    return this.weights.device;
  }

  get dtype(): FloatDType {
    return this.weights.dtype;
  }

  /** FluxPosEmbed of [txtIds; imgIds] ([L, 3] and [S, 3] host arrays) as float32 device tensors. */
  posEmbed(txtIds: Float32Array, imgIds: Float32Array): RotaryEmbedding {
    const ids = new Float32Array(txtIds.length + imgIds.length);
    ids.set(txtIds);
    ids.set(imgIds, txtIds.length);
    const { cos, sin } = fluxRope(ids, this.config.axes_dims_rope);
    const rows = ids.length / this.config.axes_dims_rope.length;
    const width = this.config.attention_head_dim;
    const table = {
      cos: Tensor.fromArray(cos, [rows, width], { device: this.device }),
      sin: Tensor.fromArray(sin, [rows, width], { device: this.device }),
      dispose(): void {
        table.cos.dispose();
        table.sin.dispose();
      },
    };
    return table;
  }

  /**
   * Captures the forward as CUDA graphs from now on, one per input signature (batch, image and text length,
   * dtypes): the first call at a new signature runs eagerly and captures, later ones replay (graphs.ts). Results
   * are those of eager execution, bit for bit. On the CPU there is nothing to capture: compile() says so once on
   * stderr and the model keeps running eagerly (as torch.compile on a CPU model leaves results unchanged).
   */
  compile(): this {
    const reason = graphCaptureUnavailableReason(this.device);
    if (reason !== undefined) {
      if (!this.compileWarned) console.warn(`fluxlab: FluxTransformer2DModel.compile(): ${reason}; the model on ${this.device} runs eagerly`);
      this.compileWarned = true;
      return this;
    }
    this.graphs ??= new GraphCache<StepInputs>(this.device, 'graphs', (inputs) => this.run(inputs));
    return this;
  }

  /** True once compile() enabled CUDA graphs. */
  get compiled(): boolean {
    return this.graphs !== undefined;
  }

  /** The captured graphs: signature, capture time, memory, replays. */
  graphInfo(): GraphInfo[] {
    return this.graphs?.info() ?? [];
  }

  /** Bytes held by the captured graphs (0 when not compiled). */
  get graphBytes(): number {
    return this.graphs?.bytes ?? 0;
  }

  /** Frees the captured graphs and returns to eager execution. */
  uncompile(): void {
    this.graphs?.dispose();
    this.graphs = undefined;
  }

  /** Per-sample numbers or a tensor as float32 [batch] on the model's device. */
  private perSample(values: ArrayLike<number> | Tensor, batch: number, what: string): Tensor {
    if (values instanceof Tensor) {
      if (values.numel !== batch) throw new Error(`FluxTransformer2DModel: ${what} is ${values.describe()} for a batch of ${batch}`);
      const flat = values.reshape([batch]);
      if (flat.device === this.device && flat.dtype === 'float32') return flat;
      return tidy(() => flat.to({ device: this.device, dtype: 'float32' }));
    }
    if (values.length !== batch) throw new Error(`FluxTransformer2DModel: ${values.length} ${what} values for a batch of ${batch}`);
    return Tensor.fromArray(Float32Array.from(values), [batch], { device: this.device });
  }

  /**
   * The conditioning vector temb [B, D]: timestep (+ guidance) embeddings + pooled text projection, all on the
   * device. The pipeline passes t/1000 and this multiplies by 1000 again; diffusers does both in the latents'
   * dtype, which in bfloat16 rounds the timestep to 3 digits (827.2 → 828) and moves bf16 results ~3% off the
   * float32 reference: here these scalars stay float32.
   */
  private conditioning(inputs: ConditioningInputs): Tensor {
    const embed = (values: Tensor, embedder: MLPEmbedder): Tensor => {
      // diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0), in float32.
      const proj = ops.timestepEmbedding(ops.scale(values, 1000), 256, { flipSinToCos: true, downscaleFreqShift: 0 });
      return embedder.forward(proj.dtype === this.dtype ? proj : proj.to({ dtype: this.dtype }));
    };
    return tidy(() => {
      let temb = embed(inputs.timestep, this.time_text_embed.timestep_embedder);
      if (this.time_text_embed.guidance_embedder) temb = ops.add(temb, embed(inputs.guidance!, this.time_text_embed.guidance_embedder));
      return ops.add(temb, this.time_text_embed.text_embedder.forward(inputs.pooledProjections));
    });
  }

  /** Methods that use every weight outside forward(): model offload uploads the model around them too (offload.ts). */
  readonly wholeModelMethods = ['modulationTable'] as const;

  /** Columns of modulationTable: every block's adaptive-norm projection, then norm_out's. */
  get modulationWidth(): number {
    const blocks = [...this.transformer_blocks, ...this.single_transformer_blocks];
    return blocks.reduce((sum, block) => sum + block.modulationWidth, this.norm_out.linear.outFeatures);
  }

  /**
   * Every adaptive norm's projection of silu(temb) for all steps at once: [T, B, modulationWidth], row (step i,
   * sample b) being what forward computes from (timestep[i][b], guidance[b], pooledProjections[b]); pass row i as
   * FluxTransformerInputs.modulation. These linears depend only on the step's timestep and the prompt, and they are
   * a quarter of FLUX.1's weights (3.2 G parameters, 76 of them per step as matrix-vector products that read every
   * weight once per step): made together they read each weight once per generation. timestep: float32 [T, B] as
   * forward takes it (t / 1000); guidance float32 [B]; pooledProjections [B, pooled_projection_dim].
   */
  modulationTable(inputs: ConditioningInputs): Tensor {
    const { timestep, guidance, pooledProjections } = inputs;
    if (timestep.ndim !== 2 || timestep.dtype !== 'float32' || timestep.device !== this.device) {
      throw new Error(`FluxTransformer2DModel.modulationTable: timesteps must be float32 [T, B] on ${this.device}, got ${timestep.describe()}`);
    }
    const [steps, batch] = timestep.shape;
    if (pooledProjections.ndim !== 2 || pooledProjections.shape[0] !== batch || pooledProjections.device !== this.device) {
      throw new Error(`FluxTransformer2DModel.modulationTable: pooled projections must be [${batch}, P] on ${this.device}, got ${pooledProjections.describe()}`);
    }
    if (this.config.guidance_embeds && (guidance === undefined || guidance.numel !== batch)) {
      throw new Error('FluxTransformer2DModel.modulationTable: this model embeds guidance; pass one value per sample');
    }
    return tidy(() => {
      const everyStep = (t: Tensor): Tensor => ops.concat(new Array<Tensor>(steps).fill(t), 0);
      const siluTemb = ops.silu(
        this.conditioning({
          timestep: timestep.reshape([steps * batch]),
          guidance: this.config.guidance_embeds ? everyStep(guidance!.reshape([batch])) : undefined,
          pooledProjections: everyStep(pooledProjections),
        }),
      );
      return linearConcat(this.modulationLinears(), siluTemb).reshape([steps, batch, this.modulationWidth]);
    });
  }

  /** The adaptive norms' projections in modulation-table column order. */
  private modulationLinears(): Linear[] {
    return [
      ...this.transformer_blocks.flatMap((block) => [block.norm1.linear, block.norm1_context.linear]),
      ...this.single_transformer_blocks.map((block) => block.norm.linear),
      this.norm_out.linear,
    ];
  }

  /**
   * Told by the offloader (offload.ts): true while group or sequential offload streams the blocks' weights through
   * the device, where reading every block's projection at the start of a step would hold all of them for the step.
   */
  setWeightsStreamed(streamed: boolean): void {
    this.weightsStreamed = streamed;
  }

  /** The velocity prediction [B, S, out_channels]. */
  forward(inputs: FluxTransformerInputs): Tensor {
    const { hiddenStates, encoderHiddenStates, pooledProjections } = inputs;
    const [batch, seq, channels] = hiddenStates.shape;
    const config = this.config;
    if (hiddenStates.ndim !== 3 || channels !== config.in_channels) {
      throw new Error(`FluxTransformer2DModel: hidden states must be [B, S, ${config.in_channels}], got ${hiddenStates.describe()}`);
    }
    if (encoderHiddenStates.ndim !== 3 || encoderHiddenStates.shape[0] !== batch || encoderHiddenStates.shape[2] !== config.joint_attention_dim) {
      throw new Error(`FluxTransformer2DModel: encoder hidden states must be [${batch}, L, ${config.joint_attention_dim}], got ${encoderHiddenStates.describe()}`);
    }
    if (pooledProjections.ndim !== 2 || pooledProjections.shape[0] !== batch || pooledProjections.shape[1] !== config.pooled_projection_dim) {
      throw new Error(`FluxTransformer2DModel: pooled projections must be [${batch}, ${config.pooled_projection_dim}], got ${pooledProjections.describe()}`);
    }
    const textLength = encoderHiddenStates.shape[1];
    if (inputs.rotary.cos.shape[0] !== textLength + seq) {
      throw new Error(`FluxTransformer2DModel: rotary table has ${inputs.rotary.cos.shape[0]} rows for ${textLength} text + ${seq} image tokens`);
    }
    if (config.guidance_embeds && inputs.guidance === undefined) throw new Error('FluxTransformer2DModel: this model embeds guidance; pass guidance');
    for (const [name, t] of [['hidden states', hiddenStates], ['encoder hidden states', encoderHiddenStates], ['pooled projections', pooledProjections]] as const) {
      if (t.device !== this.device) throw new Error(`FluxTransformer2DModel on ${this.device}: ${name} are on ${t.device}`);
    }
    const modulation = inputs.modulation;
    if (
      modulation !== undefined &&
      (modulation.ndim !== 2 || modulation.shape[0] !== batch || modulation.shape[1] !== this.modulationWidth || modulation.device !== this.device || modulation.dtype !== this.dtype)
    ) {
      throw new Error(`FluxTransformer2DModel: modulation must be ${this.dtype} [${batch}, ${this.modulationWidth}] on ${this.device} (a row of modulationTable), got ${modulation.describe()}`);
    }
    return tidy(() => {
      const step: StepInputs = {
        hiddenStates,
        encoderHiddenStates,
        pooledProjections,
        timestep: this.perSample(inputs.timestep, batch, 'timestep'),
        guidance: config.guidance_embeds ? this.perSample(inputs.guidance!, batch, 'guidance') : undefined,
        cos: inputs.rotary.cos,
        sin: inputs.rotary.sin,
        modulation,
      };
      return this.graphs ? this.graphs.call(step) : this.run(step);
    });
  }

  /** The eager forward: device work only (no host synchronisation), so that it can be captured. */
  private run(inputs: StepInputs): Tensor {
    const [, seq] = inputs.hiddenStates.shape;
    const textLength = inputs.encoderHiddenStates.shape[1];
    const rotary: RotaryEmbedding = { cos: inputs.cos, sin: inputs.sin, dispose: () => undefined };
    return tidy(() => {
      const siluTemb = inputs.modulation ? undefined : ops.silu(this.conditioning(inputs));
      // This step's row made here when none was given: the 77 projections of silu(temb) in one launch on CUDA (each
      // alone too short to reach the bandwidth), the same values as each block projecting its own.
      const table = inputs.modulation ?? (this.weightsStreamed ? undefined : linearConcat(this.modulationLinears(), siluTemb!));
      let column = 0;
      // The next `width` columns of this step's modulation row, or silu(temb) for the layer to project.
      const conditioning = (width: number): Conditioning => {
        if (!table) return { siluTemb: siluTemb! };
        column += width;
        return { modulation: ops.slice(table, 1, column - width, column) };
      };
      let x = this.x_embedder.forward(inputs.hiddenStates); // [B, S, D]
      let context = this.context_embedder.forward(inputs.encoderHiddenStates); // [B, L, D]
      for (const block of this.transformer_blocks) {
        const out = block.forward(x, context, conditioning(block.modulationWidth), rotary, !this.weightsStreamed);
        x.dispose();
        context.dispose();
        ({ x, context } = out);
      }
      let joint = ops.concat([context, x], 1); // [B, L+S, D]
      x.dispose();
      context.dispose();
      for (const block of this.single_transformer_blocks) {
        const next = block.forward(joint, conditioning(block.modulationWidth), rotary, !this.weightsStreamed);
        joint.dispose();
        joint = next;
      }
      const image = ops.slice(joint, 1, textLength, textLength + seq);
      // AdaLayerNormContinuous: the linear's output is (scale, shift), in that order.
      const [scale, shift] = modulationChunks(modulationOf(this.norm_out.linear, conditioning(this.norm_out.linear.outFeatures)), 2);
      return this.proj_out.forward(ops.layerNormModulate(image, shift, scale, 1e-6));
    });
  }

  /** The Linear layers by checkpoint module name (dense or NF4; split layers as `name[start:end]`). */
  linearLayers(): ReadonlyMap<string, Linear> {
    return this.weights.linears;
  }

  unusedWeights(): string[] {
    return this.weights.unusedKeys();
  }

  dispose(): void {
    this.uncompile();
    this.weights.dispose();
  }
}
