import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { helpRequest } from './cell-compiler.js';
import { CodeIntel } from './code-intel.js';

// One service for the file: creating it loads lib.d.ts and @types/node (about a second).
const intel = new CodeIntel({ cwd: tmpdir(), packageTypes: join(__dirname, '..', 'runtime', 'index.d.ts') });

describe('CodeIntel', () => {
  it('completes members with the typed prefix only: Math.fl gives exactly floor', () => {
    const reply = intel.complete('Math.fl', 7);
    assert.deepEqual(reply.matches, ['floor']);
    assert.deepEqual([reply.cursor_start, reply.cursor_end], [5, 7]);
    assert.deepEqual(reply.metadata._jupyter_types_experimental[0], { start: 5, end: 7, text: 'floor', type: 'function' });
  });

  it('knows the declarations of executed cells, the newest one winning', () => {
    intel.recordExecution('/** How many zebras. */\nconst zebraCount = 5;\nimport { readFileSync } from "node:fs";');
    intel.recordExecution("const zebraCount = 'five';");
    assert.deepEqual(intel.complete('zebraC', 6).matches, ['zebraCount']);
    assert.ok(intel.complete('zebraCount.toUpperC', 19).matches.includes('toUpperCase'));
    assert.deepEqual(intel.complete('readFileS', 9).matches, ['readFileSync']);
    assert.deepEqual(intel.complete('display.ht', 10).matches, ['html']);
  });

  it('counts the cursor in code points', () => {
    const code = "'😀'; Math.fl";
    const reply = intel.complete(code, [...code].length);
    assert.deepEqual(reply.matches, ['floor']);
    assert.deepEqual([reply.cursor_start, reply.cursor_end], [10, 12]);
  });

  it('completes module names in import specifiers', () => {
    const bare = "import {} from 'node:f";
    assert.deepEqual(intel.complete(bare, bare.length).matches, ['node:fs', 'node:fs/promises']);
    const subpath = "import {} from 'node:fs/pro";
    const reply = intel.complete(subpath, subpath.length);
    assert.deepEqual([reply.matches, reply.cursor_start], [['promises'], subpath.length - 3]);
  });

  it('inspects the name at or before the cursor, or the callee of an open call', () => {
    const floor = intel.inspect('Math.floor', 10, 0);
    assert.equal(floor.found, true);
    assert.match(floor.data['text/plain'], /^\(method\) Math\.floor\(x: number\): number\n\nReturns the greatest integer/);
    assert.match(floor.data['text/markdown'], /^```typescript\n/);
    assert.equal(intel.inspect('Math.floor(1.5, ', 16, 0).found, true);
    assert.match(intel.inspect('zebraCount', 3, 0).data['text/plain'], /const zebraCount: "five"/);
    assert.equal(intel.inspect('   ', 1, 0).found, false);
  });

  it('recognises the help syntax expression? / expression??', () => {
    assert.deepEqual(helpRequest('Math.floor?'), { expression: 'Math.floor', detailLevel: 0 });
    assert.deepEqual(helpRequest('  display.html??\n'), { expression: 'display.html', detailLevel: 1 });
    assert.equal(helpRequest('a ? b : c'), undefined);
    assert.equal(helpRequest('const x = 1?'), undefined);
    assert.equal(helpRequest('?'), undefined);
  });
});
