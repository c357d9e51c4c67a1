// The kernel's main thread: runs cells and serves the shell requests the I/O thread forwards, one at a time in
// arrival order, each wrapped in busy/idle status messages. Output reaches the frontend through the I/O thread.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CommRegistry, comms } from '../runtime/comm.js';
import { clearOutput, display, installDisplayHost, mimeBundleOf, type MimeBundle } from '../runtime/display.js';
import { attachInterruptFlag, KeyboardInterrupt, requestInterrupt } from '../runtime/interrupt.js';
import { runShutdownHooks } from '../runtime/shutdown.js';
import type { CodeIntel } from './code-intel.js';
import type { ConnectionInfo } from './connection.js';
import type { CellExecutor, ErrorContent, ExecutionOutcome } from './executor.js';
import { History } from './history.js';
import type { IoThreadData, ReplyChannel, ToIo, ToMain } from './io-messages.js';
import { kernelInfoContent } from './kernel-info.js';
import { createLogger, logLevelFromEnv, type Logger, type LogLevel } from './log.js';
import { captureStdio } from './output.js';
import { createSharedState, SLOT_INTERRUPT } from './shared-state.js';
import type { GpuMemoryProvider } from './usage.js';
import type { Header, JsonObject, RoutedMessage } from './wire.js';

export interface KernelOptions {
  connection: ConnectionInfo;
  /** What `import … from 'fluxlab'` loads in a cell. */
  packageEntry: string;
  /** Its declarations, for completion and inspection. */
  packageTypes?: string;
  /** Optional: GPU memory for usage_reply; without it usage_reply has CPU and host memory only. */
  gpuMemory?: GpuMemoryProvider;
  logLevel?: LogLevel;
}

type Request = Extract<ToMain, { kind: 'request' }>;

class BadRequest extends Error {
  override name = 'BadRequest';
}

class StdinNotImplementedError extends Error {
  override name = 'StdinNotImplementedError';
}

function stringField(content: JsonObject, field: string, fallback?: string): string {
  const value = content[field] ?? fallback;
  if (typeof value !== 'string') throw new BadRequest(`content.${field} must be a string`);
  return value;
}

function cursorField(content: JsonObject, code: string): number {
  const value = content.cursor_pos ?? [...code].length;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw new BadRequest('content.cursor_pos must be a non-negative integer');
  return value;
}

export class Kernel {
  private readonly log: Logger;
  private readonly history = new History();
  private readonly queue: Request[] = [];
  private processing = false;
  private executionCount = 0;
  /** Output and display calls are attributed to the latest execute_request (or comm message) being served. */
  private parent: Header | JsonObject = {};
  private parentIdentities: Uint8Array[] = [];
  private allowStdin = false;
  /** stop_on_error: execute_requests received up to this time (ms since epoch) are aborted. */
  private abortReceivedUpTo = 0;
  private pendingInput: { resolve: (value: string) => void; reject: (error: Error) => void } | undefined;
  private executorInstance: CellExecutor | undefined;
  private codeIntelInstance: CodeIntel | undefined;
  private restoreStdio: (() => void) | undefined;

  constructor(
    private readonly options: KernelOptions,
    private readonly io: Worker,
    private readonly comms: CommRegistry,
  ) {
    this.log = createLogger('kernel', options.logLevel);
  }

  private get executor(): CellExecutor {
    if (this.executorInstance === undefined) {
      // Loaded on first use: the executor pulls in the TypeScript compiler (about half a second).
      const { CellExecutor: Executor } = require('./executor.js') as typeof import('./executor.js');
      this.executorInstance = new Executor({ packageEntry: this.options.packageEntry, shared: sharedState });
    }
    return this.executorInstance;
  }

  private get codeIntel(): CodeIntel {
    if (this.codeIntelInstance === undefined) {
      const { CodeIntel: Intel } = require('./code-intel.js') as typeof import('./code-intel.js');
      this.codeIntelInstance = new Intel({ cwd: process.cwd(), packageTypes: this.options.packageTypes });
      for (const entry of this.history.all()) this.codeIntelInstance.recordExecution(entry.input);
    }
    return this.codeIntelInstance;
  }

  private isComplete(code: string): JsonObject {
    const { isComplete } = require('./is-complete.js') as typeof import('./is-complete.js');
    return isComplete(code);
  }

  install(): void {
    this.restoreStdio = captureStdio((name, text) => this.publish('stream', { name, text }));
    installDisplayHost({
      publish: (data, metadata, displayId, update) =>
        this.publish(update ? 'update_display_data' : 'display_data', { data, metadata, transient: { display_id: displayId } }),
      clearOutput: (wait) => this.publish('clear_output', { wait }),
    });
    this.comms.installTransport({
      send: (msgType, content, metadata, buffers) => this.publish(msgType, content, metadata, buffers),
      reportError: (error) => this.printError(error),
    });
    const globals: Record<string, unknown> = {
      display,
      clearOutput,
      input: (prompt = '') => this.input(String(prompt), false),
      password: (prompt = '') => this.input(String(prompt), true),
    };
    for (const [name, value] of Object.entries(globals)) {
      Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
    }
    process.on('SIGINT', () => this.interrupt());
    process.on('uncaughtException', (error) => this.printError(error, 'Uncaught exception:'));
    process.on('unhandledRejection', (reason) => this.printError(reason, 'Unhandled promise rejection:'));
    this.io.on('message', (message: ToMain) => this.received(message));
    // Warm up the compiler while the frontend is still connecting.
    setImmediate(() => void this.executor);
  }

  private received(message: ToMain): void {
    switch (message.kind) {
      case 'request':
        this.queue.push(message);
        void this.pump();
        return;
      case 'input_reply': {
        const pending = this.pendingInput;
        this.pendingInput = undefined;
        const value = message.message.content.value;
        if (pending === undefined) this.log.warn('input_reply without a pending input request');
        else if (typeof value !== 'string') pending.reject(new BadRequest('input_reply content.value must be a string'));
        else pending.resolve(value);
        return;
      }
      case 'interrupt':
        this.interrupt();
        return;
      case 'shutdown':
        void this.shutdown();
        return;
      case 'gpu_memory_request': {
        let devices: ReturnType<GpuMemoryProvider> = [];
        try {
          devices = this.options.gpuMemory?.() ?? [];
        } catch (error) {
          this.log.limited('gpu-memory', 'warn', `GPU memory provider failed: ${String(error)}`);
        }
        this.post({ kind: 'gpu_memory', id: message.id, devices });
        return;
      }
      case 'closed':
        process.exit(0);
    }
  }

  private interrupt(): void {
    requestInterrupt();
    const pending = this.pendingInput;
    this.pendingInput = undefined;
    pending?.reject(new KeyboardInterrupt());
  }

  private post(message: ToIo): void {
    this.io.postMessage(message);
  }

  private publish(msgType: string, content: JsonObject, metadata: JsonObject = {}, buffers: Uint8Array[] = [], parent = this.parent): void {
    this.post({ kind: 'send', channel: 'iopub', msgType, content, parent, metadata, buffers });
  }

  private reply(request: Request, msgType: string, content: JsonObject, metadata: JsonObject = {}): void {
    const message = request.message;
    this.post({ kind: 'send', channel: request.channel, msgType, content, parent: message.header, metadata, identities: message.identities });
  }

  private printError(error: unknown, heading?: string): void {
    const content = this.executorInstance?.errorContent(error) ?? {
      traceback: [error instanceof Error ? (error.stack ?? String(error)) : String(error)],
    };
    this.publish('stream', { name: 'stderr', text: `${heading === undefined ? '' : `${heading}\n`}${content.traceback.join('\n')}\n` });
  }

  private async pump(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      for (let request = this.queue.shift(); request !== undefined; request = this.queue.shift()) {
        await this.serve(request);
      }
    } finally {
      this.processing = false;
    }
  }

  private async serve(request: Request): Promise<void> {
    const { message } = request;
    const msgType = message.header.msg_type;
    this.publish('status', { execution_state: 'busy' }, {}, [], message.header);
    try {
      switch (msgType) {
        case 'execute_request':
          await this.execute(request);
          break;
        case 'complete_request': {
          const code = stringField(message.content, 'code');
          this.reply(request, 'complete_reply', { status: 'ok', ...this.codeIntel.complete(code, cursorField(message.content, code)) });
          break;
        }
        case 'inspect_request': {
          const code = stringField(message.content, 'code');
          const detail = message.content.detail_level === 1 ? 1 : 0;
          this.reply(request, 'inspect_reply', { status: 'ok', ...this.codeIntel.inspect(code, cursorField(message.content, code), detail) });
          break;
        }
        case 'is_complete_request':
          this.reply(request, 'is_complete_reply', this.isComplete(stringField(message.content, 'code')));
          break;
        case 'history_request':
          this.reply(request, 'history_reply', { status: 'ok', history: this.history.request(message.content) });
          break;
        case 'comm_info_request': {
          const target = message.content.target_name;
          this.reply(request, 'comm_info_reply', { status: 'ok', comms: this.comms.info(typeof target === 'string' ? target : undefined) });
          break;
        }
        case 'comm_open':
        case 'comm_msg':
        case 'comm_close':
          this.commMessage(message);
          break;
        default:
          this.log.warn(`no handler for ${msgType}`);
      }
    } catch (error) {
      this.log.limited('request-error', 'warn', `${msgType} failed: ${error instanceof Error ? error.message : String(error)}`);
      if (msgType.endsWith('_request')) {
        const name = error instanceof Error ? error.name : 'Error';
        const text = error instanceof Error ? error.message : String(error);
        this.reply(request, msgType.replace(/_request$/, '_reply'), { status: 'error', ename: name, evalue: text, traceback: [`${name}: ${text}`] });
      }
    } finally {
      this.publish('status', { execution_state: 'idle' }, {}, [], message.header);
    }
  }

  private commMessage(message: RoutedMessage): void {
    this.parent = message.header;
    const { content, metadata, buffers } = message;
    try {
      if (message.header.msg_type === 'comm_open') this.comms.handleOpen(content, metadata, buffers);
      else if (message.header.msg_type === 'comm_msg') this.comms.handleMsg(content, metadata, buffers);
      else this.comms.handleClose(content, metadata, buffers);
    } catch (error) {
      this.log.warn(`${message.header.msg_type}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async execute(request: Request): Promise<void> {
    const { message } = request;
    const content = message.content;
    const code = stringField(content, 'code');
    const silent = content.silent === true;
    const storeHistory = !silent && content.store_history !== false;
    const stopOnError = content.stop_on_error !== false;
    const started = new Date().toISOString();

    if (request.receivedAt <= this.abortReceivedUpTo) {
      this.reply(request, 'execute_reply', { status: 'aborted', execution_count: this.executionCount }, { status: 'aborted', started });
      return;
    }
    if (storeHistory) this.executionCount++;
    const count = this.executionCount;
    this.parent = message.header;
    this.parentIdentities = message.identities;
    this.allowStdin = content.allow_stdin !== false;
    if (!silent) this.publish('execute_input', { code, execution_count: count });
    if (storeHistory) this.history.add(count, code);

    if (/\?\s*$/.test(code) && this.pageHelp(request, code, count, started)) return;

    let outcome: ExecutionOutcome = await this.executor.execute(code, storeHistory ? `In[${count}]` : 'In[ ]');
    if (!(outcome.status === 'error' && outcome.compileError === true)) this.codeIntelInstance?.recordExecution(code);
    if (outcome.status === 'ok' && outcome.hasValue && outcome.value !== undefined && !silent) {
      let bundle: MimeBundle | undefined;
      try {
        bundle = mimeBundleOf(outcome.value);
      } catch (error) {
        outcome = { status: 'error', ...this.executor.errorContent(error) };
      }
      if (bundle !== undefined && Object.keys(bundle).length > 0) {
        this.publish('execute_result', { execution_count: count, data: bundle, metadata: {} });
        if (storeHistory && typeof bundle['text/plain'] === 'string') this.history.setOutput(count, bundle['text/plain']);
      }
    }

    if (outcome.status === 'ok') {
      const userExpressions = await this.userExpressions(content.user_expressions);
      this.reply(request, 'execute_reply', { status: 'ok', execution_count: count, payload: [], user_expressions: userExpressions }, { status: 'ok', started });
      return;
    }
    const error: ErrorContent = { ename: outcome.ename, evalue: outcome.evalue, traceback: outcome.traceback };
    if (!silent) this.publish('error', { ...error });
    this.reply(
      request,
      'execute_reply',
      { status: 'error', ...error, execution_count: count, payload: [], user_expressions: {} },
      { status: 'error', started },
    );
    if (stopOnError) this.abortReceivedUpTo = Date.now();
  }

  /** `expression?`: the inspection of the expression as a pager payload, as IPython does. */
  private pageHelp(request: Request, code: string, count: number, started: string): boolean {
    const { helpRequest } = require('./cell-compiler.js') as typeof import('./cell-compiler.js');
    const help = helpRequest(code);
    if (help === undefined) return false;
    const inspection = this.codeIntel.inspect(help.expression, [...help.expression].length, help.detailLevel);
    const payload = inspection.found ? [{ source: 'page', data: inspection.data, start: 0 }] : [];
    if (!inspection.found) this.publish('stream', { name: 'stdout', text: `Object \`${help.expression}\` not found.\n` });
    this.reply(request, 'execute_reply', { status: 'ok', execution_count: count, payload, user_expressions: {} }, { status: 'ok', started });
    return true;
  }

  private async userExpressions(expressions: unknown): Promise<JsonObject> {
    const results: JsonObject = {};
    if (typeof expressions !== 'object' || expressions === null) return results;
    for (const [name, expression] of Object.entries(expressions)) {
      if (typeof expression !== 'string') continue;
      const outcome = await this.executor.evaluate(expression);
      if (outcome.status === 'ok') {
        try {
          results[name] = { status: 'ok', data: outcome.hasValue ? mimeBundleOf(outcome.value) : { 'text/plain': 'undefined' }, metadata: {} };
        } catch (error) {
          results[name] = { status: 'error', ...this.executor.errorContent(error) };
        }
      } else results[name] = { status: 'error', ename: outcome.ename, evalue: outcome.evalue, traceback: outcome.traceback };
    }
    return results;
  }

  private input(prompt: string, password: boolean): Promise<string> {
    if (!this.allowStdin) {
      return Promise.reject(new StdinNotImplementedError('input() was called, but this frontend does not support input requests'));
    }
    if (this.pendingInput !== undefined) return Promise.reject(new Error('another input() is already waiting for the frontend'));
    return new Promise<string>((resolve, reject) => {
      this.pendingInput = { resolve, reject };
      this.post({ kind: 'send', channel: 'stdin', msgType: 'input_request', content: { prompt, password }, parent: this.parent, identities: this.parentIdentities });
    });
  }

  private async shutdown(): Promise<void> {
    this.interrupt();
    try {
      this.comms.closeAll();
    } catch (error) {
      this.log.warn(`closing comms: ${String(error)}`);
    }
    for (const error of await runShutdownHooks(3000)) this.log.warn(`shutdown hook failed: ${error instanceof Error ? error.message : String(error)}`);
    this.restoreStdio?.();
    this.post({ kind: 'shutdown_ready' });
  }
}

const sharedState = createSharedState();

/** Starts the I/O thread, binds the sockets, and serves until shutdown_request (then the process exits). */
export async function startKernel(options: KernelOptions): Promise<Kernel> {
  attachInterruptFlag(sharedState.subarray(SLOT_INTERRUPT, SLOT_INTERRUPT + 1));
  const logLevel = options.logLevel ?? logLevelFromEnv();
  const data: IoThreadData = {
    connection: options.connection,
    shared: sharedState,
    session: randomUUID(),
    kernelInfo: kernelInfoContent(),
    logLevel,
  };
  const io = new Worker(join(__dirname, 'io-thread.js'), { workerData: data });
  await new Promise<void>((resolve, reject) => {
    const onMessage = (message: ToMain): void => {
      if (message.kind === 'ready') resolve();
      else if (message.kind === 'fatal') reject(new Error(`kernel I/O thread: ${message.error}`));
      else return;
      io.off('message', onMessage);
    };
    io.on('message', onMessage);
    io.once('error', reject);
  });
  io.on('error', (error) => {
    createLogger('kernel', logLevel).error(`I/O thread failed: ${error.stack ?? String(error)}`);
    process.exit(1);
  });
  createLogger('kernel', logLevel).info(`sockets bound ${performance.now().toFixed(0)} ms after process start`);
  const kernel = new Kernel({ ...options, logLevel }, io, comms);
  kernel.install();
  return kernel;
}

export type { ReplyChannel };
