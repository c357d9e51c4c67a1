// `fluxlab` command dispatcher.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from './command.js';
import { commands } from './commands.js';

function version(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

function help(): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  const lines = Object.entries(commands).map(([name, entry]) => `  ${name.padEnd(width)}  ${entry.summary}`);
  return `usage: fluxlab <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n'fluxlab <command> --help' describes a command.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process[name === undefined ? 'stderr' : 'stdout'].write(help());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const entry = commands[name];
  if (entry === undefined) {
    process.stderr.write(`fluxlab: unknown command '${name}'\n\n${help()}`);
    return 2;
  }
  const command = entry.load();
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(args);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`fluxlab ${name}: ${error.message}\n\n${command.usage}\n`);
      return 2;
    }
    process.stderr.write(`fluxlab ${name}: ${error instanceof Error ? error.message : String(error)}\n`);
    if (process.env.FLUXLAB_DEBUG === '1' && error instanceof Error) process.stderr.write(`${error.stack ?? ''}\n`);
    return 1;
  }
}
