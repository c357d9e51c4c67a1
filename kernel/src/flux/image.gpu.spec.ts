// imagesToUint8 on CUDA tensors: the rounding runs on the device and must give numpy's bytes.
import { describe, it } from 'node:test';
import { assertGpu, gpuSuiteSkip } from './gpu.testing';
import { checkImagesToUint8 } from './image.testing';

describe('imagesToUint8 on CUDA', { skip: gpuSuiteSkip('image.gpu.spec') }, () => {
  it('equals numpy\'s per-pixel float32 round half to even, HWC, for float32 / bfloat16 / float16', () => {
    assertGpu();
    checkImagesToUint8('cuda');
  });
});
