#!/usr/bin/env node
// Turns a fluxlab notebook's code cells into one CommonJS script (imports hoisted, the cells' code in order inside
// one async function, each cell's last expression printed as the kernel would display it, in short), so that a
// notebook's GPU path can run where no Jupyter stack or kernel dependencies exist: the GPU machine (gpu-pack.sh
// writes .gpu/notebooks/*.js, `gpu-test.sh notebooks` runs them). A check that the cells run, not a renderer.
//   node scripts/notebook-script.mjs NOTEBOOK.ipynb OUT.js
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ts = require('typescript');
const [inFile, outFile] = process.argv.slice(2);
if (!inFile || !outFile) {
  console.error('usage: node scripts/notebook-script.mjs NOTEBOOK.ipynb OUT.js');
  process.exit(2);
}
const notebook = JSON.parse(readFileSync(inFile, 'utf8'));
const imports = [];
const imported = new Set();
const cells = [];
notebook.cells
  .filter((cell) => cell.cell_type === 'code')
  .forEach((cell, i) => {
    const src = Array.isArray(cell.source) ? cell.source.join('') : cell.source;
    const file = ts.createSourceFile(`cell${i + 1}.ts`, src, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
    let body = '';
    file.statements.forEach((statement, j) => {
      const text = src.slice(statement.getFullStart(), statement.getEnd());
      if (ts.isImportDeclaration(statement)) {
        imports.push(text.trim());
        const bindings = statement.importClause?.namedBindings;
        if (bindings && ts.isNamedImports(bindings)) bindings.elements.forEach((e) => imported.add(e.name.text));
      }
      else if (j === file.statements.length - 1 && ts.isExpressionStatement(statement)) {
        const expression = src.slice(statement.expression.getStart(), statement.expression.getEnd());
        body += `\nconsole.log('[cell ${i + 1}] =>', __show(${expression}));`;
      } else body += text;
    });
    cells.push(`console.log('[cell ${i + 1}]');\n${body}\n`);
  });
// The kernel's cell globals (protocol/code-intel.ts CELL_GLOBALS): display and clearOutput from the package, whose
// output goes to the console here as its text/plain part; input()/password() have no stdin to ask.
const program = `${imports.join('\n')}
${['display', 'clearOutput'].filter((g) => !imported.has(g)).map((g) => `const ${g} = require('fluxlab').${g};`).join('\n')}
const input = async (): Promise<string> => '';
const password = input;
const __show = (v: unknown): string => {
  try {
    return typeof v === 'string' ? v : (JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x), 1) ?? String(v)).slice(0, 3000);
  } catch {
    return String(v);
  }
};
(async () => {
${cells.join('\n')}
console.log('NOTEBOOK OK');
})().catch((e) => {
  console.error('NOTEBOOK FAILED', e);
  process.exit(1);
});
`;
const out = ts.transpileModule(program, {
  compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  reportDiagnostics: true,
});
if (out.diagnostics?.length) {
  console.error(ts.formatDiagnostics(out.diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => '', getNewLine: () => '\n' }));
  process.exit(1);
}
writeFileSync(outFile, out.outputText);
