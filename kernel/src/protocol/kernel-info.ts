// kernel_info_reply content (messaging spec 5.4, "Kernel info"). Built from package.json files only, so the
// I/O thread can answer before the main thread has loaded the TypeScript compiler.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROTOCOL_VERSION } from './wire.js';

/** The kernel package's root folder (kernel/), from dist/protocol/. */
export const PACKAGE_ROOT = join(__dirname, '..', '..');

function packageVersion(packageJson: string): string {
  try {
    const version = (JSON.parse(readFileSync(packageJson, 'utf8')) as { version?: unknown }).version;
    return typeof version === 'string' ? version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function kernelInfoContent(): Record<string, unknown> {
  const version = packageVersion(join(PACKAGE_ROOT, 'package.json'));
  const typescriptVersion = packageVersion(require.resolve('typescript/package.json'));
  return {
    status: 'ok',
    protocol_version: PROTOCOL_VERSION,
    implementation: 'fluxlab',
    implementation_version: version,
    language_info: {
      name: 'typescript',
      version: typescriptVersion,
      mimetype: 'text/typescript',
      file_extension: '.ts',
      pygments_lexer: 'typescript',
      codemirror_mode: { name: 'javascript', typescript: true },
      nbconvert_exporter: 'script',
    },
    banner:
      `fluxlab ${version}: TypeScript ${typescriptVersion} on Node.js ${process.version}\n` +
      'Top-level await; import node builtins, npm packages from the notebook folder, and fluxlab itself.\n' +
      'display(value), display.html/markdown/svg/png/json(…), clearOutput(), await input(prompt).',
    help_links: [
      { text: 'TypeScript handbook', url: 'https://www.typescriptlang.org/docs/handbook/intro.html' },
      { text: 'Node.js API', url: `https://nodejs.org/docs/${process.version}/api/` },
    ],
    debugger: false,
  };
}
