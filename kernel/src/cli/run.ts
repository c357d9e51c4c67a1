// `fluxlab run NOTEBOOK.ipynb [--out OUT.ipynb] [--timeout S]`: executes a notebook headless with the fluxlab
// kernel and saves its outputs; the exit status is 1 when a cell fails.
import { parseArgs } from 'node:util';
import { runNotebook } from '../protocol/notebook-runner.js';
import { UsageError } from './command.js';

export const usage = `usage: fluxlab run NOTEBOOK.ipynb [--out OUT.ipynb] [--timeout SECONDS]

Starts a fluxlab kernel in the notebook's folder, executes every code cell in order over ZeroMQ (no Python
or Jupyter needed), stops at the first cell that fails, and saves the outputs (images included) into
NOTEBOOK.ipynb, or into OUT.ipynb with --out. Exit status 1 when a cell fails or times out.
  --out FILE       save the executed notebook here instead of over NOTEBOOK.ipynb
  --timeout S      interrupt a cell that runs longer than S seconds and fail (default: no limit)`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { out: { type: 'string', short: 'o' }, timeout: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError('expected exactly one notebook');
  let timeoutSeconds: number | undefined;
  if (values.timeout !== undefined) {
    timeoutSeconds = Number(values.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw new UsageError(`--timeout must be a positive number of seconds, got '${values.timeout}'`);
  }
  const result = await runNotebook({
    notebook: positionals[0],
    out: values.out,
    timeoutSeconds,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  if (!result.ok) process.stderr.write(`fluxlab run: ${result.failure ?? 'failed'}\n`);
  process.stdout.write(`Executed ${result.executed} cell(s); saved the notebook to ${result.out}\n`);
  return result.ok ? 0 : 1;
}
