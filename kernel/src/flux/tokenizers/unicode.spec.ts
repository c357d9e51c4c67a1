import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileTokenizerRegex, isWhiteSpace, lowercaseCharwise, pythonStrip, stripWhiteSpace, utf8ByteLength } from './unicode';

describe('unicode', () => {
  it('uses the White_Space property, not JavaScript\'s \\s', () => {
    assert.ok(isWhiteSpace(0x85), 'U+0085 is White_Space (JS \\s misses it)');
    assert.ok(!isWhiteSpace(0xfeff), 'U+FEFF is not White_Space (JS \\s matches it)');
    assert.ok(!isWhiteSpace(0x200b), 'zero-width space is not White_Space');
    for (const cp of [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0, 0x1680, 0x2000, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]) {
      assert.ok(isWhiteSpace(cp), cp.toString(16));
    }
  });

  it('translates Oniguruma \\s, \\S and \\w to their Unicode meanings', () => {
    const ws = compileTokenizerRegex('\\s+');
    assert.deepEqual('a\u0085b\ufeffc'.split(ws), ['a', 'b\ufeffc']);
    const clip = compileTokenizerRegex("<\\|endoftext\\|>|'s|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+");
    assert.deepEqual('it\'s <|endoftext|> 42\ufeff!'.match(clip), ['it', "'s", '<|endoftext|>', '4', '2', '\ufeff!']);
    const lookahead = compileTokenizerRegex('\\s+(?!\\S)|\\s+');
    assert.deepEqual('a   b'.match(lookahead), ['  ', ' ']);
    assert.deepEqual('é_1'.match(compileTokenizerRegex('\\w+')), ['é_1']);
  });

  it('drops identity escapes the u flag rejects and refuses untranslatable classes', () => {
    assert.deepEqual("a'b".match(compileTokenizerRegex("\\'")), ["'"]);
    assert.throws(() => compileTokenizerRegex('[\\S]'), /inside a character class/);
    assert.throws(() => compileTokenizerRegex('[a[b]]'), /nested/);
    assert.throws(() => compileTokenizerRegex('\\'), /lone backslash/);
  });

  it('lower-cases per character like Rust: final sigma stays σ', () => {
    assert.equal(lowercaseCharwise('ΟΔΟΣ ΣΑ'), 'οδοσ σα');
    assert.equal('ΟΔΟΣ'.toLowerCase(), 'οδος', 'JavaScript applies the final-sigma rule');
    assert.equal(lowercaseCharwise('İSTANBUL Ǆ'), 'i̇stanbul ǆ');
    assert.equal(lowercaseCharwise('HELLO'), 'hello');
  });

  it('strips like CPython str.strip and Rust trim', () => {
    assert.equal(pythonStrip('\x1c\u3000 a b \x85\x1f'), 'a b');
    assert.equal(pythonStrip('\ufeffa'), '\ufeffa');
    assert.equal(stripWhiteSpace('  a  ', true, false), 'a  ');
    assert.equal(stripWhiteSpace('  a  ', false, true), '  a');
  });

  it('counts UTF-8 bytes', () => {
    assert.equal(utf8ByteLength('aé日😀'), 1 + 2 + 3 + 4);
  });
});
