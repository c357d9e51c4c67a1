import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { byteLevelEncode } from './byte-level';
import { buildDecoder } from './decoders';

const decode = (spec: Parameters<typeof buildDecoder>[0], tokens: string[]): string => buildDecoder(spec)!(tokens).join('');

describe('decoders', () => {
  it('joins byte-level tokens back into UTF-8 text', () => {
    assert.equal(decode({ type: 'ByteLevel' }, [byteLevelEncode('café</w>'), byteLevelEncode(' 日本')]), 'café</w> 日本');
  });

  it('turns ▁ into spaces, dropping every ▁ of the first token', () => {
    const metaspace = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true };
    assert.equal(decode(metaspace, ['▁Hey', '▁friend!', '</s>']), 'Hey friend!</s>');
    assert.equal(decode(metaspace, ['▁a▁b', '▁c']), 'ab c');
    assert.equal(decode({ type: 'Metaspace', replacement: '▁', add_prefix_space: false }, ['▁a']), ' a');
  });

  it('implements Replace, Strip, Fuse and ByteFallback', () => {
    assert.equal(decode({ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, ['▁a', '▁b']), ' a b');
    assert.deepEqual(buildDecoder({ type: 'Strip', content: ' ', start: 1, stop: 0 })!([' a', '  b']), ['a', ' b']);
    assert.deepEqual(buildDecoder({ type: 'Fuse' })!(['a', 'b']), ['ab']);
    const byteFallback = buildDecoder({ type: 'ByteFallback' })!;
    assert.deepEqual(byteFallback(['a', '<0xE6>', '<0x97>', '<0xa5>', 'b', '<0xFF>']), ['a', '日', 'b', '\ufffd']);
    assert.deepEqual(byteFallback(['<0xE6>', '<0x97>']), ['\ufffd', '\ufffd']);
  });

  it('refuses unknown decoders', () => {
    assert.throws(() => buildDecoder({ type: 'WordPiece' }), /"WordPiece" is not supported/);
  });
});
