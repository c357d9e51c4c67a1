#!/usr/bin/env node
// The README's test command (`npm test`): every compiled spec file of every workspace through
// node's test runner, then the Python protocol tests (jupyter_client, jupyter_kernel_test,
// nbclient) under test/. Run `npm run build` first. Arguments filter spec files by substring.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const filters = process.argv.slice(2);

function findSpecs(dir, out = []) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules') continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) findSpecs(path, out);
    else if (name.endsWith('.spec.js')) out.push(path);
  }
  return out;
}

const specs = ['native/dist', 'kernel/dist', 'test/dist']
  .flatMap((dir) => findSpecs(join(root, dir)))
  .filter((path) => filters.length === 0 || filters.some((f) => relative(root, path).includes(f)))
  .sort();

let failed = false;
if (specs.length > 0) {
  const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...specs], {
    cwd: root,
    stdio: 'inherit',
  });
  failed ||= run.status !== 0;
} else if (filters.length === 0) {
  console.error('no compiled spec files found: run `npm run build` first');
  failed = true;
}

const pythonTests = join(root, 'test', 'python');
if (filters.length === 0 && existsSync(pythonTests)) {
  const python = process.env.FLUXLAB_PYTHON ?? '/usr/bin/python3';
  // Without Python or pytest the protocol tests skip with the reason (they fail under CI=true); missing
  // Python modules are handled per test (test/python/conftest.py).
  const probe = spawnSync(python, ['-c', 'import pytest'], { stdio: 'ignore' });
  if (probe.error !== undefined || probe.status !== 0) {
    const reason = `${python} with pytest is not available (Debian: apt-get install python3-pytest)`;
    if (/^(1|true|yes)$/i.test(process.env.CI ?? '')) {
      console.error(`test/python: ${reason}, and CI=true`);
      failed = true;
    } else console.error(`test/python: SKIPPED, ${reason}`);
  } else {
    const run = spawnSync(python, ['-m', 'pytest', '-q', '-rs', pythonTests], { cwd: root, stdio: 'inherit' });
    failed ||= run.status !== 0;
  }
}

process.exit(failed ? 1 : 0);
