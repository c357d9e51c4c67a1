// transformers' CLIPTextModel (CLIP ViT-L/14's text tower in FLUX.1): pre-LN transformer with a causal mask,
// quick_gelu MLP, final layer norm, and the pooled output FluxPipeline uses. Keys as transformers saves them
// (with or without the 'text_model.' prefix of transformers 4).
import { Tensor, ops, tidy, type Device } from '@fluxlab/native';
import { Checkpoint } from './checkpoint';
import { ClipTextConfig, clipTextConfig, readJson } from './config';
import { CheckpointWeights, ComponentLoadOptions, LayerNorm, Linear, WeightLoader, WeightSource, heads, mergeHeads } from './nn';
import { join } from 'node:path';

class CLIPAttention {
  // q_proj, k_proj, v_proj, out_proj: [D, D] weights, [D] biases
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;

  constructor(w: WeightLoader, prefix: string, readonly config: ClipTextConfig) {
    const d = config.hidden_size;
    this.q_proj = w.linear(`${prefix}.q_proj`, d, d);
    this.k_proj = w.linear(`${prefix}.k_proj`, d, d);
    this.v_proj = w.linear(`${prefix}.v_proj`, d, d);
    this.out_proj = w.linear(`${prefix}.out_proj`, d, d);
  }

  /** residual + attention(x): x [B, L, D], causal [1, 1, L, L] (1 = attend) → [B, L, D]. */
  forward(x: Tensor, causal: Tensor, residual: Tensor): Tensor {
    return tidy(() => {
      const count = this.config.num_attention_heads;
      const q = heads(this.q_proj.forward(x), count); // [B, L, H, D/H]
      const k = heads(this.k_proj.forward(x), count);
      const v = heads(this.v_proj.forward(x), count);
      return this.out_proj.forward(mergeHeads(ops.sdpa(q, k, v, { mask: causal, layout: 'BLHD' })), { residual });
    });
  }
}

class CLIPEncoderLayer {
  readonly layer_norm1: LayerNorm;
  readonly self_attn: CLIPAttention;
  readonly layer_norm2: LayerNorm;
  // mlp.fc1 [I, D], mlp.fc2 [D, I]
  readonly mlp: { fc1: Linear; fc2: Linear };

  constructor(w: WeightLoader, prefix: string, readonly config: ClipTextConfig) {
    const d = config.hidden_size;
    this.layer_norm1 = w.layerNorm(`${prefix}.layer_norm1`, d, config.layer_norm_eps);
    this.self_attn = new CLIPAttention(w, `${prefix}.self_attn`, config);
    this.layer_norm2 = w.layerNorm(`${prefix}.layer_norm2`, d, config.layer_norm_eps);
    this.mlp = {
      fc1: w.linear(`${prefix}.mlp.fc1`, d, config.intermediate_size),
      fc2: w.linear(`${prefix}.mlp.fc2`, config.intermediate_size, d),
    };
  }

  private activation(x: Tensor): Tensor {
    switch (this.config.hidden_act) {
      case 'quick_gelu':
        return ops.quickGelu(x);
      case 'gelu':
        return ops.gelu(x);
      case 'gelu_new':
      case 'gelu_pytorch_tanh':
        return ops.gelu(x, 'tanh');
      default:
        throw new Error(`CLIPTextModel: hidden_act '${this.config.hidden_act}' is not supported`);
    }
  }

  forward(x: Tensor, causal: Tensor): Tensor {
    return tidy(() => {
      const h = this.self_attn.forward(this.layer_norm1.forward(x), causal, x);
      return this.mlp.fc2.forward(this.activation(this.mlp.fc1.forward(this.layer_norm2.forward(h))), { residual: h });
    });
  }
}

export interface CLIPTextOutput {
  /** [B, L, D] after the final layer norm. */
  lastHiddenState: Tensor;
  /** [B, D]: the last hidden state at each sequence's end-of-text token. */
  pooledOutput: Tensor;
}

export class CLIPTextModel {
  // embeddings.token_embedding.weight [V, D], embeddings.position_embedding.weight [P, D]
  readonly embeddings: { token_embedding: Tensor; position_embedding: Tensor };
  readonly encoder: { layers: CLIPEncoderLayer[] };
  readonly final_layer_norm: LayerNorm;

  private constructor(
    readonly config: ClipTextConfig,
    private readonly weights: WeightLoader,
  ) {
    const w = weights;
    const d = config.hidden_size;
    this.embeddings = {
      // transformers' CLIP init: normal(0, 0.02) for both tables.
      token_embedding: w.embedding('embeddings.token_embedding', config.vocab_size, d, 0.02),
      position_embedding: w.embedding('embeddings.position_embedding', config.max_position_embeddings, d, 0.02),
    };
    this.encoder = { layers: [] };
    for (let i = 0; i < config.num_hidden_layers; i++) this.encoder.layers.push(new CLIPEncoderLayer(w, `encoder.layers.${i}`, config));
    this.final_layer_norm = w.layerNorm('final_layer_norm', d, config.layer_norm_eps);
  }

  /** Loads `dir` (config.json + model.safetensors or shards). */
  static fromPretrained(dir: string, options: ComponentLoadOptions, component = 'text_encoder'): CLIPTextModel {
    const config = readJson(join(dir, 'config.json'), component);
    return CLIPTextModel.fromWeights(config, new CheckpointWeights(Checkpoint.open(dir, 'model')), options, component);
  }

  /** Builds the model of `rawConfig` (config.json's contents) from `source` (a checkpoint, or random weights). */
  static fromWeights(rawConfig: Record<string, unknown>, source: WeightSource, options: ComponentLoadOptions, component = 'text_encoder'): CLIPTextModel {
    const config = clipTextConfig(rawConfig, component);
    const legacy = source.has('text_model.embeddings.token_embedding.weight') && !source.has('embeddings.token_embedding.weight');
    const weights = new WeightLoader(component, source, options, legacy ? 'text_model.' : '');
    try {
      return new CLIPTextModel(config, weights);
    } catch (err) {
      weights.dispose();
      throw err;
    }
  }

  get device(): Device {
    return this.weights.device;
  }

  get dtype(): string {
    return this.weights.dtype;
  }

  /**
   * inputIds [B, L] (int32, on any device; L ≤ max_position_embeddings). The pooled position follows
   * transformers: with the legacy config (eos_token_id == 2, as FLUX.1-dev ships) the argmax of the ids (the
   * highest id is <|endoftext|>), otherwise the first eos_token_id.
   */
  forward(inputIds: Tensor, hostIds?: Int32Array): CLIPTextOutput {
    const [batch, length] = inputIds.shape;
    if (inputIds.ndim !== 2) throw new Error(`CLIPTextModel: input ids must be [B, L], got ${inputIds.describe()}`);
    if (length > this.config.max_position_embeddings) {
      throw new Error(`CLIPTextModel: ${length} tokens exceed max_position_embeddings ${this.config.max_position_embeddings}`);
    }
    const ids = hostIds ?? Int32Array.from(inputIds.toArray() as Int32Array);
    const eosPositions = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      const row = ids.subarray(b * length, (b + 1) * length);
      let pos = 0;
      if (this.config.eos_token_id === 2) {
        for (let i = 1; i < length; i++) if (row[i] > row[pos]) pos = i;
      } else {
        pos = row.indexOf(this.config.eos_token_id);
        if (pos < 0) pos = 0;
      }
      eosPositions[b] = b * length + pos;
    }
    return tidy(() => {
      const device = this.device;
      const deviceIds = inputIds.device === device ? inputIds : inputIds.to({ device });
      const positions = ops.slice(this.embeddings.position_embedding, 0, 0, length); // [L, D]
      let h = ops.add(ops.embedding(this.embeddings.token_embedding, deviceIds), positions); // [B, L, D]
      const causalHost = new Uint8Array(length * length);
      for (let q = 0; q < length; q++) causalHost.fill(1, q * length, q * length + q + 1);
      const causal = Tensor.fromArray(causalHost, [1, 1, length, length], { device });
      for (const layer of this.encoder.layers) h = layer.forward(h, causal);
      const lastHiddenState = this.final_layer_norm.forward(h);
      const flat = lastHiddenState.reshape([batch * length, this.config.hidden_size]);
      const pooledOutput = ops.embedding(flat, Tensor.fromArray(eosPositions, [batch], { device }));
      return { lastHiddenState, pooledOutput };
    });
  }

  /** Checkpoint tensors this model does not use (e.g. a text projection). */
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
