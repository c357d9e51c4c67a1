// imagesToUint8 against numpy's semantics written out per pixel (float32 x·255, round half to even, HWC order), on
// inputs that hit every half-way case: shared by the CPU and GPU specs.
import { Tensor, ops, tidy, type Device } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { imagesToUint8 } from './image';

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function perPixel(decoded: Tensor): Uint8Array {
  const [batch, , height, width] = decoded.shape;
  const values = tidy(() => ops.clamp(ops.affine(decoded, 0.5, 0.5), 0, 1).toArray() as Float32Array);
  const out = new Uint8Array(batch * height * width * 3);
  const plane = height * width;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) out[(b * plane + p) * 3 + c] = roundHalfEven(Math.fround(values[(b * 3 + c) * plane + p] * 255));
    }
  }
  return out;
}

/** Every third value lands on k + 0.5 after x/2 + 0.5 and ·255 (k = 0…254); the rest are spread over ±1.3. */
export function checkImagesToUint8(device: Device): void {
  const shape = [2, 3, 37, 53];
  const count = shape.reduce((a, b) => a * b, 1);
  const values = Float32Array.from({ length: count }, (_, i) =>
    i % 3 === 0 ? Math.fround(((((i / 3) % 255) + 0.5) / 255 - 0.5) * 2) : Math.sin(i * 12.9898) * 1.3,
  );
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    const decoded = tidy(() => Tensor.fromArray(values, shape).to({ device, dtype }));
    try {
      assert.deepEqual(imagesToUint8(decoded), perPixel(decoded), `${dtype} on ${device}`);
    } finally {
      decoded.dispose();
    }
  }
}
