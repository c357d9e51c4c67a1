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
