import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tokenizer } from './tokenizer';
import { smallT5 } from './test-fixtures';

describe('Tokenizer', () => {
  const tok = Tokenizer.fromJson(smallT5());

  it('runs added tokens, normalizer, pre-tokenizer, model and post-processor in order', () => {
    assert.deepEqual(tok.encode('A b</s>C'), [3, 4, 1, 5, 6, 1]);
    assert.deepEqual(tok.encodeContent('A  B'), [3, 4]);
    assert.equal(tok.specialTokenCount, 1);
  });

  it('truncates leaving room for the special tokens, then pads on the right', () => {
    const batch = tok.encodeBatch(['a b a b', 'b'], { padding: 'max_length', maxLength: 3, truncate: true, padId: 0 });
    assert.deepEqual(batch.inputIds.map((r) => Array.from(r)), [[3, 4, 1], [4, 1, 0]]);
    assert.deepEqual(batch.attentionMask.map((r) => Array.from(r)), [[1, 1, 1], [1, 1, 0]]);
    const longest = tok.encodeBatch(['a b a b', 'b'], { padding: 'longest', truncate: false, padId: 0 });
    assert.deepEqual(longest.inputIds.map((r) => Array.from(r)), [[3, 4, 3, 4, 1], [4, 1, 0, 0, 0]]);
    assert.throws(() => tok.encode('a', 0), /no room for the 1 special tokens/);
    assert.throws(() => tok.encodeBatch(['a'], { padding: 'max_length', truncate: false, padId: 0 }), /needs maxLength/);
  });

  it('decodes through the decoder, optionally skipping special tokens', () => {
    assert.equal(tok.decode([3, 4, 1, 0]), 'a b</s><pad>');
    assert.equal(tok.decode([3, 4, 1, 0], true), 'a b');
  });

  it('registers config added tokens first and missing special tokens at the next free id', () => {
    const json = smallT5();
    const withConfig = Tokenizer.fromJson(json, {
      configAddedTokens: [{ id: 3, content: '▁a', special: false, normalized: true, lstrip: false, rstrip: false, singleWord: false }],
      specialTokens: ['</s>', '<extra_id_0>'],
    });
    assert.equal(withConfig.tokenToId('<extra_id_0>'), 7);
    assert.deepEqual(withConfig.encode('<extra_id_0>c'), [7, 5, 6, 1]);
    assert.equal(withConfig.idToToken(1), '</s>');
  });

  it('refuses unsupported models', () => {
    assert.throws(() => Tokenizer.fromJson({ ...smallT5(), model: { type: 'WordPiece', vocab: {} } }), /"WordPiece" is not supported/);
  });
});
