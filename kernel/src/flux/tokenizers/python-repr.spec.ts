import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pythonListRepr, pythonStrRepr } from './python-repr';

describe('pythonStrRepr', () => {
  it('quotes like CPython', () => {
    assert.equal(pythonStrRepr('abc'), "'abc'");
    assert.equal(pythonStrRepr("it's"), '"it\'s"');
    assert.equal(pythonStrRepr('say "hi"'), "'say \"hi\"'");
    assert.equal(pythonStrRepr(`it's "x"`), "'it\\'s \"x\"'");
    assert.equal(pythonStrRepr('a\\b'), "'a\\\\b'");
  });

  it('escapes control and non-printable characters, keeps printable Unicode', () => {
    assert.equal(pythonStrRepr('\t\n\r\x00\x7f'), "'\\t\\n\\r\\x00\\x7f'");
    assert.equal(pythonStrRepr('\x85\xa0\xad'), "'\\x85\\xa0\\xad'");
    assert.equal(pythonStrRepr('\u200b\u2028\u3000\ufeff'), "'\\u200b\\u2028\\u3000\\ufeff'");
    assert.equal(pythonStrRepr('\u{e0001}'), "'\\U000e0001'");
    assert.equal(pythonStrRepr('café 日本 😀 ✨'), "'café 日本 😀 ✨'");
  });

  it('formats a list as f"{list}" does', () => {
    assert.equal(pythonListRepr(['a', "b'c", '']), `['a', "b'c", '']`);
    assert.equal(pythonListRepr([]), '[]');
  });
});
