import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Checkpoint } from './checkpoint';
import { writeSafetensors } from './safetensors';

const root = mkdtempSync(join(tmpdir(), 'fluxlab-checkpoint-'));
after(() => rmSync(root, { recursive: true, force: true }));

function component(name: string): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

describe('Checkpoint', () => {
  it('opens a single file', () => {
    const dir = component('single');
    writeSafetensors(join(dir, 'model.safetensors'), [['w', { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }]]);
    const ckpt = Checkpoint.open(dir, 'model');
    assert.deepEqual(ckpt.names(), ['w']);
    assert.deepEqual([...(ckpt.get('w').file.readArray('w') as Float32Array)], [1, 2]);
    assert.throws(() => ckpt.get('v'), /has no tensor 'v' \(model\.safetensors\)/);
  });

  it('opens shards through the index, as FLUX.1-dev ships its transformer and T5', () => {
    const dir = component('sharded');
    const a = 'diffusion_pytorch_model-00001-of-00002.safetensors';
    const b = 'diffusion_pytorch_model-00002-of-00002.safetensors';
    writeSafetensors(join(dir, a), [['x.weight', { dtype: 'F32', shape: [1], data: new Float32Array([3]) }]]);
    writeSafetensors(join(dir, b), [
      ['y.weight', { dtype: 'F32', shape: [1], data: new Float32Array([4]) }],
      ['y.bias', { dtype: 'F32', shape: [1], data: new Float32Array([5]) }],
    ]);
    writeFileSync(
      join(dir, 'diffusion_pytorch_model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 12 }, weight_map: { 'x.weight': a, 'y.weight': b, 'y.bias': b } }),
    );
    const ckpt = Checkpoint.open(dir, 'diffusion_pytorch_model');
    assert.equal(ckpt.files.length, 2);
    assert.deepEqual(ckpt.names().sort(), ['x.weight', 'y.bias', 'y.weight']);
    assert.equal(ckpt.get('y.bias').file.name, b);
  });

  it('names missing shards and tensors absent from their shard', () => {
    const dir = component('broken');
    writeSafetensors(join(dir, 's1.safetensors'), [['x', { dtype: 'F32', shape: [1], data: new Float32Array([3]) }]]);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 's1.safetensors', y: 's2.safetensors' } }));
    assert.throws(() => Checkpoint.open(dir, 'model'), /s2\.safetensors: tensor 'y': shard listed in .* is missing/);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 's1.safetensors', z: 's1.safetensors' } }));
    assert.throws(() => Checkpoint.open(dir, 'model'), /s1\.safetensors: tensor 'z': listed in .* but absent from the shard/);
  });

  it('explains a directory without safetensors weights', () => {
    const dir = component('pickle');
    writeFileSync(join(dir, 'pytorch_model.bin'), '');
    assert.throws(() => Checkpoint.open(dir, 'model'), /no weights \(expected model\.safetensors.*only pickled PyTorch weights/);
  });

  it('selects a variant', () => {
    const dir = component('variant');
    writeSafetensors(join(dir, 'model.fp16.safetensors'), [['w', { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) }]]);
    assert.deepEqual([...(Checkpoint.open(dir, 'model', { variant: 'fp16' }).get('w').file.readArray('w') as Float32Array)], [1]);
  });
});
