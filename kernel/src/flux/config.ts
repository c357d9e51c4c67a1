// Component configs as diffusers/transformers read them: the JSON's own (snake_case) keys, completed with the
// defaults of the Python classes' constructors, so `pipe.vae.config.scaling_factor` reads as in diffusers.
import { existsSync, readFileSync } from 'node:fs';

export function readJson(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new Error(`${what}: ${path} does not exist`);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${what}: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what}: ${path} is not a JSON object`);
  return value as Record<string, unknown>;
}

function withDefaults<T extends object>(what: string, raw: Record<string, unknown>, defaults: T): T {
  const out: Record<string, unknown> = { ...raw };
  for (const [key, value] of Object.entries(defaults)) {
    if (out[key] === undefined || out[key] === null) out[key] = value;
    else if (value !== null && typeof value !== typeof out[key] && !(Array.isArray(value) && Array.isArray(out[key]))) {
      throw new Error(`${what}: config field ${key} should be a ${typeof value}, got ${JSON.stringify(out[key])}`);
    }
  }
  return out as T;
}

function positiveInts(what: string, config: object, keys: readonly string[]): void {
  for (const key of keys) {
    const value = (config as Record<string, unknown>)[key];
    if (!Number.isSafeInteger(value) || (value as number) <= 0) {
      throw new Error(`${what}: config field ${key} must be a positive integer, got ${JSON.stringify(value)}`);
    }
  }
}

/** bitsandbytes' quantization_config, as saved by diffusers/transformers for pre-quantized checkpoints. */
export interface BitsAndBytesConfig {
  quant_method: 'bitsandbytes';
  load_in_4bit: boolean;
  load_in_8bit?: boolean;
  bnb_4bit_quant_type: string;
  bnb_4bit_compute_dtype?: string;
  bnb_4bit_use_double_quant: boolean;
  bnb_4bit_quant_storage?: string;
  llm_int8_skip_modules?: string[] | null;
  [key: string]: unknown;
}

export interface FluxTransformerConfig {
  patch_size: number;
  in_channels: number;
  out_channels: number | null;
  num_layers: number;
  num_single_layers: number;
  attention_head_dim: number;
  num_attention_heads: number;
  joint_attention_dim: number;
  pooled_projection_dim: number;
  guidance_embeds: boolean;
  axes_dims_rope: number[];
  quantization_config?: BitsAndBytesConfig;
  [key: string]: unknown;
}

export function fluxTransformerConfig(raw: Record<string, unknown>, what = 'transformer'): FluxTransformerConfig {
  const config = withDefaults<FluxTransformerConfig>(what, raw, {
    patch_size: 1,
    in_channels: 64,
    out_channels: null,
    num_layers: 19,
    num_single_layers: 38,
    attention_head_dim: 128,
    num_attention_heads: 24,
    joint_attention_dim: 4096,
    pooled_projection_dim: 768,
    guidance_embeds: false,
    axes_dims_rope: [16, 56, 56],
  });
  positiveInts(what, config, ['patch_size', 'in_channels', 'num_attention_heads', 'attention_head_dim', 'joint_attention_dim', 'pooled_projection_dim']);
  const ropeDims = config.axes_dims_rope.reduce((a, b) => a + b, 0);
  if (config.axes_dims_rope.some((d) => d % 2 !== 0) || ropeDims !== config.attention_head_dim) {
    throw new Error(`${what}: axes_dims_rope ${JSON.stringify(config.axes_dims_rope)} must be even and sum to attention_head_dim ${config.attention_head_dim}`);
  }
  if (config.patch_size !== 1) throw new Error(`${what}: patch_size ${config.patch_size} is not supported (FluxPipeline packs 2x2 latents itself; patch_size is 1)`);
  return config;
}

export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number;
  projection_dim: number;
  [key: string]: unknown;
}

export function clipTextConfig(raw: Record<string, unknown>, what = 'text_encoder'): ClipTextConfig {
  const config = withDefaults<ClipTextConfig>(what, raw, {
    vocab_size: 49408,
    hidden_size: 512,
    intermediate_size: 2048,
    num_hidden_layers: 12,
    num_attention_heads: 8,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    pad_token_id: 1,
    bos_token_id: 49406,
    eos_token_id: 49407,
    projection_dim: 512,
  });
  positiveInts(what, config, ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings']);
  if (config.hidden_size % config.num_attention_heads !== 0) {
    throw new Error(`${what}: hidden_size ${config.hidden_size} is not divisible by num_attention_heads ${config.num_attention_heads}`);
  }
  return config;
}

export interface T5Config {
  vocab_size: number;
  d_model: number;
  d_kv: number;
  d_ff: number;
  num_layers: number;
  num_heads: number;
  relative_attention_num_buckets: number;
  relative_attention_max_distance: number;
  layer_norm_epsilon: number;
  feed_forward_proj: string;
  dense_act_fn?: string;
  is_gated_act?: boolean;
  quantization_config?: BitsAndBytesConfig;
  [key: string]: unknown;
}

export function t5Config(raw: Record<string, unknown>, what = 'text_encoder_2'): T5Config {
  const config = withDefaults<T5Config>(what, raw, {
    vocab_size: 32128,
    d_model: 512,
    d_kv: 64,
    d_ff: 2048,
    num_layers: 6,
    num_heads: 8,
    relative_attention_num_buckets: 32,
    relative_attention_max_distance: 128,
    layer_norm_epsilon: 1e-6,
    feed_forward_proj: 'relu',
  });
  positiveInts(what, config, ['vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_layers', 'num_heads', 'relative_attention_num_buckets', 'relative_attention_max_distance']);
  return config;
}

export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  up_block_types: string[];
  layers_per_block: number;
  act_fn: string;
  norm_num_groups: number;
  scaling_factor: number;
  shift_factor: number | null;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  force_upcast: boolean;
  [key: string]: unknown;
}

export function autoencoderKLConfig(raw: Record<string, unknown>, what = 'vae'): AutoencoderKLConfig {
  const config = withDefaults<AutoencoderKLConfig>(what, raw, {
    in_channels: 3,
    out_channels: 3,
    latent_channels: 4,
    block_out_channels: [64],
    up_block_types: ['UpDecoderBlock2D'],
    layers_per_block: 1,
    act_fn: 'silu',
    norm_num_groups: 32,
    scaling_factor: 0.18215,
    shift_factor: null,
    use_post_quant_conv: true,
    mid_block_add_attention: true,
    force_upcast: true,
  });
  positiveInts(what, config, ['out_channels', 'latent_channels', 'layers_per_block', 'norm_num_groups']);
  if (config.up_block_types.length !== config.block_out_channels.length) {
    throw new Error(`${what}: up_block_types and block_out_channels differ in length`);
  }
  for (const type of config.up_block_types) {
    if (type !== 'UpDecoderBlock2D') throw new Error(`${what}: up block type ${type} is not supported (AutoencoderKL decoders use UpDecoderBlock2D)`);
  }
  if (config.act_fn !== 'silu') throw new Error(`${what}: act_fn ${config.act_fn} is not supported (silu)`);
  for (const channels of config.block_out_channels) {
    if (channels % config.norm_num_groups !== 0) {
      throw new Error(`${what}: block_out_channels ${channels} is not divisible by norm_num_groups ${config.norm_num_groups}`);
    }
  }
  return config;
}

export interface FlowMatchSchedulerConfig {
  num_train_timesteps: number;
  shift: number;
  use_dynamic_shifting: boolean;
  base_shift: number;
  max_shift: number;
  base_image_seq_len: number;
  max_image_seq_len: number;
  invert_sigmas: boolean;
  shift_terminal: number | null;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  time_shift_type: string;
  stochastic_sampling: boolean;
  [key: string]: unknown;
}

export function flowMatchSchedulerConfig(raw: Record<string, unknown>, what = 'scheduler'): FlowMatchSchedulerConfig {
  const config = withDefaults<FlowMatchSchedulerConfig>(what, raw, {
    num_train_timesteps: 1000,
    shift: 1.0,
    use_dynamic_shifting: false,
    base_shift: 0.5,
    max_shift: 1.15,
    base_image_seq_len: 256,
    max_image_seq_len: 4096,
    invert_sigmas: false,
    shift_terminal: null,
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    time_shift_type: 'exponential',
    stochastic_sampling: false,
  });
  for (const key of ['use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'stochastic_sampling'] as const) {
    if (config[key]) throw new Error(`${what}: ${key} is not supported by fluxlab's FlowMatchEulerDiscreteScheduler (FLUX.1 does not use it)`);
  }
  if (config.time_shift_type !== 'exponential' && config.time_shift_type !== 'linear') {
    throw new Error(`${what}: time_shift_type ${config.time_shift_type} is not one of exponential, linear`);
  }
  return config;
}

/** model_index.json: `{component: [library, class] | [null, null]}` plus `_class_name`. */
export interface ModelIndex {
  _class_name: string;
  components: Record<string, [string, string] | null>;
}

export function readModelIndex(dir: string, path: string): ModelIndex {
  const raw = readJson(path, `model ${dir}`);
  const className = raw._class_name;
  if (typeof className !== 'string') throw new Error(`${path}: no _class_name (not a diffusers pipeline directory)`);
  const components: Record<string, [string, string] | null> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key.startsWith('_')) continue;
    if (Array.isArray(value) && value.length === 2) {
      components[key] = value[0] === null || value[1] === null ? null : [String(value[0]), String(value[1])];
    }
  }
  return { _class_name: className, components };
}
