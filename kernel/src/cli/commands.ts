// The `fluxlab` sub-commands. To add one, write src/cli/<name>.ts exporting `usage` and `run` (see
// command.ts) and add a line here; modules load only when their command runs, so startup stays fast.
import type { CommandModule } from './command.js';

export interface CommandEntry {
  summary: string;
  load(): CommandModule;
}

export const commands: Record<string, CommandEntry> = {
  install: { summary: 'install the Jupyter kernelspec (and the JupyterLab extension when built)', load: () => require('./install.js') as CommandModule },
  kernel: { summary: 'run the kernel on a connection file (what kernel.json starts)', load: () => require('./kernel.js') as CommandModule },
  generate: { summary: 'generate images with a FLUX.1 pipeline (diffusers FluxPipeline numerics)', load: () => require('./generate.js') as CommandModule },
  run: { summary: 'execute a notebook headless and save its outputs', load: () => require('./run.js') as CommandModule },
  bench: { summary: 'benchmark the FLUX.1 pipeline per quantization and compile mode (the diffusers guide\'s table)', load: () => require('./bench.js') as CommandModule },
};
