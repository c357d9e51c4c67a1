// Model configurations for random-weight pipelines (FluxPipeline.fromRandom): FLUX.1-dev's own config files, as
// black-forest-labs/FLUX.1-dev ships them (transformer/config.json, text_encoder/config.json = CLIP ViT-L/14's text
// tower, text_encoder_2/config.json = google/t5-v1_1-xxl's encoder, vae/config.json, scheduler/
// scheduler_config.json), and the embedded tiny pipeline's. Tokenizers always come from the embedded tiny pipeline
// (kernel/assets/tiny-flux): same algorithms, smaller vocabularies, so the token ids differ from FLUX.1-dev's but
// the shapes (77 CLIP and up to 512 T5 tokens) do not.
import { join } from 'node:path';
import { readJson } from './config';

export interface PipelineConfigs {
  scheduler: Record<string, unknown>;
  text_encoder: Record<string, unknown>;
  text_encoder_2: Record<string, unknown>;
  transformer: Record<string, unknown>;
  vae: Record<string, unknown>;
}

export type RandomPreset = 'flux1-dev' | 'tiny-flux';

export const RANDOM_PRESETS: readonly RandomPreset[] = ['flux1-dev', 'tiny-flux'];

/** black-forest-labs/FLUX.1-dev's component configs. */
export const FLUX1_DEV_CONFIGS: PipelineConfigs = {
  scheduler: {
    _class_name: 'FlowMatchEulerDiscreteScheduler',
    _diffusers_version: '0.30.0.dev0',
    base_image_seq_len: 256,
    base_shift: 0.5,
    max_image_seq_len: 4096,
    max_shift: 1.15,
    num_train_timesteps: 1000,
    shift: 3.0,
    use_dynamic_shifting: true,
  },
  text_encoder: {
    _name_or_path: 'openai/clip-vit-large-patch14',
    architectures: ['CLIPTextModel'],
    attention_dropout: 0.0,
    bos_token_id: 0,
    dropout: 0.0,
    eos_token_id: 2,
    hidden_act: 'quick_gelu',
    hidden_size: 768,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 3072,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: 'clip_text_model',
    num_attention_heads: 12,
    num_hidden_layers: 12,
    pad_token_id: 1,
    projection_dim: 768,
    torch_dtype: 'bfloat16',
    transformers_version: '4.43.3',
    vocab_size: 49408,
  },
  text_encoder_2: {
    _name_or_path: 'google/t5-v1_1-xxl',
    architectures: ['T5EncoderModel'],
    classifier_dropout: 0.0,
    d_ff: 10240,
    d_kv: 64,
    d_model: 4096,
    decoder_start_token_id: 0,
    dense_act_fn: 'gelu_new',
    dropout_rate: 0.1,
    eos_token_id: 1,
    feed_forward_proj: 'gated-gelu',
    initializer_factor: 1.0,
    is_encoder_decoder: true,
    is_gated_act: true,
    layer_norm_epsilon: 1e-6,
    model_type: 't5',
    num_decoder_layers: 24,
    num_heads: 64,
    num_layers: 24,
    output_past: true,
    pad_token_id: 0,
    relative_attention_max_distance: 128,
    relative_attention_num_buckets: 32,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    transformers_version: '4.43.3',
    use_cache: true,
    vocab_size: 32128,
  },
  transformer: {
    _class_name: 'FluxTransformer2DModel',
    _diffusers_version: '0.30.0.dev0',
    attention_head_dim: 128,
    guidance_embeds: true,
    in_channels: 64,
    joint_attention_dim: 4096,
    num_attention_heads: 24,
    num_layers: 19,
    num_single_layers: 38,
    patch_size: 1,
    pooled_projection_dim: 768,
  },
  vae: {
    _class_name: 'AutoencoderKL',
    _diffusers_version: '0.30.0.dev0',
    act_fn: 'silu',
    block_out_channels: [128, 256, 512, 512],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
    force_upcast: true,
    in_channels: 3,
    latent_channels: 16,
    latents_mean: null,
    latents_std: null,
    layers_per_block: 2,
    mid_block_add_attention: true,
    norm_num_groups: 32,
    out_channels: 3,
    sample_size: 1024,
    scaling_factor: 0.3611,
    shift_factor: 0.1159,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
    use_post_quant_conv: false,
    use_quant_conv: false,
  },
};

/** The configs of a preset; `embeddedDir` is the embedded tiny pipeline (tiny-flux's configs are its own). */
export function presetConfigs(preset: RandomPreset, embeddedDir: string): PipelineConfigs {
  if (preset === 'flux1-dev') return structuredClone(FLUX1_DEV_CONFIGS);
  if (preset === 'tiny-flux') {
    const read = (component: string, file = 'config.json'): Record<string, unknown> => readJson(join(embeddedDir, component, file), component);
    return {
      scheduler: read('scheduler', 'scheduler_config.json'),
      text_encoder: read('text_encoder'),
      text_encoder_2: read('text_encoder_2'),
      transformer: read('transformer'),
      vae: read('vae'),
    };
  }
  throw new Error(`unknown random-weights preset '${String(preset)}': use one of ${RANDOM_PRESETS.join(', ')}`);
}
