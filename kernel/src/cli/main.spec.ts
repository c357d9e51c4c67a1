import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const BIN = join(__dirname, '..', '..', 'bin', 'fluxlab.js');

function fluxlab(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
}

describe('fluxlab command', () => {
  it('lists its commands and prints its version', () => {
    const help = fluxlab('--help');
    assert.equal(help.status, 0);
    for (const name of ['install', 'kernel', 'run']) assert.match(help.stdout, new RegExp(`^  ${name} `, 'm'));
    assert.match(fluxlab('--version').stdout, /^\d+\.\d+\.\d+/);
  });

  it('explains bad usage with exit status 2', () => {
    assert.equal(fluxlab().status, 2);
    const unknown = fluxlab('frobnicate');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command 'frobnicate'/);
    const missing = fluxlab('kernel');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /missing -f CONNECTION_FILE/);
    assert.equal(fluxlab('install', '--user', '--prefix', '/x').status, 2);
    assert.match(fluxlab('run', '--help').stdout, /usage: fluxlab run NOTEBOOK\.ipynb/);
  });
});
