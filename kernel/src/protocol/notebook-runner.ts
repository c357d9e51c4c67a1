// Executes a notebook headless over ZeroMQ (no Python): starts a fluxlab kernel in the notebook's folder, runs
// every code cell in order, stops at the first error (like nbclient), and saves outputs, images included, and
// execution counts into the notebook.
import { dirname, resolve } from 'node:path';
import { KernelClient, launchKernel, type LaunchedKernel } from './client.js';
import { cellSource, OutputCollector, readNotebook, writeNotebook } from './notebook.js';
import type { JsonObject } from './wire.js';

export interface RunNotebookOptions {
  notebook: string;
  /** Where to save the executed notebook; default: over the input. */
  out?: string;
  /** Per-cell limit in seconds; the cell is interrupted and the run fails when it is exceeded. */
  timeoutSeconds?: number;
  /** Progress lines (one per cell). */
  progress?: (line: string) => void;
  /** Kernel command (see LaunchOptions.argv); default this package's `fluxlab kernel`. */
  kernelArgv?: string[];
}

export interface RunNotebookResult {
  ok: boolean;
  out: string;
  executed: number;
  /** 0-based index of the cell that failed or timed out. */
  failedCell?: number;
  failure?: string;
}

const INTERRUPT_GRACE_MS = 10_000;

export async function runNotebook(options: RunNotebookOptions): Promise<RunNotebookResult> {
  const notebookPath = resolve(options.notebook);
  const out = resolve(options.out ?? notebookPath);
  const notebook = readNotebook(notebookPath);
  const progress = options.progress ?? (() => undefined);
  const kernel: LaunchedKernel = await launchKernel({ cwd: dirname(notebookPath), argv: options.kernelArgv });
  const exited = new Promise<void>((done) => kernel.process.once('exit', () => done()));
  let kernelGone: string | undefined;
  kernel.process.once('exit', (code, signal) => (kernelGone = `kernel exited (${signal ?? `status ${code}`})`));
  const client = new KernelClient(kernel.connection);
  const collector = new OutputCollector();
  const result: RunNotebookResult = { ok: true, out, executed: 0 };
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) kernel.dispose();
    else void client.interrupt().catch(() => undefined);
  };
  process.on('SIGINT', onSigint);
  try {
    const info = await Promise.race([
      client.waitForReady(60_000),
      exited.then(() => Promise.reject(new Error(kernelGone ?? 'kernel exited'))),
    ]);
    notebook.metadata.kernelspec = { name: 'fluxlab', display_name: 'TypeScript (fluxlab)', language: 'typescript' };
    notebook.metadata.language_info = (info.content.language_info as JsonObject | undefined) ?? {};

    const codeCells = notebook.cells.map((cell, index) => ({ cell, index })).filter(({ cell }) => cell.cell_type === 'code');
    for (const [position, { cell, index }] of codeCells.entries()) {
      const code = cellSource(cell);
      if (code.trim() === '') continue;
      collector.begin(cell);
      const started = performance.now();
      const execution = client.execute(code, { onOutput: (message) => collector.add(message) });
      const timeoutMs = options.timeoutSeconds === undefined ? undefined : options.timeoutSeconds * 1000;
      let timedOut = false;
      const timers: NodeJS.Timeout[] = [];
      const stuck = new Promise<{ reply: undefined; reason: string }>((done) => {
        if (timeoutMs === undefined) return;
        timers.push(
          setTimeout(() => {
            timedOut = true;
            void client.interrupt().catch(() => undefined);
          }, timeoutMs),
          setTimeout(() => done({ reply: undefined, reason: `cell ${index} did not stop within ${INTERRUPT_GRACE_MS / 1000} s of an interrupt` }), timeoutMs + INTERRUPT_GRACE_MS),
        );
      });
      const settled = await Promise.race([
        execution.then((reply) => ({ reply, reason: '' })),
        exited.then(() => ({ reply: undefined, reason: kernelGone ?? 'kernel exited' })),
        stuck,
      ]).finally(() => timers.forEach((timer) => clearTimeout(timer)));
      if (settled.reply === undefined) {
        result.ok = false;
        result.failedCell = index;
        result.failure = settled.reason;
        collector.push({ output_type: 'error', ename: 'DeadKernelError', evalue: settled.reason, traceback: [`DeadKernelError: ${settled.reason}`] });
        break;
      }
      const reply = settled.reply.content;
      cell.execution_count = typeof reply.execution_count === 'number' ? reply.execution_count : null;
      result.executed += 1;
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      progress(`[${position + 1}/${codeCells.length}] cell ${index}: ${String(reply.status)} (${seconds} s)`);
      if (timedOut) {
        const message = `cell ${index} did not finish within ${options.timeoutSeconds} s and was interrupted`;
        collector.push({ output_type: 'error', ename: 'CellTimeoutError', evalue: message, traceback: [`CellTimeoutError: ${message}`] });
        result.ok = false;
        result.failedCell = index;
        result.failure = message;
        break;
      }
      if (reply.status !== 'ok') {
        result.ok = false;
        result.failedCell = index;
        result.failure = `cell ${index} raised ${String(reply.ename)}: ${String(reply.evalue)}`;
        break;
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    writeNotebook(out, notebook);
    if (kernel.process.exitCode === null && kernel.process.signalCode === null) {
      // Unref'd: these bounds must not keep the process alive once the kernel is gone.
      await Promise.race([client.shutdown().catch(() => undefined), new Promise((r) => setTimeout(r, INTERRUPT_GRACE_MS).unref())]);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
    }
    client.close();
    kernel.dispose();
  }
  return result;
}
