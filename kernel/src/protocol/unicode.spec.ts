import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { codePointsToUtf16, utf16ToCodePoints } from './unicode.js';

describe('cursor positions in code points', () => {
  it('counts astral characters as one position', () => {
    const text = 'a😀b𝒳c';
    assert.equal(codePointsToUtf16(text, 2), 3);
    assert.equal(codePointsToUtf16(text, 4), 6);
    assert.equal(codePointsToUtf16(text, 99), text.length);
    assert.equal(utf16ToCodePoints(text, 3), 2);
    assert.equal(utf16ToCodePoints(text, text.length), 5);
    for (let cp = 0; cp <= 5; cp++) assert.equal(utf16ToCodePoints(text, codePointsToUtf16(text, cp)), cp);
  });
});
