import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import vm = require('node:vm');
import { CELL_ARGUMENTS_KEY, compileCell, SCOPE_SPECIFIER, type CompiledCell } from './cell-compiler.js';

function compile(code: string, scope: string[] = []): CompiledCell {
  const result = compileCell(code, scope);
  assert.ok(result.ok, JSON.stringify(!result.ok && result.diagnostics));
  return result.cell;
}

describe('compileCell', () => {
  it('turns top-level declarations into exports of the scope and reports their names', () => {
    const cell = compile('const a = 1, { b, c: [d] } = obj;\nlet e;\nvar f = 2;\nfunction g() {}\nclass H {}\nenum I { X }\nnamespace J { export const k = 1 }\ninterface T {}\ntype U = number');
    assert.deepEqual(cell.declaredNames, ['a', 'b', 'd', 'e', 'f', 'g', 'H', 'I', 'J']);
    assert.match(cell.javascript, /exports\.a = 1/);
    assert.match(cell.javascript, /exports\.g = g;/);
    assert.match(cell.javascript, /exports\.H = H;/);
    assert.doesNotMatch(cell.javascript, /interface|type U/);
  });

  it('imports earlier names from the scope unless the cell redeclares them', () => {
    const cell = compile('const x = y + 1;\nx', ['x', 'y']);
    assert.match(cell.javascript, new RegExp(`require\\("${SCOPE_SPECIFIER}"\\)`));
    assert.match(cell.javascript, /exports\.x = [\w$]+\.y \+ 1/);
    assert.doesNotMatch(cell.javascript, /[\w$]+_1\.x/);
  });

  it('converts imports into persistent declarations with esModuleInterop semantics', () => {
    const cell = compile("import fs, { readFileSync as read, type Stats } from 'node:fs';\nimport * as path from 'node:path';\nimport type { X } from 'x';\nimport 'side-effect';\nimport os = require('node:os');");
    assert.deepEqual(cell.declaredNames, ['fs', 'read', 'path', 'os']);
    assert.match(cell.javascript, /exports\.fs = __fluxlab\.importDefault\(require\('node:fs'\)\)/);
    assert.match(cell.javascript, /exports\.read = require\('node:fs'\)\.readFileSync/);
    assert.match(cell.javascript, /exports\.path = __fluxlab\.importStar\(require\('node:path'\)\)/);
    assert.match(cell.javascript, /require\("side-effect"\)/);
    assert.doesNotMatch(cell.javascript, /Stats|require\("x"\)/);
  });

  it('captures only a final expression statement as the result', () => {
    assert.equal(compile('1 + 1').hasResult, true);
    assert.match(compile('1, 2').javascript, /__fluxlab\.result\(\(1, 2\)\)/);
    assert.equal(compile('const x = 1').hasResult, false);
    assert.equal(compile('if (true) { 1 }').hasResult, false);
    assert.equal(compile('1;;').hasResult, true);
  });

  it('reads a cell that is an object literal as an expression, like the Node REPL', () => {
    const cell = compile('{ a: 1, b: [2] }');
    assert.equal(cell.hasResult, true);
    assert.match(cell.javascript, /result\(\(\(\{ a: 1, b: \[2\] \}\)\)\)/);
    assert.equal(compile('{ let a = 1 }').hasResult, false);
  });

  it('runs cells with top-level await as async functions, and only those', () => {
    assert.equal(compile('await 1').isAsync, true);
    assert.equal(compile('for await (const x of []) {}').isAsync, true);
    assert.equal(compile('async function f() { await 1 }\nconst g = async () => await 2').isAsync, false);
    assert.match(compile('await 1').script, /^\(async function/);
    assert.match(compile('1').script, /^\(function/);
  });

  it('starts every loop body with an interrupt check, nested functions included', () => {
    const js = compile('while (true) {}\nfor (;;) x++\ndo {} while (0)\nfor (const a of []) {}\nfor (const k in {}) {}\nfunction f() { while (1) {} }').javascript;
    assert.equal(js.match(/__fluxlab\.tick\(\)/g)?.length, 6);
  });

  it('drops re-exports, which would pin non-configurable getters on the scope', () => {
    const cell = compile("export { a }\nexport * from 'm'\nexport const b = 1");
    assert.doesNotMatch(cell.javascript, /require\("m"\)|defineProperty\(exports, "a"/);
    assert.deepEqual(cell.declaredNames, ['b']);
  });

  it('reports syntax errors at their position in the cell', () => {
    const result = compileCell('const ok = 1;\nconst bad = (1 +;', []);
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.diagnostics[0], { message: 'Expression expected.', line: 2, column: 17 });
  });

  it('maps positions in the compiled script back to the cell, despite the rewrites on line 1', () => {
    const code = "import { a } from 'm'; const z = 1;\nfunction f() {\n  return missing.x\n}";
    const cell = compile(code, ['q']);
    const lines = cell.script.split('\n');
    const line = lines.findIndex((l) => l.includes('missing.x'));
    const column = lines[line].indexOf('missing') + 1;
    // V8 numbers the script's lines from 0 on the wrapper line (lineOffset -1).
    assert.deepEqual(cell.cellPosition(line, column), { line: 3, column: 10 });
    const zLine = lines.findIndex((l) => l.includes('exports.z = 1'));
    assert.deepEqual(cell.cellPosition(zLine, lines[zLine].indexOf('exports.z') + 1), { line: 1, column: 30 }); // the `z` of `const z = 1`
  });
});

describe('the direct path for plain JavaScript cells', () => {
  function scope(): Record<string, unknown> {
    return {
      x: 2,
      xs: [1, 2, 3],
      obj: { a: { b: 5 } },
      f(this: unknown) {
        return this === undefined ? 'no this' : 'this';
      },
      tag: (strings: TemplateStringsArray, ...values: unknown[]) => `${strings.raw.join('|')}:${values.join(',')}`,
    };
  }

  async function run(cell: CompiledCell, names: Record<string, unknown>): Promise<unknown> {
    let result: unknown;
    const helpers = { result: (v: unknown) => (result = v), tick: () => undefined, importDefault: (m: unknown) => m, importStar: (m: unknown) => m };
    const cellRequire = (specifier: string): unknown => (specifier === SCOPE_SPECIFIER ? names : require(specifier));
    (globalThis as Record<symbol, unknown>)[Symbol.for(CELL_ARGUMENTS_KEY)] = [names, cellRequire, { exports: names }, helpers];
    await vm.runInThisContext(cell.script);
    return result;
  }

  const cells = [
    'x + 1',
    'xs.length * x',
    'f()',
    'obj.a.b * x',
    '({ x, y: x })',
    '[x, ...xs]',
    'x = 5; x',
    'x++; x',
    'x **= 3; x',
    'typeof nothingHere',
    'tag`a${x}b`',
    'await Promise.resolve(x)',
    '`${x}px`',
    "x > 1 ? 'big' : 'small'",
    'for (x of xs) {} x',
    'while (x > 0) x--; x',
    'outer: for (;;) { break outer }',
    "switch (x) { case 2: xs.push('two'); break; default: xs.push('other') } xs",
    "try { throw 1 } catch { xs.push('caught') } finally { xs.push('finally') } xs",
    'if (x) { xs.push(x) } xs.length',
    'delete obj.a; obj',
    'x ?? 3',
    'obj?.a?.b',
    '{ a: x, [x]: xs }',
    '[x, xs] = [xs, x]; x',
  ];

  for (const code of cells) {
    it(`runs ${JSON.stringify(code)} as TypeScript's emit does`, async () => {
      const names = Object.keys(scope());
      const direct = compile(code, names);
      assert.equal(direct.path, 'javascript');
      const viaTypeScript = compileCell(code, names, { direct: false });
      assert.ok(viaTypeScript.ok && viaTypeScript.cell.path === 'typescript');
      const directScope = scope();
      const typescriptScope = scope();
      assert.deepEqual(await run(direct, directScope), await run(viaTypeScript.cell, typescriptScope));
      assert.deepEqual(JSON.stringify(directScope), JSON.stringify(typescriptScope));
    });
  }

  it('leaves declarations, functions, classes, TypeScript syntax and imports to TypeScript', () => {
    for (const code of ['const y = 1', 'xs.map((v) => v)', 'x as number', 'f<number>()', "import('node:fs')", 'this', 'try {} catch (e) {}', 'for (const v of xs) {}', 'class A {}', "import 'x'"]) {
      assert.equal(compile(code, ['x', 'xs', 'f']).path, 'typescript', code);
    }
  });

  it('maps positions through its edits', () => {
    const cell = compile('x +\n  missing.y', ['x']);
    const lines = cell.script.split('\n');
    assert.deepEqual(cell.cellPosition(2, lines[2].indexOf('missing') + 1), { line: 2, column: 3 });
  });
});
