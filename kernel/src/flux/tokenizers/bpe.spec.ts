import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BpeModel } from './bpe';

function model(vocab: string[], merges: string[], options: Partial<ConstructorParameters<typeof BpeModel>[2]> = {}): BpeModel {
  return BpeModel.fromJson({
    type: 'BPE',
    vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
    merges,
    unk_token: '<unk>',
    end_of_word_suffix: '</w>',
    continuing_subword_prefix: '',
    fuse_unk: options.fuseUnk ?? false,
    byte_fallback: options.byteFallback ?? false,
    dropout: null,
  });
}

describe('BpeModel', () => {
  const vocab = ['<unk>', 'a', 'b', 'c', 'a</w>', 'b</w>', 'c</w>', 'ab', 'bc</w>', 'abc</w>', 'aa', 'aa</w>', 'ab</w>'];
  const bpe = model(vocab, ['a b', 'b c</w>', 'ab c</w>', 'a a', 'a a</w>']);
  const tokens = (word: string): string[] => bpe.tokenize(word).map((id) => bpe.idToToken(id)!);

  it('glues the end-of-word suffix to the last character and applies merges by rank', () => {
    assert.deepEqual(tokens('abc'), ['abc</w>']);
    assert.deepEqual(tokens('ab'), ['a', 'b</w>']);
    assert.deepEqual(tokens('ca'), ['c', 'a</w>']);
  });

  it('merges the leftmost pair first among equal ranks', () => {
    assert.deepEqual(tokens('aaa'), ['aa', 'a</w>']);
    assert.deepEqual(tokens('aaaa'), ['aa', 'aa</w>']);
  });

  it('maps unknown characters to the unk token, fused or not', () => {
    assert.deepEqual(tokens('axyb'), ['a', '<unk>', '<unk>', 'b</w>']);
    const fused = model(vocab, ['a b'], { fuseUnk: true });
    assert.deepEqual(fused.tokenize('axyb').map((id) => fused.idToToken(id)), ['a', '<unk>', 'b</w>']);
  });

  it('falls back to <0xXX> byte tokens when asked and they exist', () => {
    const withBytes = model([...vocab, '<0x78>', '<0x3C>', '<0x2F>', '<0x77>', '<0x3E>'], [], { byteFallback: true });
    assert.deepEqual(withBytes.tokenize('ax').map((id) => withBytes.idToToken(id)), ['a', '<0x78>', '<0x3C>', '<0x2F>', '<0x77>', '<0x3E>']);
  });

  it('refuses merges whose parts or result are not in the vocabulary', () => {
    assert.throws(() => model(['a', 'b'], ['a b']), /makes "ab", which is not in the vocabulary/);
    assert.throws(() => model(['a', 'ab'], ['a x']), /missing from the vocabulary/);
    assert.throws(() => model(['a'], ['a']), /merges\[0\]/);
    assert.throws(() => BpeModel.fromJson({ type: 'BPE', vocab: {}, merges: [], dropout: 0.1 }), /dropout/);
  });
});
