import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildNormalizer } from './normalizers';

describe('normalizers', () => {
  it("runs CLIP's sequence: NFC, whitespace runs to one space, lower case", () => {
    const clip = buildNormalizer({
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    })!;
    assert.equal(clip('  Cafe\u0301\t\n\u0085ΟΔΟΣ\ufeff '), ' café οδοσ\ufeff ');
  });

  it('replaces literal strings and keeps $ in the content literal', () => {
    const replace = buildNormalizer({ type: 'Replace', pattern: { String: '..' }, content: '$&' })!;
    assert.equal(replace('a..b...c'), 'a$&b$&.c');
  });

  it('implements Strip, StripAccents, Prepend and the Unicode forms', () => {
    assert.equal(buildNormalizer({ type: 'Strip', strip_left: true, strip_right: false })!('  a  '), 'a  ');
    assert.equal(buildNormalizer({ type: 'StripAccents' })!('e\u0301a\u0308'), 'ea');
    assert.equal(buildNormalizer({ type: 'Prepend', prepend: '▁' })!('a'), '▁a');
    assert.equal(buildNormalizer({ type: 'Prepend', prepend: '▁' })!(''), '');
    assert.equal(buildNormalizer({ type: 'NFKC' })!('ﬁ'), 'fi');
    assert.equal(buildNormalizer({ type: 'NFD' })!('é').length, 2);
  });

  it('treats an empty Precompiled charsmap as no normalizer, as transformers does', () => {
    assert.equal(buildNormalizer({ type: 'Precompiled', precompiled_charsmap: '' }), null);
    assert.equal(buildNormalizer(null), null);
  });

  it('refuses unknown normalizers and malformed fields', () => {
    assert.throws(() => buildNormalizer({ type: 'BertNormalizer' }), /"BertNormalizer" is not supported/);
    assert.throws(() => buildNormalizer({ type: 'Replace', pattern: { Regex: '\\s' } }), /"content"/);
    assert.throws(() => buildNormalizer({ type: 'Replace', pattern: 'x', content: '' }), /"pattern"/);
  });
});
