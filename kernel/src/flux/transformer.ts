// diffusers' FluxTransformer2DModel (FLUX.1's MMDiT): x/context embedders, timestep + guidance + pooled-text
// conditioning, 3-axis RoPE, double-stream blocks (joint attention, text tokens first), single-stream blocks
// (attention and MLP in parallel), AdaLayerNormContinuous and the output projection. Module names are the
// checkpoint keys. Small host-side tensors (sinusoidal embeddings, RoPE tables) are computed in JS with the
// roundings torch applies, then uploaded.
import { Tensor, ops, tidy, type Device } from '@fluxlab/native';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint';
import { FluxTransformerConfig, fluxTransformerConfig, readJson } from './config';
import { ComponentLoadOptions, FloatDType, Linear, RMSNorm, WeightLoader, mergeHeads } from './nn';

const f32 = Math.fround;

/**
 * diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0, max_period=10000) in
 * float32: frequencies exp(-ln(10000)·i/half), arguments t·freq, [cos | sin]. → [B, dim].
 */
export function timestepEmbedding(timesteps: ArrayLike<number>, dim: number, flipSinToCos = true, downscaleFreqShift = 0, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const negLog = f32(-Math.log(maxPeriod));
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f32(Math.exp(f32(f32(negLog * i) / (half - downscaleFreqShift))));
  const out = new Float32Array(timesteps.length * dim);
  for (let b = 0; b < timesteps.length; b++) {
    const t = f32(timesteps[b]);
    const row = out.subarray(b * dim, (b + 1) * dim);
    for (let i = 0; i < half; i++) {
      const arg = f32(t * freqs[i]);
      const sin = f32(Math.sin(arg));
      const cos = f32(Math.cos(arg));
      row[flipSinToCos ? half + i : i] = sin;
      row[flipSinToCos ? i : half + i] = cos;
    }
  }
  return out;
}

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

/** FluxAttention: per-head RMS QK-norm, RoPE on the joint sequence, optional context projections (double blocks). */
class FluxAttention {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly norm_q: RMSNorm;
  readonly norm_k: RMSNorm;
  readonly to_out?: [Linear];
  readonly add_q_proj?: Linear;
  readonly add_k_proj?: Linear;
  readonly add_v_proj?: Linear;
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
    this.to_q = w.linear(`${prefix}.to_q`, dim, dim);
    this.to_k = w.linear(`${prefix}.to_k`, dim, dim);
    this.to_v = w.linear(`${prefix}.to_v`, dim, dim);
    this.norm_q = w.rmsNorm(`${prefix}.norm_q`, headDim, 1e-6);
    this.norm_k = w.rmsNorm(`${prefix}.norm_k`, headDim, 1e-6);
    if (joint) {
      this.to_out = [w.linear(`${prefix}.to_out.0`, dim, dim)];
      this.add_q_proj = w.linear(`${prefix}.add_q_proj`, dim, dim);
      this.add_k_proj = w.linear(`${prefix}.add_k_proj`, dim, dim);
      this.add_v_proj = w.linear(`${prefix}.add_v_proj`, dim, dim);
      this.norm_added_q = w.rmsNorm(`${prefix}.norm_added_q`, headDim, 1e-6);
      this.norm_added_k = w.rmsNorm(`${prefix}.norm_added_k`, headDim, 1e-6);
      this.to_add_out = w.linear(`${prefix}.to_add_out`, dim, dim);
    }
  }

  /** [B, L, H·D] → [B, H, L, D], normed per head when a norm is given. */
  private project(linear: Linear, x: Tensor, norm?: RMSNorm): Tensor {
    const [b, l] = x.shape;
    const y = linear.forward(x).reshape([b, l, this.heads, this.headDim]);
    return ops.permute(norm ? norm.forward(y) : y, [0, 2, 1, 3]);
  }

  /** Attention over the joint sequence [context; x] → outputs for x (and for the context, when joint). */
  forward(x: Tensor, context: Tensor | undefined, rope: RotaryEmbedding): { x: Tensor; context?: Tensor } {
    return tidy(() => {
      let q = this.project(this.to_q, x, this.norm_q); // [B, H, S, D]
      let k = this.project(this.to_k, x, this.norm_k);
      let v = this.project(this.to_v, x);
      const textLength = context ? context.shape[1] : 0;
      if (context) {
        q = ops.concat([this.project(this.add_q_proj!, context, this.norm_added_q), q], 2); // [B, H, L+S, D]
        k = ops.concat([this.project(this.add_k_proj!, context, this.norm_added_k), k], 2);
        v = ops.concat([this.project(this.add_v_proj!, context), v], 2);
      }
      const attended = mergeHeads(ops.sdpa(ops.rope(q, rope.cos, rope.sin), ops.rope(k, rope.cos, rope.sin), v)); // [B, L+S, H·D]
      if (!context) return { x: attended };
      const [contextOut, xOut] = ops.split(attended, [textLength, attended.shape[1] - textLength], 1);
      return { x: this.to_out![0].forward(xOut), context: this.to_add_out!.forward(contextOut) };
    });
  }
}

/** diffusers' FeedForward(dim, activation_fn="gelu-approximate"): net.0.proj → GELU(tanh) → net.2. */
class FeedForward {
  readonly net: [{ proj: Linear }, null, Linear];

  constructor(w: WeightLoader, prefix: string, dim: number, hidden: number) {
    this.net = [{ proj: w.linear(`${prefix}.net.0.proj`, dim, hidden) }, null, w.linear(`${prefix}.net.2`, hidden, dim)];
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.net[2].forward(ops.gelu(this.net[0].proj.forward(x), 'tanh')));
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

  /** x [B, S, D], context [B, L, D], siluTemb = silu(temb) [B, D] → new x and context. */
  forward(x: Tensor, context: Tensor, siluTemb: Tensor, rope: RotaryEmbedding): { x: Tensor; context: Tensor } {
    return tidy(() => {
      // AdaLayerNormZero: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp; LayerNorm without affine, eps 1e-6.
      const [shift, scale, gate, shiftMlp, scaleMlp, gateMlp] = modulationChunks(this.norm1.linear.forward(siluTemb), 6);
      const [cShift, cScale, cGate, cShiftMlp, cScaleMlp, cGateMlp] = modulationChunks(this.norm1_context.linear.forward(siluTemb), 6);
      const normX = ops.modulate(ops.layerNorm(x, null, null, 1e-6), shift, scale);
      const normContext = ops.modulate(ops.layerNorm(context, null, null, 1e-6), cShift, cScale);
      const attention = this.attn.forward(normX, normContext, rope);

      const h = ops.add(x, ops.mul(gate, attention.x));
      const ffOut = this.ff.forward(ops.modulate(ops.layerNorm(h, null, null, 1e-6), shiftMlp, scaleMlp));
      const newX = ops.add(h, ops.mul(gateMlp, ffOut));

      const c = ops.add(context, ops.mul(cGate, attention.context!));
      const ffContext = this.ff_context.forward(ops.modulate(ops.layerNorm(c, null, null, 1e-6), cShiftMlp, cScaleMlp));
      const newContext = ops.add(c, ops.mul(cGateMlp, ffContext));
      return { x: newX, context: newContext };
    });
  }
}

/** FluxSingleTransformerBlock: AdaLayerNormZeroSingle, attention ∥ MLP, concatenated into proj_out. */
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

  /** x [B, L+S, D] (text tokens first) → [B, L+S, D]. */
  forward(x: Tensor, siluTemb: Tensor, rope: RotaryEmbedding): Tensor {
    return tidy(() => {
      const [shift, scale, gate] = modulationChunks(this.norm.linear.forward(siluTemb), 3);
      const normed = ops.modulate(ops.layerNorm(x, null, null, 1e-6), shift, scale);
      const mlp = ops.gelu(this.proj_mlp.forward(normed), 'tanh');
      const attention = this.attn.forward(normed, undefined, rope).x;
      return ops.add(x, ops.mul(gate, this.proj_out.forward(ops.concat([attention, mlp], 2))));
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
  /** Per-sample timestep as FluxPipeline passes it (t / 1000), already in the latents' precision. */
  timestep: ArrayLike<number>;
  /** Per-sample guidance scale (guidance-distilled models only). */
  guidance?: ArrayLike<number>;
  /** The rotary table for [txt_ids; img_ids] (see posEmbed). */
  rotary: RotaryEmbedding;
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
    const config = fluxTransformerConfig(readJson(join(dir, 'config.json'), component), component);
    const weights = new WeightLoader(component, Checkpoint.open(dir, 'diffusion_pytorch_model'), options);
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

  /** The conditioning vector temb [B, D]: timestep (+ guidance) embeddings + pooled text projection. */
  private conditioning(inputs: FluxTransformerInputs, batch: number): Tensor {
    const dtype = this.dtype;
    // forward() multiplies by 1000 again. diffusers does it in the latents' dtype, which in bfloat16 rounds the
    // timestep to 3 digits (827.2 → 828) and moves bf16 results ~3% off the float32 reference; we keep float32.
    const scaled = (values: ArrayLike<number>, what: string): number[] => {
      if (values.length !== batch) throw new Error(`FluxTransformer2DModel: ${values.length} ${what} values for a batch of ${batch}`);
      return Array.from(values, (v) => f32(v * 1000));
    };
    const embed = (values: number[], embedder: MLPEmbedder): Tensor => {
      const proj = Tensor.fromArray(timestepEmbedding(values, 256), [batch, 256], { device: this.device, dtype });
      try {
        return embedder.forward(proj);
      } finally {
        proj.dispose();
      }
    };
    return tidy(() => {
      let temb = embed(scaled(inputs.timestep, 'timestep'), this.time_text_embed.timestep_embedder);
      if (this.time_text_embed.guidance_embedder) {
        if (inputs.guidance === undefined) throw new Error('FluxTransformer2DModel: this model embeds guidance; pass guidance');
        temb = ops.add(temb, embed(scaled(inputs.guidance, 'guidance'), this.time_text_embed.guidance_embedder));
      }
      return ops.add(temb, this.time_text_embed.text_embedder.forward(inputs.pooledProjections));
    });
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
    return tidy(() => {
      const siluTemb = ops.silu(this.conditioning(inputs, batch));
      let x = this.x_embedder.forward(hiddenStates); // [B, S, D]
      let context = this.context_embedder.forward(encoderHiddenStates); // [B, L, D]
      for (const block of this.transformer_blocks) {
        const out = block.forward(x, context, siluTemb, inputs.rotary);
        x.dispose();
        context.dispose();
        ({ x, context } = out);
      }
      let joint = ops.concat([context, x], 1); // [B, L+S, D]
      x.dispose();
      context.dispose();
      for (const block of this.single_transformer_blocks) {
        const next = block.forward(joint, siluTemb, inputs.rotary);
        joint.dispose();
        joint = next;
      }
      const image = ops.slice(joint, 1, textLength, textLength + seq);
      // AdaLayerNormContinuous: the linear's output is (scale, shift), in that order.
      const [scale, shift] = modulationChunks(this.norm_out.linear.forward(siluTemb), 2);
      return this.proj_out.forward(ops.modulate(ops.layerNorm(image, null, null, 1e-6), shift, scale));
    });
  }

  /** The Linear layers by checkpoint module name (dense or NF4). */
  linearLayers(): ReadonlyMap<string, Linear> {
    return this.weights.linears;
  }

  unusedWeights(): string[] {
    return this.weights.unusedKeys();
  }

  dispose(): void {
    this.weights.dispose();
  }
}
