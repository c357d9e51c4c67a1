// transformers' T5EncoderModel (T5 v1.1 XXL in FLUX.1): RMS layer norms, unscaled attention with a learned
// relative position bias (bidirectional buckets, computed by block 0 and shared by all blocks), gated-gelu
// feed-forward. As bitsandbytes loads it, `wo` stays float32 (T5's _keep_in_fp32_modules) and its input is cast to
// wo's dtype; a checkpoint that stores wo in bf16 (FLUX.1-dev) keeps it so, computed in float32 (nn.ts Linear).
// Keys as transformers saves them.
import { Tensor, ops, tidy, type Device } from '@fluxlab/native';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint';
import { T5Config, readJson, t5Config } from './config';
import { CheckpointWeights, ComponentLoadOptions, FloatDType, Linear, RMSNorm, WeightLoader, WeightSource, heads, mergeHeads } from './nn';

const f32 = Math.fround;

/**
 * transformers' T5Attention._relative_position_bucket for relativePosition = key − query, evaluated in float32 as
 * torch does (log of the float32 ratio, divided by the float32 log(max_distance / max_exact), truncated).
 */
export function relativePositionBucket(relativePosition: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let buckets = numBuckets;
  let bucket = 0;
  let n: number;
  if (bidirectional) {
    buckets = Math.floor(buckets / 2);
    if (relativePosition > 0) bucket += buckets;
    n = Math.abs(relativePosition);
  } else {
    n = -Math.min(relativePosition, 0);
  }
  const maxExact = Math.floor(buckets / 2);
  if (n < maxExact) return bucket + n;
  const scaled = f32(f32(f32(Math.log(f32(n / maxExact))) / f32(Math.log(maxDistance / maxExact))) * (buckets - maxExact));
  return bucket + Math.min(maxExact + Math.trunc(scaled), buckets - 1);
}

/** Buckets [L, L] for query i (row) and key j (column); each diagonal shares one relative position. */
export function relativePositionBuckets(length: number, numBuckets: number, maxDistance: number): Int32Array {
  const byOffset = new Int32Array(2 * length - 1);
  for (let r = 1 - length; r < length; r++) byOffset[r + length - 1] = relativePositionBucket(r, true, numBuckets, maxDistance);
  const out = new Int32Array(length * length);
  for (let q = 0; q < length; q++) out.set(byOffset.subarray(length - 1 - q, 2 * length - 1 - q), q * length);
  return out;
}

function activation(name: string, x: Tensor): Tensor {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return ops.gelu(x, 'tanh');
    case 'gelu':
      return ops.gelu(x);
    case 'relu':
      return ops.clamp(x, 0, Infinity);
    case 'silu':
    case 'swish':
      return ops.silu(x);
    default:
      throw new Error(`T5EncoderModel: activation '${name}' is not supported`);
  }
}

/** feed_forward_proj "gated-gelu" → gated with gelu_new (transformers maps gated-gelu to gelu_new). */
function feedForward(config: T5Config): { gated: boolean; act: string } {
  const parts = config.feed_forward_proj.split('-');
  const gated = parts.length > 1 && parts[0] === 'gated';
  const base = parts[parts.length - 1];
  if (parts.length > 2 || (parts.length === 2 && !gated)) {
    throw new Error(`T5EncoderModel: feed_forward_proj '${config.feed_forward_proj}' is not of the form [gated-]act`);
  }
  return { gated, act: base === 'gelu' && gated ? 'gelu_new' : (config.dense_act_fn ?? base) };
}

/**
 * T5LayerNorm: RMS norm in float32, then in the weight's dtype when that is bfloat16/float16. With bitsandbytes the
 * residual stream turns float32 at the first float32 `wo`, and this cast is what brings attention and the
 * feed-forward back to the model's half precision, as in transformers.
 */
function t5LayerNorm(norm: RMSNorm, x: Tensor): Tensor {
  const y = norm.forward(x);
  const half = norm.weight.dtype === 'bfloat16' || norm.weight.dtype === 'float16';
  if (!half || y.dtype === norm.weight.dtype) return y;
  try {
    return y.to({ dtype: norm.weight.dtype });
  } finally {
    y.dispose();
  }
}

class T5Attention {
  // q, k, v: [H·d_kv, d_model]; o: [d_model, H·d_kv]; no biases
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  // relative_attention_bias.weight [num_buckets, H] (block 0 only)
  readonly relative_attention_bias?: Tensor;

  constructor(w: WeightLoader, prefix: string, readonly config: T5Config, hasBias: boolean) {
    const inner = config.num_heads * config.d_kv;
    // transformers' _init_weights folds the 1/sqrt(d_kv) attention scale into q (random weights follow it).
    this.q = w.linear(`${prefix}.q`, config.d_model, inner, { bias: false, initStd: (config.d_model * config.d_kv) ** -0.5 });
    this.k = w.linear(`${prefix}.k`, config.d_model, inner, { bias: false });
    this.v = w.linear(`${prefix}.v`, config.d_model, inner, { bias: false });
    this.o = w.linear(`${prefix}.o`, inner, config.d_model, { bias: false });
    if (hasBias) {
      this.relative_attention_bias = w.tensor(`${prefix}.relative_attention_bias.weight`, [config.relative_attention_num_buckets, config.num_heads], w.dtype, {
        normal: config.d_model ** -0.5,
      });
    }
  }

  /** [1, H, L, L] additive bias. */
  positionBias(length: number, device: Device): Tensor {
    if (!this.relative_attention_bias) throw new Error('T5Attention: only the first block computes the position bias');
    return tidy(() => {
      const buckets = Tensor.fromArray(
        relativePositionBuckets(length, this.config.relative_attention_num_buckets, this.config.relative_attention_max_distance),
        [length, length],
        { device },
      );
      const values = ops.embedding(this.relative_attention_bias!, buckets); // [L, L, H]
      return ops.permute(values, [2, 0, 1]).reshape([1, this.config.num_heads, length, length]);
    });
  }

  /** residual + attention(x): x [B, L, d_model], bias [1, H, L, L]. */
  forward(x: Tensor, bias: Tensor, residual: Tensor): Tensor {
    return tidy(() => {
      const count = this.config.num_heads;
      const q = heads(this.q.forward(x), count); // [B, L, H, d_kv]
      const k = heads(this.k.forward(x), count);
      const v = heads(this.v.forward(x), count);
      // T5 folds the 1/sqrt(d) scale into its initialisation: scores are plain q·kᵀ.
      return this.o.forward(mergeHeads(ops.sdpa(q, k, v, { bias, scale: 1, layout: 'BLHD' })), { residual });
    });
  }
}

class T5Block {
  readonly layer: [
    { SelfAttention: T5Attention; layer_norm: RMSNorm },
    { DenseReluDense: { wi_0?: Linear; wi_1?: Linear; wi?: Linear; wo: Linear }; layer_norm: RMSNorm },
  ];

  constructor(
    w: WeightLoader,
    prefix: string,
    readonly config: T5Config,
    index: number,
    woDtype: FloatDType,
  ) {
    const eps = config.layer_norm_epsilon;
    const { gated } = feedForward(config);
    const ff = `${prefix}.layer.1.DenseReluDense`;
    this.layer = [
      {
        SelfAttention: new T5Attention(w, `${prefix}.layer.0.SelfAttention`, config, index === 0),
        layer_norm: w.rmsNorm(`${prefix}.layer.0.layer_norm`, config.d_model, eps),
      },
      {
        DenseReluDense: gated
          ? {
              wi_0: w.linear(`${ff}.wi_0`, config.d_model, config.d_ff, { bias: false }),
              wi_1: w.linear(`${ff}.wi_1`, config.d_model, config.d_ff, { bias: false }),
              wo: w.linear(`${ff}.wo`, config.d_ff, config.d_model, { bias: false, dtype: woDtype }),
            }
          : {
              wi: w.linear(`${ff}.wi`, config.d_model, config.d_ff, { bias: false }),
              wo: w.linear(`${ff}.wo`, config.d_ff, config.d_model, { bias: false, dtype: woDtype }),
            },
        layer_norm: w.rmsNorm(`${prefix}.layer.1.layer_norm`, config.d_model, eps),
      },
    ];
  }

  forward(x: Tensor, bias: Tensor): Tensor {
    return tidy(() => {
      const [attention, ff] = this.layer;
      const h = attention.SelfAttention.forward(t5LayerNorm(attention.layer_norm, x), bias, x);
      const normed = t5LayerNorm(ff.layer_norm, h);
      const { act } = feedForward(this.config);
      const dense = ff.DenseReluDense;
      const hidden = dense.wi
        ? activation(act, dense.wi.forward(normed))
        : ops.mul(activation(act, dense.wi_0!.forward(normed)), dense.wi_1!.forward(normed));
      const woDtype = dense.wo.quantized ? hidden.dtype : dense.wo.dtype;
      const input = hidden.dtype === woDtype ? hidden : hidden.to({ dtype: woDtype });
      return ops.add(h, dense.wo.forward(input));
    });
  }
}

export class T5EncoderModel {
  // shared.weight / encoder.embed_tokens.weight [V, d_model] (tied)
  readonly shared: Tensor;
  readonly encoder: { block: T5Block[]; final_layer_norm: RMSNorm };

  private constructor(
    readonly config: T5Config,
    private readonly weights: WeightLoader,
  ) {
    const w = weights;
    const embedKey = w.has('encoder.embed_tokens.weight') ? 'encoder.embed_tokens' : 'shared';
    this.shared = w.embedding(embedKey, config.vocab_size, config.d_model, 1);
    // bitsandbytes keeps `wo` in float32 (transformers' T5 _keep_in_fp32_modules), as does float16 loading.
    const woDtype: FloatDType = w.options.nf4 !== undefined || w.dtype === 'float16' ? 'float32' : w.dtype;
    const block: T5Block[] = [];
    for (let i = 0; i < config.num_layers; i++) block.push(new T5Block(w, `encoder.block.${i}`, config, i, woDtype));
    this.encoder = { block, final_layer_norm: w.rmsNorm('encoder.final_layer_norm', config.d_model, config.layer_norm_epsilon) };
  }

  static fromPretrained(dir: string, options: ComponentLoadOptions, component = 'text_encoder_2'): T5EncoderModel {
    const config = readJson(join(dir, 'config.json'), component);
    return T5EncoderModel.fromWeights(config, new CheckpointWeights(Checkpoint.open(dir, 'model')), options, component);
  }

  /** Builds the model of `rawConfig` (config.json's contents) from `source` (a checkpoint, or random weights). */
  static fromWeights(rawConfig: Record<string, unknown>, source: WeightSource, options: ComponentLoadOptions, component = 'text_encoder_2'): T5EncoderModel {
    const config = t5Config(rawConfig, component);
    const weights = new WeightLoader(component, source, options);
    try {
      return new T5EncoderModel(config, weights);
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

  /** inputIds [B, L] int32 → last hidden state [B, L, d_model] (no attention mask, as FluxPipeline calls it). */
  forward(inputIds: Tensor): Tensor {
    if (inputIds.ndim !== 2) throw new Error(`T5EncoderModel: input ids must be [B, L], got ${inputIds.describe()}`);
    return tidy(() => {
      const device = this.device;
      const ids = inputIds.device === device ? inputIds : inputIds.to({ device });
      let h = ops.embedding(this.shared, ids);
      const bias = this.encoder.block[0].layer[0].SelfAttention.positionBias(inputIds.shape[1], device);
      for (const block of this.encoder.block) h = block.forward(h, bias);
      const out = t5LayerNorm(this.encoder.final_layer_norm, h);
      return out.dtype === this.dtype ? out : out.to({ dtype: this.dtype });
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
