import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildPreTokenizer, splitPiece, type Piece, type PreTokenizer } from './pre-tokenizers';

const texts = (pieces: Piece[]): string[] => pieces.map((p) => p.text);
const run = (pre: PreTokenizer, text: string): string[] => texts(pre([{ text, first: true }]));

describe('pre-tokenizers', () => {
  it('splits with every delimiter behaviour as tokenizers does', () => {
    const piece = { text: 'The-final--countdown', first: true };
    const dash = /-/gu;
    assert.deepEqual(texts(splitPiece(piece, dash, 'Removed')), ['The', 'final', 'countdown']);
    assert.deepEqual(texts(splitPiece(piece, dash, 'Isolated')), ['The', '-', 'final', '-', '-', 'countdown']);
    assert.deepEqual(texts(splitPiece(piece, dash, 'MergedWithPrevious')), ['The-', 'final-', '-', 'countdown']);
    assert.deepEqual(texts(splitPiece(piece, dash, 'MergedWithNext')), ['The', '-final', '-', '-countdown']);
    assert.deepEqual(texts(splitPiece(piece, dash, 'Contiguous')), ['The', '-', 'final', '--', 'countdown']);
    assert.deepEqual(texts(splitPiece(piece, dash, 'Removed', true)), ['-', '-', '-']);
  });

  it("keeps only CLIP pattern matches (Split, invert, Removed) then byte-level maps GPT-2 pieces", () => {
    const pre = buildPreTokenizer({
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: "<\\|endoftext\\|>|'s|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    })!;
    assert.deepEqual(run(pre, "it's 42 <|endoftext|> café"), ['it', "'s", '4', '2', '<|', 'endoftext', '|>', 'cafÃ©']);
  });

  it('splits on Unicode whitespace and marks words with Metaspace', () => {
    const pre = buildPreTokenizer({
      type: 'Sequence',
      pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }],
    })!;
    assert.deepEqual(run(pre, ' Hey\u0085friend!\ufeffx  ▁y z▁▁w'), ['▁Hey', '▁friend!\ufeffx', '▁y', '▁z', '▁', '▁w']);
  });

  it('reads Metaspace files from before prepend_scheme, and honours "never" and "first"', () => {
    const legacy = buildPreTokenizer({ type: 'Metaspace', replacement: '▁', add_prefix_space: true })!;
    assert.deepEqual(run(legacy, 'Hey   friend'), ['▁Hey', '▁', '▁', '▁friend']);
    const never = buildPreTokenizer({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: false })!;
    assert.deepEqual(run(never, 'a b'), ['a▁b']);
    const first = buildPreTokenizer({ type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first' }] })!;
    assert.deepEqual(run(first, 'a b'), ['▁a', 'b']);
  });

  it('splits words and punctuation with Whitespace', () => {
    assert.deepEqual(run(buildPreTokenizer({ type: 'Whitespace' })!, 'Hey friend!  How are_you?'), ['Hey', 'friend', '!', 'How', 'are_you', '?']);
  });

  it('refuses unknown pre-tokenizers', () => {
    assert.throws(() => buildPreTokenizer({ type: 'Digits' }), /"Digits" is not supported/);
    assert.throws(() => buildPreTokenizer({ type: 'Split', pattern: { String: 'x' }, behavior: 'Sideways' }), /unknown behavior/);
  });
});
