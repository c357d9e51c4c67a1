// complete_request and inspect_request through the TypeScript language service. The service sees one virtual
// module: the declarations of every cell executed so far (older declarations that a later cell redeclared
// are left out, as the notebook scope has only the newest), followed by the cell being edited. Created on
// the first request, because loading lib.d.ts and @types/node takes about a second; later requests only
// re-check the edited file.
import { dirname, join } from 'node:path';
import ts = require('typescript');
import { parseCell } from './cell-compiler.js';
import { codePointsToUtf16, utf16ToCodePoints } from './unicode.js';

export interface CompleteReply {
  matches: string[];
  cursor_start: number;
  cursor_end: number;
  metadata: { _jupyter_types_experimental: { start: number; end: number; text: string; type: string; signature?: string }[] };
}

export interface InspectReply {
  found: boolean;
  data: Record<string, string>;
  metadata: Record<string, unknown>;
}

export interface CodeIntelOptions {
  /** The notebook folder: npm packages resolve from here. */
  cwd: string;
  /** Declarations of the package entry (`import … from 'fluxlab'`), e.g. kernel/dist/index.d.ts. */
  packageTypes?: string;
}

interface RecordedStatement {
  text: string;
  names: string[];
  /** `declare global` / `declare module 'x'`: augmentations, kept whatever later cells declare. */
  augmentation: boolean;
}

/** Globals the kernel defines in every cell (see kernel.ts); typed from the package so they stay in sync. */
const CELL_GLOBALS = `
declare const display: typeof import('fluxlab').display;
declare const clearOutput: typeof import('fluxlab').clearOutput;
/** Asks the frontend for a line of input (stdin channel). */
declare function input(prompt?: string): Promise<string>;
/** Like input(), with the typed text hidden. */
declare function password(prompt?: string): Promise<string>;
`;

const IDENTIFIER_CHAR = /[\p{ID_Continue}$\u200c\u200d]/u;

function statementNames(statement: ts.Statement): string[] {
  const names: string[] = [];
  const addBinding = (name: ts.BindingName): void => {
    if (ts.isIdentifier(name)) names.push(name.text);
    else for (const element of name.elements) if (ts.isBindingElement(element)) addBinding(element.name);
  };
  if (ts.isVariableStatement(statement)) for (const d of statement.declarationList.declarations) addBinding(d.name);
  else if (
    ts.isFunctionDeclaration(statement) ||
    ts.isClassDeclaration(statement) ||
    ts.isInterfaceDeclaration(statement) ||
    ts.isTypeAliasDeclaration(statement) ||
    ts.isEnumDeclaration(statement)
  ) {
    if (statement.name !== undefined) names.push(statement.name.text);
  } else if (ts.isModuleDeclaration(statement) && ts.isIdentifier(statement.name)) names.push(statement.name.text);
  else if (ts.isImportEqualsDeclaration(statement)) names.push(statement.name.text);
  else if (ts.isImportDeclaration(statement) && statement.importClause !== undefined) {
    const clause = statement.importClause;
    if (clause.name !== undefined) names.push(clause.name.text);
    if (clause.namedBindings !== undefined) {
      if (ts.isNamespaceImport(clause.namedBindings)) names.push(clause.namedBindings.name.text);
      else for (const element of clause.namedBindings.elements) names.push(element.name.text);
    }
  }
  return names;
}

function typeOfKind(kind: string): string {
  switch (kind) {
    case ts.ScriptElementKind.functionElement:
    case ts.ScriptElementKind.memberFunctionElement:
    case ts.ScriptElementKind.localFunctionElement:
    case ts.ScriptElementKind.constructorImplementationElement:
      return 'function';
    case ts.ScriptElementKind.classElement:
    case ts.ScriptElementKind.localClassElement:
    case ts.ScriptElementKind.interfaceElement:
    case ts.ScriptElementKind.typeElement:
    case ts.ScriptElementKind.enumElement:
      return 'class';
    case ts.ScriptElementKind.moduleElement:
    case ts.ScriptElementKind.externalModuleName:
      return 'module';
    case ts.ScriptElementKind.keyword:
      return 'keyword';
    case ts.ScriptElementKind.directory:
    case ts.ScriptElementKind.scriptElement:
      return 'path';
    default:
      return 'instance';
  }
}

function typesNodeRoot(): string | undefined {
  try {
    return dirname(dirname(require.resolve('@types/node/package.json')));
  } catch {
    return undefined;
  }
}

export class CodeIntel {
  private readonly history: RecordedStatement[] = [];
  private readonly cellsFile: string;
  private readonly globalsFile: string;
  private readonly files = new Map<string, { version: number; text: string }>();
  private service: ts.LanguageService | undefined;

  constructor(private readonly options: CodeIntelOptions) {
    this.cellsFile = join(options.cwd, '__fluxlab_cells__.ts');
    this.globalsFile = join(options.cwd, '__fluxlab_globals__.d.ts');
    this.files.set(this.globalsFile, { version: 1, text: CELL_GLOBALS });
  }

  /** Remembers the declarations of a cell that ran, for later completions. */
  recordExecution(code: string): void {
    const sourceFile = parseCell(code);
    for (const statement of sourceFile.statements) {
      const augmentation = ts.isModuleDeclaration(statement) && !ts.isIdentifier(statement.name);
      const names = statementNames(statement);
      if (names.length > 0 || augmentation) this.history.push({ text: code.slice(statement.pos, statement.end), names, augmentation });
    }
  }

  complete(code: string, cursorPos: number): CompleteReply {
    const cursor = codePointsToUtf16(code, cursorPos);
    const { service, codeStart } = this.prepare(code);
    const completions = service.getCompletionsAtPosition(this.cellsFile, codeStart + cursor, {
      includeCompletionsWithInsertText: true,
      includeAutomaticOptionalChainCompletions: true,
    });
    let start = cursor;
    while (start > 0 && IDENTIFIER_CHAR.test(code[start - 1])) start--;
    const span = completions?.optionalReplacementSpan ?? completions?.entries.find((e) => e.replacementSpan !== undefined)?.replacementSpan;
    if (span !== undefined && span.start - codeStart >= 0 && span.start - codeStart <= cursor) start = span.start - codeStart;
    const prefix = code.slice(start, cursor);
    const lowerPrefix = prefix.toLowerCase();
    const entries = (completions?.entries ?? [])
      .filter((entry) => entry.name.toLowerCase().startsWith(lowerPrefix))
      .sort(
        (a, b) =>
          Number(!b.name.startsWith(prefix)) - Number(!a.name.startsWith(prefix)) ||
          a.sortText.localeCompare(b.sortText) ||
          a.name.localeCompare(b.name),
      );
    const seen = new Set<string>();
    const unique = entries.filter((entry) => !seen.has(entry.name) && seen.add(entry.name) !== undefined);
    const cursorStart = utf16ToCodePoints(code, start);
    return {
      matches: unique.map((entry) => entry.name),
      cursor_start: cursorStart,
      cursor_end: cursorPos,
      metadata: {
        _jupyter_types_experimental: unique.map((entry) => ({ start: cursorStart, end: cursorPos, text: entry.name, type: typeOfKind(entry.kind) })),
      },
    };
  }

  inspect(code: string, cursorPos: number, detailLevel: number): InspectReply {
    const target = this.inspectionTarget(code, codePointsToUtf16(code, cursorPos));
    if (target === undefined) return { found: false, data: {}, metadata: {} };
    const { service, codeStart } = this.prepare(code);
    const info = service.getQuickInfoAtPosition(this.cellsFile, codeStart + target);
    if (info === undefined) return { found: false, data: {}, metadata: {} };
    const signature = ts.displayPartsToString(info.displayParts);
    const documentation = ts.displayPartsToString(info.documentation);
    const tags = (info.tags ?? []).map((tag) => `@${tag.name}${tag.text === undefined ? '' : ` ${ts.displayPartsToString(tag.text)}`}`);
    const sections = [documentation, ...(detailLevel > 0 || documentation === '' ? tags : tags.filter((t) => !t.startsWith('@example')))];
    const body = sections.filter((s) => s !== '').join('\n\n');
    return {
      found: true,
      data: {
        'text/plain': body === '' ? signature : `${signature}\n\n${body}`,
        'text/markdown': `\`\`\`typescript\n${signature}\n\`\`\`${body === '' ? '' : `\n\n${body}`}`,
      },
      metadata: {},
    };
  }

  /** The identifier at or just before the cursor, or the callee when the cursor sits inside a call's parens. */
  private inspectionTarget(code: string, cursor: number): number | undefined {
    if (cursor < code.length && IDENTIFIER_CHAR.test(code[cursor])) return cursor;
    if (cursor > 0 && IDENTIFIER_CHAR.test(code[cursor - 1])) return cursor - 1;
    let depth = 0;
    for (let i = cursor - 1; i >= 0; i--) {
      const char = code[i];
      if (char === ')') depth++;
      else if (char === '(') {
        if (depth === 0) {
          let end = i;
          while (end > 0 && /\s/.test(code[end - 1])) end--;
          return end > 0 && IDENTIFIER_CHAR.test(code[end - 1]) ? end - 1 : undefined;
        }
        depth--;
      } else if (char === ';' || char === '{' || char === '}') return undefined;
    }
    return undefined;
  }

  private prepare(code: string): { service: ts.LanguageService; codeStart: number } {
    const declaredNow = new Set(parseCell(code).statements.flatMap(statementNames));
    const kept: string[] = [];
    const later = new Set(declaredNow);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const statement = this.history[i];
      if (statement.augmentation || !statement.names.every((name) => later.has(name))) kept.push(statement.text);
      for (const name of statement.names) later.add(name);
    }
    const prefix = kept.reverse().join('\n');
    const codeStart = prefix.length + 1;
    const text = `${prefix}\n${code}\nexport {};\n`;
    const previous = this.files.get(this.cellsFile);
    if (previous?.text !== text) this.files.set(this.cellsFile, { version: (previous?.version ?? 0) + 1, text });
    this.service ??= this.createService();
    return { service: this.service, codeStart };
  }

  private createService(): ts.LanguageService {
    const typeRoot = typesNodeRoot();
    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ['lib.es2023.d.ts'],
      types: typeRoot === undefined ? [] : ['node'],
      ...(typeRoot === undefined ? {} : { typeRoots: [typeRoot] }),
      strict: true,
      esModuleInterop: true,
      skipLibCheck: true,
      resolveJsonModule: true,
      noEmit: true,
      ...(this.options.packageTypes === undefined ? {} : { paths: { fluxlab: [this.options.packageTypes] } }),
    };
    const diskCache = new Map<string, ts.IScriptSnapshot | undefined>();
    const host: ts.LanguageServiceHost = {
      getCompilationSettings: () => options,
      getScriptFileNames: () => [this.cellsFile, this.globalsFile],
      getScriptVersion: (file) => String(this.files.get(file)?.version ?? 0),
      getScriptSnapshot: (file) => {
        const virtual = this.files.get(file);
        if (virtual !== undefined) return ts.ScriptSnapshot.fromString(virtual.text);
        if (!diskCache.has(file)) {
          const text = ts.sys.readFile(file);
          diskCache.set(file, text === undefined ? undefined : ts.ScriptSnapshot.fromString(text));
        }
        return diskCache.get(file);
      },
      getCurrentDirectory: () => this.options.cwd,
      getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
      fileExists: (file) => this.files.has(file) || ts.sys.fileExists(file),
      readFile: (file) => this.files.get(file)?.text ?? ts.sys.readFile(file),
      readDirectory: (...args) => ts.sys.readDirectory(...args),
      directoryExists: (dir) => ts.sys.directoryExists(dir),
      getDirectories: (dir) => ts.sys.getDirectories(dir),
      realpath: (path) => ts.sys.realpath?.(path) ?? path,
    };
    return ts.createLanguageService(host, ts.createDocumentRegistry());
  }
}
