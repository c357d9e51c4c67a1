import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EditedText } from './text-edits.js';

describe('EditedText', () => {
  it('applies insertions and replacements and maps offsets back', () => {
    const original = 'const x = 1;\nx';
    const edited = new EditedText(original, [
      { start: 0, end: 0, text: 'export ' },
      { start: 13, end: 13, text: 'f((' },
      { start: 14, end: 14, text: '))' },
    ]);
    assert.equal(edited.text, 'export const x = 1;\nf((x))');
    assert.equal(edited.toOriginal(edited.text.indexOf('const')), 0);
    assert.equal(edited.toOriginal(edited.text.indexOf('1')), original.indexOf('1'));
    assert.equal(edited.toOriginal(edited.text.indexOf('f((')), 13);
    assert.equal(edited.toOriginal(edited.text.lastIndexOf('x')), 13);
  });

  it('puts insertions before a replacement at the same offset, keeping their order', () => {
    const edited = new EditedText('import a from "a";', [
      { start: 0, end: 18, text: 'R' },
      { start: 0, end: 0, text: 'I1 ' },
      { start: 0, end: 0, text: 'I2 ' },
    ]);
    assert.equal(edited.text, 'I1 I2 R');
  });

  it('refuses overlapping edits', () => {
    assert.throws(() => new EditedText('abcdef', [
      { start: 0, end: 3, text: 'x' },
      { start: 2, end: 4, text: 'y' },
    ]), RangeError);
  });
});
