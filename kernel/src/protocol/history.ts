// history_request (messaging spec, "History"): this kernel session's executions, kept in memory. Entries are
// [session, line, input] or, with `output`, [session, line, [input, output]]; line = execution_count.

export interface HistoryEntry {
  line: number;
  input: string;
  /** text/plain of the execute_result, if the cell had one. */
  output: string | null;
}

type HistoryRow = [number, number, string | [string, string | null]];

/** SQLite GLOB semantics, as IPython's history search uses: `*`, `?`, `[…]`, `[^…]`, case-sensitive, whole input. */
export function globToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i];
    if (char === '*') source += '[\\s\\S]*';
    else if (char === '?') source += '[\\s\\S]';
    else if (char === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close < 0) {
        source += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, close);
      const negated = body.startsWith('^');
      if (negated) body = body.slice(1);
      source += `[${negated ? '^' : ''}${body.replace(/[\\\]]/g, '\\$&')}]`;
      i = close;
    } else source += char.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

export class History {
  /** Sessions are numbered per kernel process; clients may also say 0 ("current"). */
  readonly session = 1;
  private readonly entries: HistoryEntry[] = [];

  add(line: number, input: string): void {
    this.entries.push({ line, input, output: null });
  }

  setOutput(line: number, output: string): void {
    const entry = this.entries.findLast((e) => e.line === line);
    if (entry !== undefined) entry.output = output;
  }

  all(): readonly HistoryEntry[] {
    return this.entries;
  }

  request(content: Record<string, unknown>): HistoryRow[] {
    const withOutput = content.output === true;
    const n = typeof content.n === 'number' && content.n >= 0 ? Math.floor(content.n) : undefined;
    let selected: HistoryEntry[];
    switch (content.hist_access_type) {
      case 'tail':
        selected = n === undefined ? [...this.entries] : this.entries.slice(Math.max(0, this.entries.length - n));
        break;
      case 'range': {
        const requested = typeof content.session === 'number' ? content.session : 0;
        const session = requested <= 0 ? requested + this.session : requested;
        if (session !== this.session) {
          selected = [];
          break;
        }
        const start = typeof content.start === 'number' ? content.start : 0;
        const stop = typeof content.stop === 'number' ? content.stop : Number.POSITIVE_INFINITY;
        selected = this.entries.filter((e) => e.line >= start && e.line < stop);
        break;
      }
      case 'search': {
        const pattern = globToRegExp(typeof content.pattern === 'string' ? content.pattern : '*');
        let matches = this.entries.filter((e) => pattern.test(e.input));
        if (content.unique === true) {
          const seen = new Set<string>();
          matches = matches.reverse().filter((e) => !seen.has(e.input) && seen.add(e.input) !== undefined).reverse();
        }
        selected = n === undefined ? matches : matches.slice(Math.max(0, matches.length - n));
        break;
      }
      default:
        throw new Error(`unknown hist_access_type ${JSON.stringify(content.hist_access_type)}`);
    }
    return selected.map((e) => [this.session, e.line, withOutput ? [e.input, e.output] : e.input]);
  }
}
