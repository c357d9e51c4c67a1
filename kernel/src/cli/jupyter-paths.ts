// Jupyter data directories as jupyter_core.paths defines them (kernelspecs go to <data>/kernels/<name>,
// prebuilt JupyterLab extensions to <data>/labextensions/<package>).
import { spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';

export type InstallTarget = { kind: 'user' } | { kind: 'sys-prefix' } | { kind: 'prefix'; prefix: string };

type Env = Record<string, string | undefined>;

/** jupyter_core.paths.jupyter_data_dir(). */
export function userDataDir(env: Env = process.env, platform: NodeJS.Platform = process.platform, home = homedir()): string {
  if (env.JUPYTER_DATA_DIR) return env.JUPYTER_DATA_DIR;
  if (platform === 'darwin') return join(home, 'Library', 'Jupyter');
  if (platform === 'win32') return join(env.APPDATA ?? join(home, 'AppData', 'Roaming'), 'jupyter');
  return join(env.XDG_DATA_HOME || join(home, '.local', 'share'), 'jupyter');
}

/**
 * sys.prefix of the Python environment Jupyter runs in: the active virtualenv or conda environment, else what
 * `python3` on PATH reports.
 */
export function pythonPrefix(env: Env = process.env): string {
  if (env.VIRTUAL_ENV) return env.VIRTUAL_ENV;
  if (env.CONDA_PREFIX) return env.CONDA_PREFIX;
  const python = spawnSync(env.PYTHON ?? 'python3', ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' });
  const prefix = python.status === 0 ? python.stdout.trim() : '';
  if (prefix === '') throw new Error('cannot find the Python environment for --sys-prefix (no python3 on PATH): use --prefix DIR');
  return prefix;
}

export function dataDir(target: InstallTarget, env: Env = process.env): string {
  switch (target.kind) {
    case 'user':
      return userDataDir(env);
    case 'sys-prefix':
      return join(pythonPrefix(env), 'share', 'jupyter');
    case 'prefix':
      return join(target.prefix, 'share', 'jupyter');
  }
}
