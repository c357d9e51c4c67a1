// Generated images: diffusers' VaeImageProcessor.postprocess (denormalize (x/2+0.5).clamp(0,1), then numpy's
// (images * 255).round().astype("uint8")) and a displayable, PNG-encodable image object.
import { Tensor, ops, tidy } from '@fluxlab/native';
import { writeFileSync } from 'node:fs';
import { encodePng } from './png';

const f32 = Math.fround;

/** numpy.round of a float32: half to even. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Decoded images [B, 3, H, W] (any float dtype, any device) → uint8 [B, H, W, 3] exactly as VaeImageProcessor
 * with output_type "pil"/"np" computes them.
 */
export function imagesToUint8(decoded: Tensor): Uint8Array {
  const [batch, channels, height, width] = decoded.shape;
  if (decoded.ndim !== 4 || channels !== 3) throw new Error(`imagesToUint8: expects [B, 3, H, W], got ${decoded.describe()}`);
  const values = tidy(() => ops.clamp(ops.affine(decoded, 0.5, 0.5), 0, 1).toArray() as Float32Array);
  const out = new Uint8Array(batch * height * width * 3);
  const plane = height * width;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < 3; c++) {
      const src = (b * 3 + c) * plane;
      for (let p = 0; p < plane; p++) out[(b * plane + p) * 3 + c] = roundHalfEven(f32(values[src + p] * 255));
    }
  }
  return out;
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
