// FluxPipeline's latent layout: the VAE latent [B, C, H, W] is cut into 2x2 patches and packed into a token
// sequence [B, (H/2)(W/2), 4C]; image ids give each token its (0, row, column) position for RoPE, text ids are 0.
import { Tensor, ops, tidy } from '@fluxlab/native';

/** FluxPipeline.prepare_latents: latent height and width for an image size, rounded down to whole 2x2 patches. */
export function latentSize(height: number, width: number, vaeScaleFactor: number): { height: number; width: number } {
  return {
    height: 2 * Math.floor(height / (vaeScaleFactor * 2)),
    width: 2 * Math.floor(width / (vaeScaleFactor * 2)),
  };
}

/** _pack_latents: [B, C, H, W] → [B, (H/2)(W/2), 4C]. */
export function packLatents(latents: Tensor): Tensor {
  const [b, c, h, w] = latents.shape;
  if (latents.ndim !== 4 || h % 2 !== 0 || w % 2 !== 0) throw new Error(`packLatents: expects [B, C, H, W] with even H, W, got ${latents.describe()}`);
  return tidy(() => ops.permute(latents.reshape([b, c, h / 2, 2, w / 2, 2]), [0, 2, 4, 1, 3, 5]).reshape([b, (h / 2) * (w / 2), c * 4]));
}

/** _unpack_latents: [B, (H/2)(W/2), 4C] → [B, C, H, W] for latent size H x W. */
export function unpackLatents(latents: Tensor, height: number, width: number): Tensor {
  const [b, s, c4] = latents.shape;
  if (latents.ndim !== 3 || c4 % 4 !== 0 || s !== (height / 2) * (width / 2)) {
    throw new Error(`unpackLatents: ${latents.describe()} does not hold ${height}x${width} latents`);
  }
  return tidy(() =>
    ops.permute(latents.reshape([b, height / 2, width / 2, c4 / 4, 2, 2]), [0, 3, 1, 4, 2, 5]).reshape([b, c4 / 4, height, width]),
  );
}

/** _prepare_latent_image_ids(h, w) for h x w patches: [h·w, 3] rows (0, i, j). */
export function latentImageIds(patchRows: number, patchColumns: number): Float32Array {
  const ids = new Float32Array(patchRows * patchColumns * 3);
  for (let i = 0; i < patchRows; i++) {
    for (let j = 0; j < patchColumns; j++) {
      const row = (i * patchColumns + j) * 3;
      ids[row + 1] = i;
      ids[row + 2] = j;
    }
  }
  return ids;
}

/** encode_prompt's text_ids: zeros [L, 3]. */
export function textIds(length: number): Float32Array {
  return new Float32Array(length * 3);
}
