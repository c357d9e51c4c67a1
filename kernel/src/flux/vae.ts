// diffusers' AutoencoderKL, decoder half (FluxPipeline never encodes): conv_in, a mid block (resnet, single-head
// self-attention, resnet), UpDecoderBlock2Ds (resnets + nearest-2x upsample and conv), GroupNorm(32, eps 1e-6),
// SiLU, conv_out. Keys as diffusers saves them (decoder.*; the encoder.* weights stay on disk).
import { Tensor, ops, tidy, type Device } from '@fluxlab/native';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint';
import { AutoencoderKLConfig, autoencoderKLConfig, readJson } from './config';
import { CheckpointWeights, ComponentLoadOptions, Conv2d, FloatDType, GroupNorm, Linear, WeightLoader, WeightSource } from './nn';

const EPS = 1e-6;

/** ResnetBlock2D without time embedding: norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus (shortcut) input. */
class ResnetBlock2D {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut?: Conv2d;

  constructor(w: WeightLoader, prefix: string, inChannels: number, outChannels: number, groups: number) {
    this.norm1 = w.groupNorm(`${prefix}.norm1`, groups, inChannels, EPS);
    this.conv1 = w.conv2d(`${prefix}.conv1`, inChannels, outChannels, 3, 1);
    this.norm2 = w.groupNorm(`${prefix}.norm2`, groups, outChannels, EPS);
    this.conv2 = w.conv2d(`${prefix}.conv2`, outChannels, outChannels, 3, 1);
    if (inChannels !== outChannels) this.conv_shortcut = w.conv2d(`${prefix}.conv_shortcut`, inChannels, outChannels, 1, 0);
  }

  /**
   * Consumes x: it and each intermediate are freed as soon as the last op that reads them has run (a tidy would
   * hold them all to its end), and the norms run inside the convolutions (never stored on CUDA). At the 1024²
   * level one activation is 256-512 MiB in bf16, so the decoder's peak is three of them rather than a block's worth.
   */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.conv1.forward(x, { norm: this.norm1, silu: true });
      const out = consume(h, (t) => this.conv2.forward(t, { norm: this.norm2, silu: true }));
      const residual = this.conv_shortcut ? consume(x, (t) => this.conv_shortcut!.forward(t)) : x;
      return consume(out, (o) => consume(residual, (r) => ops.add(r, o)));
    });
  }
}

/** `f(t)`, then frees `t`. */
function consume(t: Tensor, f: (t: Tensor) => Tensor): Tensor {
  const result = f(t);
  t.dispose();
  return result;
}

/** The mid block's Attention(heads = channels / attention_head_dim = 1): group norm, q/k/v, SDPA, to_out, residual. */
class VaeAttention {
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: [Linear];

  constructor(w: WeightLoader, prefix: string, channels: number, groups: number) {
    this.group_norm = w.groupNorm(`${prefix}.group_norm`, groups, channels, EPS);
    this.to_q = w.linear(`${prefix}.to_q`, channels, channels);
    this.to_k = w.linear(`${prefix}.to_k`, channels, channels);
    this.to_v = w.linear(`${prefix}.to_v`, channels, channels);
    this.to_out = [w.linear(`${prefix}.to_out.0`, channels, channels)];
  }

  /** x [B, C, H, W] → [B, C, H, W]. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [b, c, h, w] = x.shape;
      const tokens = ops.transpose(this.group_norm.forward(x).reshape([b, c, h * w]), 1, 2); // [B, HW, C]
      const heads = (t: Tensor): Tensor => t.reshape([b, 1, h * w, c]);
      const attended = ops.sdpa(heads(this.to_q.forward(tokens)), heads(this.to_k.forward(tokens)), heads(this.to_v.forward(tokens)));
      const out = this.to_out[0].forward(attended.reshape([b, h * w, c]));
      return ops.add(ops.transpose(out, 1, 2).reshape([b, c, h, w]), x);
    });
  }
}

class UpDecoderBlock2D {
  readonly resnets: ResnetBlock2D[] = [];
  readonly upsamplers?: [{ conv: Conv2d }];

  constructor(w: WeightLoader, prefix: string, inChannels: number, outChannels: number, layers: number, groups: number, upsample: boolean) {
    for (let i = 0; i < layers; i++) {
      this.resnets.push(new ResnetBlock2D(w, `${prefix}.resnets.${i}`, i === 0 ? inChannels : outChannels, outChannels, groups));
    }
    if (upsample) this.upsamplers = [{ conv: w.conv2d(`${prefix}.upsamplers.0.conv`, outChannels, outChannels, 3, 1) }];
  }

  /** Consumes x, and each resnet's output once the next op has read it. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const resnet of this.resnets) h = resnet.forward(h);
      return this.upsamplers ? consume(h, (t) => this.upsamplers![0].conv.forward(t, { upsample: 'nearest2x' })) : h;
    });
  }
}

class Decoder {
  readonly conv_in: Conv2d;
  readonly mid_block: { resnets: [ResnetBlock2D, ResnetBlock2D]; attentions?: [VaeAttention] };
  readonly up_blocks: UpDecoderBlock2D[] = [];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(w: WeightLoader, config: AutoencoderKLConfig) {
    const channels = config.block_out_channels;
    const groups = config.norm_num_groups;
    const top = channels[channels.length - 1];
    this.conv_in = w.conv2d('decoder.conv_in', config.latent_channels, top, 3, 1);
    this.mid_block = {
      resnets: [
        new ResnetBlock2D(w, 'decoder.mid_block.resnets.0', top, top, groups),
        new ResnetBlock2D(w, 'decoder.mid_block.resnets.1', top, top, groups),
      ],
      attentions: config.mid_block_add_attention ? [new VaeAttention(w, 'decoder.mid_block.attentions.0', top, groups)] : undefined,
    };
    const reversed = [...channels].reverse();
    let previous = reversed[0];
    for (let i = 0; i < reversed.length; i++) {
      const last = i === reversed.length - 1;
      this.up_blocks.push(new UpDecoderBlock2D(w, `decoder.up_blocks.${i}`, previous, reversed[i], config.layers_per_block + 1, groups, !last));
      previous = reversed[i];
    }
    this.conv_norm_out = w.groupNorm('decoder.conv_norm_out', groups, channels[0], EPS);
    this.conv_out = w.conv2d('decoder.conv_out', channels[0], config.out_channels, 3, 1);
  }

  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv_in.forward(z);
      h = this.mid_block.resnets[0].forward(h);
      const attention = this.mid_block.attentions?.[0];
      if (attention) h = consume(h, (t) => attention.forward(t));
      h = this.mid_block.resnets[1].forward(h);
      for (const block of this.up_blocks) h = block.forward(h);
      return consume(h, (t) => this.conv_out.forward(t, { norm: this.conv_norm_out, silu: true }));
    });
  }
}

export class AutoencoderKL {
  readonly decoder: Decoder;
  readonly post_quant_conv?: Conv2d;

  private constructor(
    readonly config: AutoencoderKLConfig,
    private readonly weights: WeightLoader,
  ) {
    if (config.use_post_quant_conv) {
      this.post_quant_conv = weights.conv2d('post_quant_conv', config.latent_channels, config.latent_channels, 1, 0);
    }
    this.decoder = new Decoder(weights, config);
  }

  static fromPretrained(dir: string, options: ComponentLoadOptions, component = 'vae'): AutoencoderKL {
    const config = readJson(join(dir, 'config.json'), component);
    return AutoencoderKL.fromWeights(config, new CheckpointWeights(Checkpoint.open(dir, 'diffusion_pytorch_model')), options, component);
  }

  /** Builds the decoder of `rawConfig` (config.json's contents) from `source` (a checkpoint, or random weights). */
  static fromWeights(rawConfig: Record<string, unknown>, source: WeightSource, options: ComponentLoadOptions, component = 'vae'): AutoencoderKL {
    const config = autoencoderKLConfig(rawConfig, component);
    const weights = new WeightLoader(component, source, options);
    try {
      return new AutoencoderKL(config, weights);
    } catch (err) {
      weights.dispose();
      throw err;
    }
  }

  /** 2^(levels − 1): pixels per latent along each side. */
  get scaleFactor(): number {
    return 2 ** (this.config.block_out_channels.length - 1);
  }

  get device(): Device {
    return this.weights.device;
  }

  get dtype(): FloatDType {
    return this.weights.dtype;
  }

  /** z [B, latent_channels, h, w] (already unscaled: latents / scaling_factor + shift_factor) → [B, 3, 8h, 8w]. */
  decode(z: Tensor): Tensor {
    if (z.ndim !== 4 || z.shape[1] !== this.config.latent_channels) {
      throw new Error(`AutoencoderKL.decode: expects [B, ${this.config.latent_channels}, h, w], got ${z.describe()}`);
    }
    return tidy(() => {
      let h = z.device === this.device && z.dtype === this.dtype ? z : z.to({ device: this.device, dtype: this.dtype });
      if (this.post_quant_conv) h = this.post_quant_conv.forward(h);
      return this.decoder.forward(h);
    });
  }

  /** The Linear layers by checkpoint module name (dense or NF4). */
  linearLayers(): ReadonlyMap<string, Linear> {
    return this.weights.linears;
  }

  unusedWeights(): string[] {
    return this.weights.unusedKeys().filter((k) => !k.startsWith('encoder.') && !k.startsWith('quant_conv.'));
  }

  dispose(): void {
    this.weights.dispose();
  }
}
