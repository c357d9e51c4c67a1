// `fluxlab kernel -f CONNECTION_FILE`: what kernel.json runs. Wires the protocol to this package's entry
// (what cells import as 'fluxlab') and to the native addon's GPU memory figures.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readConnectionFile } from '../protocol/connection.js';
import { startKernel } from '../protocol/kernel.js';
import { UsageError } from './command.js';
import { nativeGpuMemory } from './gpu-memory.js';

export const usage = `usage: fluxlab kernel -f CONNECTION_FILE

Runs the fluxlab Jupyter kernel on the sockets and key of a Jupyter connection file. Jupyter starts this
through the kernelspec that 'fluxlab install' writes. FLUXLAB_LOG_LEVEL=debug|info|warn|error sets how
much the kernel logs to stderr (default warn).`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { f: { type: 'string', short: 'f' }, 'connection-file': { type: 'string' } },
    strict: true,
  });
  const file = values.f ?? values['connection-file'];
  if (file === undefined) throw new UsageError('missing -f CONNECTION_FILE');
  const entry = join(__dirname, '..', 'index.js');
  await startKernel({
    connection: readConnectionFile(file),
    packageEntry: entry,
    packageTypes: entry.replace(/\.js$/, '.d.ts'),
    gpuMemory: nativeGpuMemory,
  });
  // Serves until shutdown_request; the kernel ends the process itself.
  return new Promise<number>(() => undefined);
}
