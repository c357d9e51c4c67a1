// Generated images: diffusers' VaeImageProcessor.postprocess (denormalize (x/2+0.5).clamp(0,1), then numpy's
// (images * 255).round().astype("uint8")) and a displayable, PNG-encodable image object.
import { Tensor, ops, tidy } from '@fluxlab/native';
import { writeFileSync } from 'node:fs';
import { encodePng } from './png';

/** Adding then subtracting 2^23 rounds a float32 in [0, 2^23) to an integer, half to even (float32 has no bits below 1 there). */
const ROUND_FLOAT32 = 2 ** 23;

/**
 * Decoded images [B, 3, H, W] (any float dtype, any device) → uint8 [B, H, W, 3] exactly as VaeImageProcessor
 * with output_type "pil"/"np" computes them: x/2 + 0.5 clamped in the decoded dtype, then numpy's float32
 * (x · 255).round() (half to even) and the cast. On the decoded tensor's device, so that only the 3 bytes per
 * pixel come to the host. A per-pixel host loop took 44–52 ms per 1024² image on the H100 machine (postprocess_s in
 * bench/results/2026-11-26-h100-e67257a-postprocess-on-host.json), this 0.7–2.6 ms (bench/results/2026-11-26-h100.json).
 */
export function imagesToUint8(decoded: Tensor): Uint8Array {
  const [batch, channels, height, width] = decoded.shape;
  if (decoded.ndim !== 4 || channels !== 3) throw new Error(`imagesToUint8: expects [B, 3, H, W], got ${decoded.describe()}`);
  return tidy(() => {
    const unit = ops.clamp(ops.affine(decoded, 0.5, 0.5), 0, 1).to({ dtype: 'float32' });
    // Separate multiply and adds (not one affine): each rounds in float32 as numpy's do.
    const rounded = ops.affine(ops.affine(ops.scale(unit, 255), 1, ROUND_FLOAT32), 1, -ROUND_FLOAT32);
    const bytes = ops.permute(rounded.to({ dtype: 'uint8' }), [0, 2, 3, 1]);
    const out = bytes.toArray() as Uint8Array;
    if (out.length !== batch * height * width * 3) throw new Error(`imagesToUint8: ${out.length} bytes for ${batch}x${height}x${width}x3`);
    return out;
  });
}

const mimeBundle = Symbol.for('fluxlab.mimeBundle');

/** One generated RGB image; displays inline in the kernel (image/png) and encodes to PNG. */
export class FluxImage {
  private png?: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    /** height·width·3 bytes, row-major RGB. */
    readonly data: Uint8Array,
    /** Written into the PNG as tEXt chunks (prompt, seed, steps, model, and a random-weights notice). */
    readonly metadata: Readonly<Record<string, string>> = {},
  ) {
    if (data.length !== width * height * 3) throw new Error(`FluxImage: ${data.length} bytes for ${width}x${height} RGB`);
  }

  /** PNG bytes (encoded once, then cached). */
  toPNG(): Uint8Array {
    this.png ??= encodePng(this.width, this.height, this.data, this.metadata);
    return this.png;
  }

  /** Writes the PNG to `path`. */
  save(path: string): void {
    writeFileSync(path, this.toPNG());
  }

  get description(): string {
    const random = this.metadata['fluxlab:random-weights'] === 'true' ? ' — RANDOM WEIGHTS (noise by design)' : '';
    return `FluxImage ${this.width}x${this.height}${random}`;
  }

  toString(): string {
    return this.description;
  }

  [mimeBundle](): Record<string, unknown> {
    return { 'image/png': this.toPNG(), 'text/plain': this.description };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.description;
  }
}
