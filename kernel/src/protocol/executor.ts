// Runs compiled cells against the notebook scope, without any sockets: the kernel feeds it code and turns
// its outcome into Jupyter messages; tests drive it directly.
//
// A cell runs inside vm.Script#runInThisContext (the main realm, so objects a cell creates pass `instanceof`
// checks in libraries) with breakOnSigint, so SIGINT stops even synchronous library code called from the
// cell. Async cells are awaited in a race with the interrupt signal, so an interrupt ends an awaited promise
// at once; the shared flag stops compiled loops wherever they run.
import { dirname, join, sep } from 'node:path';
import { inspect } from 'node:util';
import vm = require('node:vm');
import {
  beginInterruptScope,
  interruptFlagSet,
  interruptSignal,
  KeyboardInterrupt,
  requestInterrupt,
} from '../runtime/interrupt.js';
import { CELL_ARGUMENTS_KEY, compileCell, type CompileDiagnostic, type CompiledCell, type CompileResult } from './cell-compiler.js';
import { createCellRequire, importDefault, importStar, type CellRequire } from './cell-modules.js';
import { PHASE_IDLE, PHASE_SYNC_RUN, SLOT_PHASE, SLOT_RUN } from './shared-state.js';

export interface ErrorContent {
  ename: string;
  evalue: string;
  traceback: string[];
}

export type ExecutionOutcome =
  | { status: 'ok'; hasValue: false }
  | { status: 'ok'; hasValue: true; value: unknown }
  /** compileError: the cell did not compile (nothing ran). */
  | ({ status: 'error'; compileError?: boolean } & ErrorContent);

export interface ExecutorOptions {
  /** What `import … from 'fluxlab'` loads (the package entry, wired by the CLI). */
  packageEntry: string;
  cwd?: () => string;
  /** Shared memory with the I/O thread (shared-state.ts); lets it tell a synchronous run from an await. */
  shared?: Int32Array;
}

interface CellHelpers {
  result(value: unknown): void;
  tick(): void;
  importDefault(module: unknown): unknown;
  importStar(module: unknown): unknown;
}

const CELL_FILE = /fluxlab-cell-(\d+)\.ts:(\d+):(\d+)/g;
const CELL_FILE_LINE = /fluxlab-cell-(\d+)\.ts:(\d+)/;
const KERNEL_DIR = dirname(__dirname);
const KERNEL_INTERNALS = [join(KERNEL_DIR, 'protocol') + sep, join(KERNEL_DIR, 'runtime') + sep];
const MAPPINGS_KEPT = 1000;
const COMPILED_KEPT = 500;
const IDENTIFIER_TOKENS = /[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*/gu;
const WRAPPER_FRAME = '\u0000wrapper';

function isErrorLike(value: unknown): value is { name?: unknown; message?: unknown; stack?: unknown; cause?: unknown } {
  return typeof value === 'object' && value !== null && ('stack' in value || 'message' in value);
}

function isInterruptedByVm(error: unknown): boolean {
  return isErrorLike(error) && (error as { code?: unknown }).code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
}

/** The loop check compiled into cells: a fresh error, so its stack starts at the interrupted line. */
function tick(): void {
  if (interruptFlagSet()) {
    interruptSignal(); // aborts the execution's signal, running library handlers
    throw new KeyboardInterrupt();
  }
}

export class CellExecutor {
  /** The notebook's top-level bindings (what cells declare), as properties. */
  readonly scope: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  readonly require: CellRequire;
  private readonly scopeNames = new Set<string>();
  private readonly mappings = new Map<number, { cell: CompiledCell; label: string }>();
  private readonly compiled = new Map<string, CompileResult>();
  private nextCellId = 1;

  constructor(private readonly options: ExecutorOptions) {
    this.require = createCellRequire({ scope: this.scope, packageEntry: options.packageEntry, cwd: options.cwd });
  }

  /** Names cells have declared so far. */
  get names(): readonly string[] {
    return [...this.scopeNames];
  }

  /**
   * Runs one cell. `label` names it in tracebacks (e.g. "In[3]"). Starts a new interrupt scope, so an
   * interrupt requested before this call does not affect it.
   */
  async execute(code: string, label: string): Promise<ExecutionOutcome> {
    beginInterruptScope();
    return this.run(code, label, true);
  }

  /** Evaluates an expression (user_expressions) synchronously, in the current scope, without persisting. */
  evaluate(expression: string): Promise<ExecutionOutcome> {
    return this.run(`(${expression}\n)`, 'expression', false);
  }

  /**
   * compileCell, remembered for re-runs (the usual notebook workflow): TypeScript's emit builds a type checker
   * per cell, a millisecond or more. The output depends on the code and on which names it uses are in scope,
   * so those are the key.
   */
  private compile(code: string): CompileResult {
    const used = new Set(code.match(IDENTIFIER_TOKENS) ?? []);
    const key = `${code}\u0000${[...this.scopeNames].filter((name) => used.has(name)).sort().join(',')}`;
    let compiled = this.compiled.get(key);
    if (compiled === undefined) {
      compiled = compileCell(code, this.scopeNames);
      if (this.compiled.size >= COMPILED_KEPT) this.compiled.delete(this.compiled.keys().next().value as string);
    } else this.compiled.delete(key); // re-inserted below: least recently used goes first
    this.compiled.set(key, compiled);
    return compiled;
  }

  private async run(code: string, label: string, persist: boolean): Promise<ExecutionOutcome> {
    const compiled = this.compile(code);
    if (!compiled.ok) return this.syntaxError(compiled.diagnostics, code, label);
    const cell = compiled.cell;
    if (!persist && (cell.isAsync || cell.declaredNames.length > 0)) {
      return { status: 'error', ename: 'SyntaxError', evalue: 'expected a synchronous expression', traceback: [] };
    }
    for (const name of cell.declaredNames) this.scopeNames.add(name);

    const id = this.nextCellId++;
    this.mappings.set(id, { cell, label });
    if (this.mappings.size > MAPPINGS_KEPT) this.mappings.delete(this.mappings.keys().next().value as number);

    let captured: { value: unknown } | undefined;
    const helpers: CellHelpers = {
      result: (value) => {
        captured = { value };
      },
      tick,
      importDefault,
      importStar,
    };

    let returned: unknown;
    try {
      const script = new vm.Script(cell.script, { filename: `fluxlab-cell-${id}.ts`, lineOffset: -1 });
      returned = this.runSync(script, [this.scope, this.require, { exports: this.scope }, helpers]);
      if (cell.isAsync) await this.raceInterrupt(returned as Promise<unknown>);
    } catch (error) {
      if (isInterruptedByVm(error)) {
        requestInterrupt();
        return { status: 'error', ...this.errorContent(new KeyboardInterrupt()) };
      }
      return { status: 'error', ...this.errorContent(error) };
    }
    return captured === undefined ? { status: 'ok', hasValue: false } : { status: 'ok', hasValue: true, value: captured.value };
  }

  private runSync(script: vm.Script, args: unknown[]): unknown {
    const shared = this.options.shared;
    const slot = Symbol.for(CELL_ARGUMENTS_KEY);
    (globalThis as Record<symbol, unknown>)[slot] = args;
    if (shared !== undefined) {
      Atomics.add(shared, SLOT_RUN, 1);
      Atomics.store(shared, SLOT_PHASE, PHASE_SYNC_RUN);
    }
    try {
      return script.runInThisContext({ breakOnSigint: true, displayErrors: false });
    } finally {
      if (shared !== undefined) Atomics.store(shared, SLOT_PHASE, PHASE_IDLE);
      delete (globalThis as Record<symbol, unknown>)[slot];
    }
  }

  private async raceInterrupt(promise: Promise<unknown>): Promise<unknown> {
    const signal = interruptSignal();
    let onAbort: (() => void) | undefined;
    const interrupted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason as Error);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    // The abandoned side of the race must not surface later as an unhandled rejection.
    promise.catch(() => undefined);
    interrupted.catch(() => undefined);
    try {
      return await Promise.race([promise, interrupted]);
    } finally {
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
    }
  }

  private syntaxError(diagnostics: CompileDiagnostic[], code: string, label: string): ExecutionOutcome {
    const first = diagnostics[0];
    const lines = code.split('\n');
    const traceback = [`SyntaxError: ${first.message}`, `    at ${label}:${first.line}:${first.column}`];
    const sourceLine = lines[first.line - 1];
    if (sourceLine !== undefined) traceback.push('', sourceLine, `${' '.repeat(first.column - 1)}^`);
    for (const more of diagnostics.slice(1, 3)) traceback.push(`SyntaxError: ${more.message} (${label}:${more.line}:${more.column})`);
    return { status: 'error', compileError: true, ename: 'SyntaxError', evalue: first.message, traceback };
  }

  /** Rewrites compiled-cell locations in a stack trace into cell locations like `In[3]:2:7`. */
  mapStack(stack: string): string {
    return stack.replace(CELL_FILE, (match, id: string, line: string, column: string) => {
      const entry = this.mappings.get(Number(id));
      if (entry === undefined) return match;
      const position = entry.cell.cellPosition(Number(line), Number(column));
      // Unmapped positions are the kernel's wrapper around the cell, not user code.
      return position === undefined ? WRAPPER_FRAME : `${entry.label}:${position.line}:${position.column}`;
    });
  }

  /** ename/evalue/traceback of anything a cell threw, with frames mapped into cells and kernel frames dropped. */
  errorContent(error: unknown): ErrorContent {
    if (!isErrorLike(error)) {
      const text = inspect(error);
      return { ename: 'Uncaught', evalue: text, traceback: [`Uncaught ${text}`] };
    }
    const ename = typeof error.name === 'string' && error.name !== '' ? error.name : 'Error';
    const evalue = typeof error.message === 'string' ? error.message : String(error.message);
    const traceback = this.tracebackLines(error, ename, evalue);
    let cause: unknown = error.cause;
    for (let depth = 0; cause !== undefined && depth < 3; depth++) {
      if (!isErrorLike(cause)) {
        traceback.push(`[cause]: ${inspect(cause)}`);
        break;
      }
      const causeName = typeof cause.name === 'string' ? cause.name : 'Error';
      traceback.push('', 'Caused by:', ...this.tracebackLines(cause, causeName, String(cause.message)));
      cause = cause.cause;
    }
    return { ename, evalue, traceback };
  }

  private tracebackLines(error: { stack?: unknown }, ename: string, evalue: string): string[] {
    if (typeof error.stack !== 'string' || error.stack === '') return [`${ename}: ${evalue}`];
    let stack = error.stack;
    // V8 reports a SyntaxError of a compiled cell as "file:line\n<source>\n^^^\n\nSyntaxError: …".
    const header = CELL_FILE_LINE.exec(stack.split('\n', 1)[0]);
    if (header !== null && ename === 'SyntaxError') {
      const body = stack.slice(stack.indexOf(`${ename}:`));
      stack = `${body.split('\n', 1)[0]}\n    at ${this.mapStack(`${header[0]}:1`)}`;
    }
    // Frames outside the outermost cell frame are the kernel calling the cell; frames inside it are what the
    // cell called (libraries, builtins) and stay, except Node's and the kernel's own internals.
    const lines = stack.split('\n');
    let outermostCell = -1;
    lines.forEach((line, index) => {
      CELL_FILE.lastIndex = 0;
      if (CELL_FILE.test(line)) outermostCell = index;
    });
    return lines
      .map((line) => this.mapStack(line))
      .filter((line, index) => {
        if (!/^\s+at /.test(line)) return true;
        if (outermostCell >= 0 && index > outermostCell) return false;
        return !(line.includes(WRAPPER_FRAME) || line.includes('node:internal') || KERNEL_INTERNALS.some((dir) => line.includes(dir)));
      });
  }
}
