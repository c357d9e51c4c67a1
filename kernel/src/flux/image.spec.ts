import { describe, it } from 'node:test';
import { checkImagesToUint8 } from './image.testing';

describe('imagesToUint8 (VaeImageProcessor.postprocess to uint8)', () => {
  it('equals numpy\'s per-pixel float32 round half to even, HWC, for float32 / bfloat16 / float16 on the CPU', () => {
    checkImagesToUint8('cpu');
  });
});
