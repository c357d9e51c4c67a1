// Compiles a TypeScript cell into a script the kernel can run with vm, so that top-level declarations persist
// across cells the way they would in one long module:
// - every top-level value declaration (const/let/var, function, class, enum, namespace, import) is turned into
//   an export, and TypeScript's CommonJS transform then rewrites every reference to it (closures included)
//   into a property of `exports`, which is the notebook's persistent scope object;
// - names earlier cells declared are imported from that scope (`import { … } from 'fluxlab:scope'`), so the
//   same transform rewrites their references too; user globals never land on globalThis;
// - imports become `export const x = require(…)` with esModuleInterop semantics, so they persist as well;
// - the last expression statement is captured as the cell's result; a cell with top-level await runs as an
//   async function, any other as a plain function (fully inside vm, where SIGINT can stop it);
// - every loop body starts with an interrupt check (compiled cells stop at once when interrupted, even after
//   an await, where vm's breakOnSigint no longer applies).
// Source positions survive through the text edits (EditedText) and TypeScript's source map.
//
// TypeScript's emit builds a type checker for every cell (about a millisecond, and much garbage). Cells that
// are plain JavaScript statements and expressions, declaring nothing (inspecting a value, calling a function,
// awaiting a generation), take a direct path with the same output semantics: names from the scope become
// `exports.name`, exactly the rewrite TypeScript would make, by text edits on the cell.
import ts = require('typescript');
import { LineIndex, SourceMapLookup } from './source-map.js';
import { EditedText, type TextEdit } from './text-edits.js';

/** The module id under which a cell imports the notebook scope (see cell-modules.ts). */
export const SCOPE_SPECIFIER = 'fluxlab:scope';
/** The global slot through which the kernel hands a running cell its arguments (see executor.ts). */
export const CELL_ARGUMENTS_KEY = 'fluxlab.cellArguments';
/** Name of the per-cell helper parameter (result capture, interrupt check, import interop). */
export const HELPERS = '__fluxlab';

export interface CompileDiagnostic {
  message: string;
  /** 1-based, in the cell as typed. */
  line: number;
  column: number;
}

export interface CompiledCell {
  /** The script for vm: a function expression applied to the cell arguments. */
  script: string;
  /** TypeScript's output, before the function wrapper (for tests and debugging). */
  javascript: string;
  isAsync: boolean;
  hasResult: boolean;
  /** 'javascript': compiled without TypeScript's emit (see above). */
  path: 'typescript' | 'javascript';
  /** Value names the cell declares at top level; they join the notebook scope. */
  declaredNames: string[];
  /** Maps a 1-based (line, column) in `script` as V8 reports it (lineOffset -1) to the cell, 1-based. */
  cellPosition(line: number, column: number): { line: number; column: number } | undefined;
}

export type CompileResult = { ok: true; cell: CompiledCell } | { ok: false; diagnostics: CompileDiagnostic[] };

const COMPILER_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
  esModuleInterop: true,
  alwaysStrict: true,
  sourceMap: true,
  useDefineForClassFields: true,
};

interface ParseDiagnosticsCarrier {
  parseDiagnostics?: readonly ts.Diagnostic[];
}

/** Syntax errors found by the parser (what transpileModule would report, without emitting). */
export function parseDiagnostics(sourceFile: ts.SourceFile): readonly ts.Diagnostic[] {
  return (sourceFile as ts.SourceFile & ParseDiagnosticsCarrier).parseDiagnostics ?? [];
}

export function parseCell(code: string): ts.SourceFile {
  return ts.createSourceFile('cell.ts', code, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
}

/**
 * IPython's help syntax: a cell that is just `expression?` (or `expression??` for more detail) asks for the
 * inspection of the expression in the pager. Never valid TypeScript, so no program is taken for one.
 */
export function helpRequest(code: string): { expression: string; detailLevel: number } | undefined {
  const match = /^([\s\S]*?)(\?{1,2})\s*$/.exec(code);
  if (match === null) return undefined;
  const expression = match[1].trim();
  if (expression === '' || /[?:]$/.test(expression)) return undefined;
  const sourceFile = parseCell(expression);
  const statement = sourceFile.statements.length === 1 ? sourceFile.statements[0] : undefined;
  if (statement === undefined || !ts.isExpressionStatement(statement) || parseDiagnostics(sourceFile).length > 0) return undefined;
  return { expression, detailLevel: match[2].length - 1 };
}

function hasModifier(node: ts.Node, kind: ts.SyntaxKind): boolean {
  return ts.canHaveModifiers(node) && (ts.getModifiers(node)?.some((m) => m.kind === kind) ?? false);
}

function bindingNames(name: ts.BindingName, out: string[]): void {
  if (ts.isIdentifier(name)) {
    out.push(name.text);
    return;
  }
  for (const element of name.elements) {
    if (ts.isBindingElement(element)) bindingNames(element.name, out);
  }
}

/** Top-level `await` (or `for await`, `await using`) outside any function: the cell must run as async. */
function hasTopLevelAwait(sourceFile: ts.SourceFile): boolean {
  let found = false;
  const visit = (node: ts.Node): void => {
    if (found) return;
    if (ts.isFunctionLike(node) || ts.isClassStaticBlockDeclaration(node)) return;
    if (
      ts.isAwaitExpression(node) ||
      (ts.isForOfStatement(node) && node.awaitModifier !== undefined) ||
      (ts.isVariableDeclarationList(node) && (node.flags & ts.NodeFlags.AwaitUsing) === ts.NodeFlags.AwaitUsing)
    ) {
      found = true;
      return;
    }
    ts.forEachChild(node, visit);
  };
  visit(sourceFile);
  return found;
}

/** A replacement that keeps the line count of what it replaces, so later lines keep their numbers. */
function sameLines(original: string, replacement: string): string {
  return replacement + '\n'.repeat(original.split('\n').length - 1);
}

function importReplacement(node: ts.ImportDeclaration, sourceFile: ts.SourceFile, declared: string[]): string | undefined {
  const clause = node.importClause;
  if (clause === undefined || clause.isTypeOnly) return undefined; // side-effect or type-only: TypeScript handles it
  const specifier = node.moduleSpecifier.getText(sourceFile);
  const parts: string[] = [];
  if (clause.name !== undefined) {
    declared.push(clause.name.text);
    parts.push(`${clause.name.text} = ${HELPERS}.importDefault(require(${specifier}))`);
  }
  const bindings = clause.namedBindings;
  if (bindings !== undefined && ts.isNamespaceImport(bindings)) {
    declared.push(bindings.name.text);
    parts.push(`${bindings.name.text} = ${HELPERS}.importStar(require(${specifier}))`);
  } else if (bindings !== undefined) {
    const named = bindings.elements
      .filter((element) => !element.isTypeOnly)
      .map((element) => {
        declared.push(element.name.text);
        return element.propertyName === undefined
          ? element.name.text
          : `${element.propertyName.getText(sourceFile)}: ${element.name.text}`;
      });
    if (named.length > 0) parts.push(`{ ${named.join(', ')} } = require(${specifier})`);
  }
  return parts.length === 0 ? '' : `export const ${parts.join(', ')};`;
}

interface Analysis {
  edits: TextEdit[];
  declaredNames: string[];
  hasResult: boolean;
}

function analyse(sourceFile: ts.SourceFile): Analysis {
  const edits: TextEdit[] = [];
  const declared: string[] = [];
  const exportAt = (node: ts.Node): void => {
    if (!hasModifier(node, ts.SyntaxKind.ExportKeyword)) {
      const start = node.getStart(sourceFile);
      edits.push({ start, end: start, text: 'export ' });
    }
  };
  const statements = sourceFile.statements;
  for (const statement of statements) {
    if (hasModifier(statement, ts.SyntaxKind.DeclareKeyword)) continue;
    if (ts.isVariableStatement(statement)) {
      if ((statement.declarationList.flags & ts.NodeFlags.Using) !== 0) continue; // `using` stays local to the cell
      exportAt(statement);
      for (const declaration of statement.declarationList.declarations) bindingNames(declaration.name, declared);
    } else if (ts.isFunctionDeclaration(statement) || ts.isClassDeclaration(statement)) {
      if (statement.name === undefined || hasModifier(statement, ts.SyntaxKind.DefaultKeyword)) continue;
      exportAt(statement);
      declared.push(statement.name.text);
    } else if (ts.isEnumDeclaration(statement)) {
      exportAt(statement);
      declared.push(statement.name.text);
    } else if (ts.isModuleDeclaration(statement)) {
      if (!ts.isIdentifier(statement.name)) continue; // `declare module 'x'` / `declare global`
      exportAt(statement);
      declared.push(statement.name.text);
    } else if (ts.isImportEqualsDeclaration(statement)) {
      if (statement.isTypeOnly) continue;
      exportAt(statement);
      declared.push(statement.name.text);
    } else if (ts.isImportDeclaration(statement)) {
      const replacement = importReplacement(statement, sourceFile, declared);
      if (replacement !== undefined) {
        const start = statement.getStart(sourceFile);
        edits.push({ start, end: statement.end, text: sameLines(sourceFile.text.slice(start, statement.end), replacement) });
      }
    } else if (ts.isExportDeclaration(statement)) {
      // Re-exports would define non-configurable getters on the scope that a later cell could not redeclare;
      // in a notebook every top-level name is shared anyway.
      const start = statement.getStart(sourceFile);
      edits.push({ start, end: statement.end, text: sameLines(sourceFile.text.slice(start, statement.end), '') });
    }
  }

  let last: ts.Statement | undefined;
  for (let i = statements.length - 1; i >= 0; i--) {
    if (!ts.isEmptyStatement(statements[i])) {
      last = statements[i];
      break;
    }
  }
  const hasResult = last !== undefined && ts.isExpressionStatement(last);
  if (hasResult) {
    const expression = (last as ts.ExpressionStatement).expression;
    const start = expression.getStart(sourceFile);
    edits.push({ start, end: start, text: `${HELPERS}.result((` });
    edits.push({ start: expression.end, end: expression.end, text: '))' });
  }
  return { edits, declaredNames: [...new Set(declared)], hasResult };
}

/** Cells like `{ a: 1 }` are object literals, as in Node's REPL, not blocks with a label. */
function objectLiteralCell(code: string): string | undefined {
  const trimmed = code.trim();
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return undefined;
  const wrapped = `(${code})`;
  const sourceFile = parseCell(wrapped);
  if (parseDiagnostics(sourceFile).length > 0 || sourceFile.statements.length !== 1) return undefined;
  const statement = sourceFile.statements[0];
  return ts.isExpressionStatement(statement) && ts.isParenthesizedExpression(statement.expression) ? wrapped : undefined;
}

function loopInterruptChecks(context: ts.TransformationContext): ts.Transformer<ts.SourceFile> {
  const factory = context.factory;
  let loop: ts.Node = context.factory.createEmptyStatement();
  // Mapped to the loop statement, so an interrupt's traceback points at the loop.
  const check = (): ts.Statement =>
    ts.setSourceMapRange(
      factory.createExpressionStatement(
        factory.createCallExpression(factory.createPropertyAccessExpression(factory.createIdentifier(HELPERS), 'tick'), undefined, []),
      ),
      ts.getSourceMapRange(ts.getOriginalNode(loop)),
    );
  const withCheck = (body: ts.Statement): ts.Statement =>
    ts.isBlock(body) ? factory.updateBlock(body, [check(), ...body.statements]) : factory.createBlock([check(), body], true);
  const visit = (node: ts.Node): ts.Node => {
    const visited = ts.visitEachChild(node, visit, context);
    loop = node;
    if (ts.isWhileStatement(visited)) return factory.updateWhileStatement(visited, visited.expression, withCheck(visited.statement));
    if (ts.isDoStatement(visited)) return factory.updateDoStatement(visited, withCheck(visited.statement), visited.expression);
    if (ts.isForStatement(visited)) {
      return factory.updateForStatement(visited, visited.initializer, visited.condition, visited.incrementor, withCheck(visited.statement));
    }
    if (ts.isForInStatement(visited)) return factory.updateForInStatement(visited, visited.initializer, visited.expression, withCheck(visited.statement));
    if (ts.isForOfStatement(visited)) {
      return factory.updateForOfStatement(visited, visited.awaitModifier, visited.initializer, visited.expression, withCheck(visited.statement));
    }
    return visited;
  };
  return (sourceFile) => visit(sourceFile) as ts.SourceFile;
}

/** Node kinds of the direct path (besides tokens and identifiers): JavaScript that declares no binding. */
const PLAIN_KINDS = new Set<ts.SyntaxKind>([
  ts.SyntaxKind.SourceFile,
  ts.SyntaxKind.ExpressionStatement,
  ts.SyntaxKind.EmptyStatement,
  ts.SyntaxKind.Block,
  ts.SyntaxKind.IfStatement,
  ts.SyntaxKind.WhileStatement,
  ts.SyntaxKind.DoStatement,
  ts.SyntaxKind.ForStatement,
  ts.SyntaxKind.ForInStatement,
  ts.SyntaxKind.ForOfStatement,
  ts.SyntaxKind.BreakStatement,
  ts.SyntaxKind.ContinueStatement,
  ts.SyntaxKind.LabeledStatement,
  ts.SyntaxKind.ThrowStatement,
  ts.SyntaxKind.TryStatement,
  ts.SyntaxKind.CatchClause,
  ts.SyntaxKind.SwitchStatement,
  ts.SyntaxKind.CaseBlock,
  ts.SyntaxKind.CaseClause,
  ts.SyntaxKind.DefaultClause,
  ts.SyntaxKind.NumericLiteral,
  ts.SyntaxKind.BigIntLiteral,
  ts.SyntaxKind.StringLiteral,
  ts.SyntaxKind.RegularExpressionLiteral,
  ts.SyntaxKind.NoSubstitutionTemplateLiteral,
  ts.SyntaxKind.TemplateExpression,
  ts.SyntaxKind.TemplateHead,
  ts.SyntaxKind.TemplateMiddle,
  ts.SyntaxKind.TemplateTail,
  ts.SyntaxKind.TemplateSpan,
  ts.SyntaxKind.TaggedTemplateExpression,
  ts.SyntaxKind.ArrayLiteralExpression,
  ts.SyntaxKind.ObjectLiteralExpression,
  ts.SyntaxKind.PropertyAssignment,
  ts.SyntaxKind.ShorthandPropertyAssignment,
  ts.SyntaxKind.SpreadAssignment,
  ts.SyntaxKind.ComputedPropertyName,
  ts.SyntaxKind.PropertyAccessExpression,
  ts.SyntaxKind.ElementAccessExpression,
  ts.SyntaxKind.CallExpression,
  ts.SyntaxKind.NewExpression,
  ts.SyntaxKind.ParenthesizedExpression,
  ts.SyntaxKind.PrefixUnaryExpression,
  ts.SyntaxKind.PostfixUnaryExpression,
  ts.SyntaxKind.BinaryExpression,
  ts.SyntaxKind.ConditionalExpression,
  ts.SyntaxKind.SpreadElement,
  ts.SyntaxKind.OmittedExpression,
  ts.SyntaxKind.AwaitExpression,
  ts.SyntaxKind.TypeOfExpression,
  ts.SyntaxKind.VoidExpression,
  ts.SyntaxKind.DeleteExpression,
]);

/**
 * The text edits of the direct path, or undefined when the cell needs TypeScript's emit: it declares
 * something, imports or exports, uses TypeScript syntax, functions, classes, `this` or dynamic import().
 */
function plainJavaScriptEdits(sourceFile: ts.SourceFile, scopeNames: ReadonlySet<string>): TextEdit[] | undefined {
  const edits: TextEdit[] = [];
  const isPlain = (node: ts.Node): boolean => {
    if (ts.isIdentifier(node)) return true;
    if (node.kind === ts.SyntaxKind.ThisKeyword || node.kind === ts.SyntaxKind.PrivateIdentifier) return false;
    if (node.kind <= ts.SyntaxKind.LastToken) return true;
    if (!PLAIN_KINDS.has(node.kind)) return false;
    if ((ts.isCallExpression(node) || ts.isNewExpression(node) || ts.isTaggedTemplateExpression(node)) && node.typeArguments !== undefined) return false;
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) return false;
    if (ts.isCatchClause(node) && node.variableDeclaration !== undefined) return false;
    if (ts.isShorthandPropertyAssignment(node) && node.objectAssignmentInitializer !== undefined) return false;
    if ((ts.isForStatement(node) && node.initializer !== undefined && ts.isVariableDeclarationList(node.initializer)) ||
      ((ts.isForInStatement(node) || ts.isForOfStatement(node)) && ts.isVariableDeclarationList(node.initializer))) {
      return false;
    }
    return ts.forEachChild(node, (child) => (isPlain(child) ? undefined : true)) !== true;
  };
  if (!isPlain(sourceFile)) return undefined;

  const reference = (name: ts.Identifier, form: 'value' | 'shorthand' | 'callee'): void => {
    if (!scopeNames.has(name.text)) return;
    const start = name.getStart(sourceFile);
    // A callee keeps `this` undefined, as TypeScript's `(0, scope.f)(…)` does.
    const text = { value: `exports.${name.text}`, shorthand: `${name.text}: exports.${name.text}`, callee: `(0, exports.${name.text})` }[form];
    edits.push({ start, end: name.end, text });
  };
  const tick = `${HELPERS}.tick();`;
  const visit = (node: ts.Node): void => {
    if (ts.isIdentifier(node)) return reference(node, 'value');
    if (ts.isShorthandPropertyAssignment(node)) return reference(node.name, 'shorthand');
    if ((ts.isCallExpression(node) || ts.isTaggedTemplateExpression(node)) && ts.isIdentifier(ts.isCallExpression(node) ? node.expression : node.tag)) {
      reference((ts.isCallExpression(node) ? node.expression : node.tag) as ts.Identifier, 'callee');
      if (ts.isCallExpression(node)) node.arguments.forEach(visit);
      else visit(node.template);
      return;
    }
    if (ts.isPropertyAccessExpression(node)) return visit(node.expression);
    if (ts.isPropertyAssignment(node)) {
      if (ts.isComputedPropertyName(node.name)) visit(node.name);
      return visit(node.initializer);
    }
    if (ts.isLabeledStatement(node)) return visit(node.statement);
    if (ts.isBreakOrContinueStatement(node)) return;
    if (ts.isIterationStatement(node, false)) {
      // The check maps to the loop statement, as on the TypeScript path.
      const origin = node.getStart(sourceFile);
      const body = node.statement;
      const at = body.getStart(sourceFile);
      if (ts.isBlock(body)) edits.push({ start: at + 1, end: at + 1, text: ` ${tick}`, origin });
      else {
        edits.push({ start: at, end: at, text: `{ ${tick} `, origin });
        edits.push({ start: body.end, end: body.end, text: ' }' });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sourceFile);
  return edits;
}

function toDiagnostics(diagnostics: readonly ts.Diagnostic[], toOriginal: (offset: number) => number, original: string): CompileDiagnostic[] {
  const index = new LineIndex(original);
  return diagnostics.map((diagnostic) => {
    const position = index.position(toOriginal(diagnostic.start ?? 0));
    return {
      message: ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'),
      line: position.line + 1,
      column: position.column + 1,
    };
  });
}

/** The function the kernel runs; V8 numbers its lines from the wrapper's (lineOffset -1), so lines match. */
function wrapScript(javascript: string, isAsync: boolean): string {
  return (
    `(${isAsync ? 'async ' : ''}function (exports, require, module, ${HELPERS}) {\n` +
    `${javascript}\n}).apply(globalThis, globalThis[Symbol.for('${CELL_ARGUMENTS_KEY}')]);`
  );
}

/**
 * Compiles one cell. `scopeNames` are the names earlier cells declared; those this cell does not redeclare
 * are imported from the scope. `direct: false` forces TypeScript's emit (the specs compare both paths).
 */
export function compileCell(code: string, scopeNames: Iterable<string>, options: { direct?: boolean } = {}): CompileResult {
  const objectLiteral = objectLiteralCell(code);
  const source = objectLiteral ?? code;
  const sourceToCell = (offset: number): number => (objectLiteral === undefined ? offset : Math.min(Math.max(offset - 1, 0), code.length));

  const sourceFile = parseCell(source);
  const syntaxErrors = parseDiagnostics(sourceFile);
  if (syntaxErrors.length > 0) return { ok: false, diagnostics: toDiagnostics(syntaxErrors, sourceToCell, code) };

  const analysis = analyse(sourceFile);
  const isAsync = hasTopLevelAwait(sourceFile);
  const plain = options.direct !== false && analysis.declaredNames.length === 0 ? plainJavaScriptEdits(sourceFile, new Set(scopeNames)) : undefined;
  if (plain !== undefined) {
    // The result capture edits of analyse() apply too; "use strict" as TypeScript's alwaysStrict emits it.
    const edited = new EditedText(source, [{ start: 0, end: 0, text: '"use strict"; ' }, ...plain, ...analysis.edits]);
    const editedIndex = new LineIndex(edited.text);
    const lineCount = edited.text.split('\n').length;
    const cellIndex = new LineIndex(code);
    return {
      ok: true,
      cell: {
        script: wrapScript(edited.text, isAsync),
        javascript: edited.text,
        isAsync,
        hasResult: analysis.hasResult,
        path: 'javascript',
        declaredNames: [],
        cellPosition(line, column) {
          if (line < 1 || line > lineCount) return undefined; // the wrapper's lines
          const position = cellIndex.position(sourceToCell(edited.toOriginal(editedIndex.offset(line - 1, column - 1))));
          return { line: position.line + 1, column: position.column + 1 };
        },
      },
    };
  }
  const declared = new Set(analysis.declaredNames);
  const imported = [...scopeNames].filter((name) => !declared.has(name));
  // First, on line 1 (imports are hoisted), so no line moves; only columns on line 1 shift, and the edit map
  // undoes that. It must precede the other insertions at offset 0 (`export `, the result capture).
  const scopeImport: TextEdit[] =
    imported.length > 0 ? [{ start: 0, end: 0, text: `import { ${imported.join(', ')} } from '${SCOPE_SPECIFIER}'; ` }] : [];
  const edits = [...scopeImport, ...analysis.edits];
  const edited = new EditedText(source, edits);

  const output = ts.transpileModule(edited.text, {
    compilerOptions: COMPILER_OPTIONS,
    fileName: 'cell.ts',
    reportDiagnostics: true,
    transformers: { after: [loopInterruptChecks] },
  });
  const errors = (output.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) {
    return { ok: false, diagnostics: toDiagnostics(errors, (offset) => sourceToCell(edited.toOriginal(offset)), code) };
  }

  const javascript = output.outputText.replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
  const script = wrapScript(javascript, isAsync);

  const sourceMap = new SourceMapLookup((JSON.parse(output.sourceMapText ?? '{"mappings":""}') as { mappings: string }).mappings);
  const editedIndex = new LineIndex(edited.text);
  const cellIndex = new LineIndex(code);
  return {
    ok: true,
    cell: {
      script,
      javascript,
      isAsync,
      hasResult: analysis.hasResult,
      path: 'typescript',
      declaredNames: analysis.declaredNames,
      cellPosition(line, column) {
        const mapped = sourceMap.original(line - 1, column - 1);
        if (mapped === undefined) return undefined;
        const offset = sourceToCell(edited.toOriginal(editedIndex.offset(mapped.line, mapped.column)));
        const position = cellIndex.position(offset);
        return { line: position.line + 1, column: position.column + 1 };
      },
    },
  };
}
