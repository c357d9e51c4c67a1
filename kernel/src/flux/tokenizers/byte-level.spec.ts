import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, byteLevelDecode, byteLevelEncode } from './byte-level';

describe('byte-level table', () => {
  it('maps the 256 bytes to 256 distinct visible characters', () => {
    assert.equal(new Set(BYTE_TO_CHAR).size, 256);
    assert.equal(BYTE_TO_CHAR[0x41], 'A');
    assert.equal(BYTE_TO_CHAR[0x20], 'Ġ');
    assert.equal(BYTE_TO_CHAR[0x0a], 'Ċ');
    assert.equal(BYTE_TO_CHAR[0x00], 'Ā');
    assert.equal(BYTE_TO_CHAR[0xad], 'Ń');
    assert.equal(CHAR_TO_BYTE.get('Ġ'), 0x20);
  });

  it('round-trips text through encode and decode', () => {
    for (const text of ['hello world', 'café 日本 😀', '\x00\x7f\u0085']) {
      assert.equal(byteLevelDecode([byteLevelEncode(text)]), text);
    }
    assert.equal(byteLevelEncode('é'), 'Ã©');
  });

  it('rejoins characters split across tokens and replaces cut ones with U+FFFD', () => {
    const bytes = byteLevelEncode('日');
    assert.equal(byteLevelDecode([bytes[0], bytes.slice(1)]), '日');
    assert.equal(byteLevelDecode([bytes.slice(0, 2), 'a']), '\ufffda');
  });

  it('passes through tokens holding characters outside the table', () => {
    assert.equal(byteLevelDecode(['a', '日本', 'b']), 'a日本b');
  });
});
