import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UnigramModel } from './unigram';

const VOCAB: [string, number][] = [
  ['<unk>', 0],
  ['▁', -1],
  ['a', -2],
  ['b', -2],
  ['ab', -3],
  ['▁ab', -2.5],
  ['c', -1],
  ['d', -1],
  ['cd', -2],
];

describe('UnigramModel', () => {
  const model = new UnigramModel(VOCAB, 0, false);
  const pieces = (text: string): string[] => model.tokenize(text).map((id) => model.idToToken(id)!);

  it('finds the best-scoring segmentation', () => {
    assert.deepEqual(pieces('▁ab'), ['▁ab']);
    assert.deepEqual(pieces('abab'), ['ab', 'ab']);
    assert.deepEqual(model.segment(''), []);
  });

  it('keeps the first candidate on a tie (pieces in increasing length)', () => {
    // 'cd' (-2) is reached first; 'c' + 'd' (-1 + -1) only ties it.
    assert.deepEqual(model.segment('cd'), ['cd']);
  });

  it('scores uncovered characters min_score - 10 and fuses consecutive unknowns', () => {
    assert.deepEqual(model.segment('▁xyab'), ['▁', 'xy', 'ab']);
    assert.deepEqual(model.tokenize('▁xyab'), [1, 0, 4]);
    assert.deepEqual(model.segment('a😀b'), ['a', '😀', 'b']);
  });

  it('uses <0xXX> pieces for unknowns when byte fallback is on', () => {
    const bytes = new UnigramModel([...VOCAB, ['<0x78>', -5], ['<0x79>', -5]], 0, true);
    assert.deepEqual(bytes.tokenize('axy').map((id) => bytes.idToToken(id)), ['a', '<0x78>', '<0x79>']);
    assert.deepEqual(bytes.tokenize('az').map((id) => bytes.idToToken(id)), ['a', '<unk>']);
  });

  it('needs an unk id for uncovered text', () => {
    assert.throws(() => new UnigramModel(VOCAB, null, false).tokenize('x'), /no unk_id/);
    assert.throws(() => new UnigramModel([], 0, false), /empty/);
    assert.throws(() => UnigramModel.fromJson({ type: 'Unigram', vocab: [['a']], unk_id: 0 }), /vocab\[0\]/);
  });
});
