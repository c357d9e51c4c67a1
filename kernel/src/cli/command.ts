// The shape of a `fluxlab` sub-command module (one module per sub-command; see commands.ts).

export interface CommandModule {
  /** Full usage text for `fluxlab <command> --help`. */
  usage: string;
  /** Runs the command; resolves to the process exit status. */
  run(args: string[]): Promise<number>;
}

/** Bad arguments: `fluxlab` prints the message and the command's usage, and exits with status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** `value` of `option` as an integer ≥ min (a UsageError naming the option otherwise). */
export function integerOption(option: string, value: string, min: number): number {
  const n = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`${option} expects an integer ≥ ${min}, got '${value}'`);
  return n;
}
