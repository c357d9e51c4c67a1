import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { crc32, decodePng, encodePng } from './png';

describe('png', () => {
  it('computes the PNG CRC (IEND chunk)', () => {
    assert.equal(crc32(Buffer.from('IEND', 'latin1')), 0xae426082);
  });

  it('round-trips smooth and noisy images with text chunks', () => {
    for (const [width, height] of [
      [1, 1],
      [5, 3],
      [64, 48],
    ]) {
      const rgb = new Uint8Array(width * height * 3);
      for (let i = 0; i < rgb.length; i++) rgb[i] = i % 7 === 0 ? (i * 2654435761) >>> 24 : (i * 3) & 0xff;
      const png = encodePng(width, height, rgb, { Software: 'fluxlab', Comment: 'random weights' });
      const decoded = decodePng(png);
      assert.equal(decoded.width, width);
      assert.equal(decoded.height, height);
      assert.deepEqual(decoded.rgb, rgb);
      assert.deepEqual(decoded.text, { Software: 'fluxlab', Comment: 'random weights' });
    }
  });

  it('rejects inconsistent input', () => {
    assert.throws(() => encodePng(2, 2, new Uint8Array(11)), /11 bytes for a 2x2 RGB image/);
    assert.throws(() => encodePng(0, 2, new Uint8Array(0)), /invalid size/);
  });
});
