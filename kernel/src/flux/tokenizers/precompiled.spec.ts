import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { PrecompiledCharsmap } from './precompiled';
import { fixturePath } from './test-fixtures';

function nmtNfkc(): PrecompiledCharsmap {
  const spec = JSON.parse(readFileSync(fixturePath('tiny-flux', 'tokenizer_2', 'tokenizer.json'), 'utf8'));
  return PrecompiledCharsmap.fromBase64(spec.normalizer.precompiled_charsmap);
}

describe('PrecompiledCharsmap (sentencepiece nmt_nfkc)', () => {
  const map = nmtNfkc();

  it('applies NFKC-style replacements found in the double-array trie', () => {
    assert.equal(map.normalize('ｆｕｌｌ ＡＢＣ！'), 'full ABC!');
    assert.equal(map.normalize('ﬁ ① ㎏ … ǅ'), 'fi 1 kg ... Dž');
    assert.equal(map.normalize('e\u0301'), 'é');
  });

  it('maps whitespace and invisible characters as nmt_nfkc does', () => {
    assert.equal(map.normalize('a\tb\nc\u3000d\u00a0e'), 'a b c d e');
    assert.equal(map.normalize('a\u200bb\ufeffc'), 'a b c');
  });

  it('treats a short grapheme cluster as one key, replacing it by its shortest matching prefix', () => {
    // tokenizers' quirk: 'Ａ' + combining acute is one cluster under 6 bytes whose prefix 'Ａ' is a key → 'A' only.
    assert.equal(map.normalize('\uff21\u0301'), 'A');
    // CR LF is one cluster; its prefix CR maps to a space, which replaces the pair.
    assert.equal(map.normalize('a\r\nb'), 'a b');
  });

  it('leaves characters without a rule, and stops lookups at NUL', () => {
    assert.equal(map.normalize('abc é 日本'), 'abc é 日本');
    assert.equal(map.transform('x'), null);
    assert.equal(map.normalize('x\u0000y'), 'x\u0000y');
  });

  it('refuses malformed charsmaps', () => {
    assert.throws(() => PrecompiledCharsmap.fromBytes(new Uint8Array([1, 0])), /no header/);
    assert.throws(() => PrecompiledCharsmap.fromBytes(new Uint8Array([8, 0, 0, 0, 1, 2])), /does not fit/);
    assert.throws(() => PrecompiledCharsmap.fromBytes(new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0, 0xff])), /not valid UTF-8/);
  });
});
