import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { install, kernelSpec, prebuiltLabextension } from './install.js';

const scratch = mkdtempSync(join(tmpdir(), 'fluxlab-install-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function pngSize(file: string): [number, number] {
  const png = readFileSync(file);
  assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], `${file} is not a PNG`);
  assert.equal(png.subarray(12, 16).toString('ascii'), 'IHDR');
  return [png.readUInt32BE(16), png.readUInt32BE(20)];
}

describe('fluxlab install', () => {
  it('writes kernel.json and both logos into <prefix>/share/jupyter/kernels/fluxlab', () => {
    const prefix = join(scratch, 'prefix');
    const result = install({ kind: 'prefix', prefix }, process.env, undefined);
    assert.equal(result.kernelDir, join(prefix, 'share', 'jupyter', 'kernels', 'fluxlab'));
    const spec = JSON.parse(readFileSync(join(result.kernelDir, 'kernel.json'), 'utf8'));
    assert.deepEqual(spec, kernelSpec());
    assert.equal(spec.display_name, 'TypeScript (fluxlab)');
    assert.equal(spec.language, 'typescript');
    assert.equal(spec.interrupt_mode, 'message');
    assert.deepEqual(spec.argv.slice(-3), ['kernel', '-f', '{connection_file}']);
    assert.ok(existsSync(spec.argv[1]), 'argv points at the fluxlab bin');
    assert.deepEqual(pngSize(join(result.kernelDir, 'logo-32x32.png')), [32, 32]);
    assert.deepEqual(pngSize(join(result.kernelDir, 'logo-64x64.png')), [64, 64]);
    assert.equal(result.labextensionDir, undefined);
  });

  it("copies the labextension's prebuilt output once it exists, and skips it before", () => {
    const pkg = join(scratch, 'labextension');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: '@fluxlab/labextension', jupyterlab: { outputDir: 'prebuilt' } }));
    assert.equal(prebuiltLabextension(join(pkg, 'package.json')), undefined);
    mkdirSync(join(pkg, 'prebuilt', 'static'), { recursive: true });
    writeFileSync(join(pkg, 'prebuilt', 'package.json'), JSON.stringify({ name: '@fluxlab/labextension' }));
    writeFileSync(join(pkg, 'prebuilt', 'static', 'remoteEntry.js'), '// built');
    const built = prebuiltLabextension(join(pkg, 'package.json'));
    assert.deepEqual(built, { dir: join(pkg, 'prebuilt'), name: '@fluxlab/labextension' });
    const result = install({ kind: 'prefix', prefix: join(scratch, 'with-ext') }, process.env, built);
    assert.equal(result.labextensionDir, join(scratch, 'with-ext', 'share', 'jupyter', 'labextensions', '@fluxlab', 'labextension'));
    assert.equal(readFileSync(join(result.labextensionDir, 'static', 'remoteEntry.js'), 'utf8'), '// built');
  });
});
