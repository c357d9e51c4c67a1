import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeMappings, LineIndex, SourceMapLookup } from './source-map.js';

describe('source maps', () => {
  it('decodes base64 VLQ segments (relative fields, negative values)', () => {
    // Line 0: col 0 → (0,0); col 4 → (0,4). Line 1: col 2 → (1,0). Line 2: col 0 → (0,3) (negative delta).
    assert.deepEqual(decodeMappings('AAAA,IAAI;EACJ;AADG'), [
      [
        [0, 0, 0],
        [4, 0, 4],
      ],
      [[2, 1, 0]],
      [[0, 0, 3]],
    ]);
  });

  it('looks up the segment at or before a column', () => {
    const lookup = new SourceMapLookup('AAAA,IAAI;EACJ');
    assert.deepEqual(lookup.original(0, 5), { line: 0, column: 4 });
    assert.deepEqual(lookup.original(0, 1), { line: 0, column: 0 });
    assert.deepEqual(lookup.original(1, 0), { line: 1, column: 0 });
    assert.equal(lookup.original(7, 0), undefined);
  });

  it('converts offsets and positions', () => {
    const index = new LineIndex('ab\ncd\n\nef');
    assert.deepEqual(index.position(4), { line: 1, column: 1 });
    assert.equal(index.offset(3, 1), 8);
    assert.equal(index.lineText(1), 'cd');
    assert.equal(index.lineText(2), '');
  });
});
