// Kernel diagnostics go straight to file descriptor 2: process.stderr is captured into the notebook while
// cells run, and a worker thread's process.stderr is relayed through the (possibly busy) main thread.
import { writeSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** At most `perWindow` messages per 10 s for this key, then one summary of how many were suppressed. */
  limited(key: string, level: LogLevel, message: string): void;
}

export function logLevelFromEnv(): LogLevel {
  const level = process.env.FLUXLAB_LOG_LEVEL;
  return level === 'debug' || level === 'info' || level === 'warn' || level === 'error' ? level : 'warn';
}

export function createLogger(name: string, level: LogLevel = logLevelFromEnv(), perWindow = 20): Logger {
  const write = (at: LogLevel, message: string): void => {
    if (ORDER[at] < ORDER[level]) return;
    try {
      writeSync(2, `[fluxlab ${name}] ${at}: ${message}\n`);
    } catch {
      // stderr closed: nothing sensible left to do with a diagnostic.
    }
  };
  const windows = new Map<string, { start: number; count: number }>();
  return {
    debug: (m) => write('debug', m),
    info: (m) => write('info', m),
    warn: (m) => write('warn', m),
    error: (m) => write('error', m),
    limited(key, at, message) {
      const now = Date.now();
      let window = windows.get(key);
      if (window === undefined || now - window.start > 10_000) {
        if (window !== undefined && window.count > perWindow) write(at, `${key}: ${window.count - perWindow} more suppressed`);
        window = { start: now, count: 0 };
        windows.set(key, window);
      }
      window.count += 1;
      if (window.count <= perWindow) write(at, message);
      else if (window.count === perWindow + 1) write(at, `${key}: further messages suppressed for 10 s`);
    },
  };
}
