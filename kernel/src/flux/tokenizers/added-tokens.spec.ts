import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddedVocabulary, addedTokenFromJson, type AddedToken } from './added-tokens';

const token = (id: number, content: string, extra: Partial<AddedToken> = {}): AddedToken => ({
  id,
  content,
  special: true,
  normalized: false,
  lstrip: false,
  rstrip: false,
  singleWord: false,
  ...extra,
});

describe('AddedVocabulary', () => {
  it('cuts raw text at the leftmost, then longest, added token', () => {
    const vocab = new AddedVocabulary([token(10, '<a>'), token(11, '<a><b>'), token(12, '<b>')]);
    assert.deepEqual(vocab.extractAndNormalize('x<a><b>y<b><a>', null), [
      { text: 'x', start: 0 },
      { id: 11, start: 1 },
      { text: 'y', start: 7 },
      { id: 12, start: 8 },
      { id: 10, start: 11 },
    ]);
  });

  it('normalizes only the text between tokens, and matches normalized tokens afterwards', () => {
    const vocab = new AddedVocabulary([token(1, '</s>'), token(2, 'hello', { normalized: true, special: false })]);
    const segments = vocab.extractAndNormalize('HELLO </S></s>World', (s) => s.toLowerCase());
    assert.deepEqual(segments, [{ id: 2, start: 0 }, { text: ' </s>', start: 5 }, { id: 1, start: 10 }, { text: 'world', start: 14 }]);
  });

  it('absorbs neighbouring whitespace for lstrip/rstrip tokens and respects single_word', () => {
    const vocab = new AddedVocabulary([token(5, '<m>', { lstrip: true, rstrip: true }), token(6, 'ab', { singleWord: true })]);
    assert.deepEqual(vocab.extractAndNormalize('x  <m>  y', null), [{ text: 'x', start: 0 }, { id: 5, start: 1 }, { text: 'y', start: 8 }]);
    assert.deepEqual(vocab.extractAndNormalize('cab ab', null), [{ text: 'cab ', start: 0 }, { id: 6, start: 4 }]);
  });

  it('answers id and content lookups and which ids are special', () => {
    const vocab = new AddedVocabulary([addedTokenFromJson({ id: 3, content: '<pad>', special: true }), addedTokenFromJson({ id: 4, content: 'x' })]);
    assert.equal(vocab.tokenToId('<pad>'), 3);
    assert.equal(vocab.idToToken(4), 'x');
    assert.ok(vocab.isSpecial(3));
    assert.ok(!vocab.isSpecial(4));
    assert.equal(vocab.tokens[1].normalized, true, 'non-special tokens default to normalized');
    assert.equal(vocab.tokens[0].normalized, false, 'special tokens default to raw matching');
  });
});
