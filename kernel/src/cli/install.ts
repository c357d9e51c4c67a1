// `fluxlab install`: writes the kernelspec (kernel.json and logos) and, once the JupyterLab extension has been
// built, copies its prebuilt output into <data>/labextensions/ (JupyterLab loads prebuilt extensions from
// there without a rebuild).
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from './command.js';
import { dataDir, type InstallTarget } from './jupyter-paths.js';

export const usage = `usage: fluxlab install [--user | --sys-prefix | --prefix DIR]

Installs the Jupyter kernelspec 'fluxlab' ("TypeScript (fluxlab)") and, when labextension/ has been built,
the prebuilt JupyterLab extension.
  --user        into the user's Jupyter data dir (default; e.g. ~/.local/share/jupyter)
  --sys-prefix  into the active Python environment (virtualenv/conda, else python3's sys.prefix)
  --prefix DIR  into DIR/share/jupyter (point JUPYTER_PATH at DIR/share/jupyter to use it)`;

export const KERNEL_NAME = 'fluxlab';
export const DISPLAY_NAME = 'TypeScript (fluxlab)';

const PACKAGE_ROOT = join(__dirname, '..', '..');

export interface KernelSpec {
  argv: string[];
  display_name: string;
  language: string;
  interrupt_mode: 'message';
  metadata: Record<string, unknown>;
}

/** kernel.json: started with this Node binary and this package's bin, wherever Jupyter runs it from. */
export function kernelSpec(nodePath = process.execPath, binPath = join(PACKAGE_ROOT, 'bin', 'fluxlab.js')): KernelSpec {
  return {
    argv: [nodePath, binPath, 'kernel', '-f', '{connection_file}'],
    display_name: DISPLAY_NAME,
    language: 'typescript',
    interrupt_mode: 'message',
    metadata: { debugger: false },
  };
}

/**
 * The labextension's prebuilt output: the folder named by `jupyterlab.outputDir` in its package.json (what
 * `jupyter labextension build` writes), recognised by the package.json the build puts there.
 */
export function prebuiltLabextension(packageJsonPath?: string): { dir: string; name: string } | undefined {
  let path = packageJsonPath;
  if (path === undefined) {
    try {
      path = require.resolve('@fluxlab/labextension/package.json');
    } catch {
      return undefined;
    }
  }
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as { jupyterlab?: { outputDir?: unknown } };
  const outputDir = manifest.jupyterlab?.outputDir;
  if (typeof outputDir !== 'string') return undefined;
  const dir = resolve(dirname(path), outputDir);
  const builtManifest = join(dir, 'package.json');
  if (!existsSync(builtManifest)) return undefined;
  const name = (JSON.parse(readFileSync(builtManifest, 'utf8')) as { name?: unknown }).name;
  return typeof name === 'string' ? { dir, name } : undefined;
}

export interface InstallResult {
  kernelDir: string;
  labextensionDir?: string;
}

export function install(target: InstallTarget, env: NodeJS.ProcessEnv = process.env, labextension = prebuiltLabextension()): InstallResult {
  const data = dataDir(target, env);
  const kernelDir = join(data, 'kernels', KERNEL_NAME);
  mkdirSync(kernelDir, { recursive: true });
  writeFileSync(join(kernelDir, 'kernel.json'), `${JSON.stringify(kernelSpec(), null, 2)}\n`);
  for (const logo of ['logo-32x32.png', 'logo-64x64.png']) copyFileSync(join(PACKAGE_ROOT, 'assets', 'kernelspec', logo), join(kernelDir, logo));
  if (labextension === undefined) return { kernelDir };
  const labextensionDir = join(data, 'labextensions', ...labextension.name.split('/'));
  rmSync(labextensionDir, { recursive: true, force: true });
  cpSync(labextension.dir, labextensionDir, { recursive: true });
  return { kernelDir, labextensionDir };
}

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { user: { type: 'boolean' }, 'sys-prefix': { type: 'boolean' }, prefix: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const chosen = [values.user === true, values['sys-prefix'] === true, values.prefix !== undefined].filter(Boolean).length;
  if (chosen > 1) throw new UsageError('choose one of --user, --sys-prefix, --prefix');
  const target: InstallTarget =
    values.prefix !== undefined ? { kind: 'prefix', prefix: resolve(values.prefix) } : values['sys-prefix'] === true ? { kind: 'sys-prefix' } : { kind: 'user' };
  const result = install(target);
  process.stdout.write(`Installed kernelspec ${KERNEL_NAME} in ${result.kernelDir}\n`);
  if (result.labextensionDir !== undefined) process.stdout.write(`Installed JupyterLab extension in ${result.labextensionDir}\n`);
  return 0;
}
