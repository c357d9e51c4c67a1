import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isComplete } from './is-complete.js';

describe('isComplete', () => {
  it('says complete for valid code', () => {
    for (const code of ['', '1 + 1', 'const x = 5', 'function f() { return 1 }', 'for (const i of [1]) {}\n', 'Math.floor?']) {
      assert.deepEqual(isComplete(code), { status: 'complete' }, code);
    }
  });

  it('says incomplete, with an indent per open bracket, when more input could complete it', () => {
    assert.deepEqual(isComplete('function f() {'), { status: 'incomplete', indent: '  ' });
    assert.deepEqual(isComplete('class A {\n  m() {'), { status: 'incomplete', indent: '    ' });
    assert.deepEqual(isComplete('1 +'), { status: 'incomplete', indent: '' });
    for (const code of ['foo(', '`template ${', '/* comment', 'const a = [1,\n', 'if (x)']) assert.equal(isComplete(code).status, 'incomplete', code);
  });

  it('says invalid for errors before the end and strings that cannot continue', () => {
    for (const code of ['x = )', '}', 'let = = 1', "'unterminated", 'const 1x = 2']) assert.deepEqual(isComplete(code), { status: 'invalid' }, code);
  });
});
