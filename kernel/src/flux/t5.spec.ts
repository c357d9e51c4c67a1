import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { relativePositionBucket, relativePositionBuckets } from './t5';

describe('T5 relative position buckets (bidirectional, 32 buckets, max distance 128)', () => {
  it('matches transformers computed in float32 (reference table from numpy float32)', () => {
    const positions = [-1, 0, 1, 7, 8, 9, 11, 12, 15, 16, 22, 23, 31, 32, 45, 46, 63, 64, 90, 91, 127, 128, 129, 500, -8, -12, -16, -32, -64, -128, -500];
    const expected = [1, 0, 17, 23, 24, 24, 24, 25, 25, 26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 31, 31, 31, 31, 31, 8, 9, 10, 12, 14, 15, 15];
    assert.deepEqual(positions.map((p) => relativePositionBucket(p, true, 32, 128)), expected);
    const sweep = [];
    for (let r = -140; r <= 140; r += 7) sweep.push(relativePositionBucket(r, true, 32, 128));
    assert.deepEqual(sweep, [15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 14, 13, 13, 13, 12, 12, 11, 10, 9, 7, 0, 23, 25, 26, 27, 28, 28, 29, 29, 29, 30, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31]);
  });

  it('lays the table out as [query, key] with key − query', () => {
    const table = relativePositionBuckets(3, 32, 128);
    assert.deepEqual([...table], [0, 17, 18, 1, 0, 17, 2, 1, 0]);
  });
});
