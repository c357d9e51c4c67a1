import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { huggingFaceCacheDir, isRepoId, resolveModelDir } from './hub';

const root = mkdtempSync(join(tmpdir(), 'fluxlab-hub-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('huggingFaceCacheDir', () => {
  it('follows huggingface_hub precedence', () => {
    assert.equal(huggingFaceCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }, '/home/u'), '/a');
    assert.equal(huggingFaceCacheDir({ HUGGINGFACE_HUB_CACHE: '/legacy', HF_HOME: '/b' }, '/home/u'), '/legacy');
    assert.equal(huggingFaceCacheDir({ HF_HOME: '/b' }, '/home/u'), '/b/hub');
    assert.equal(huggingFaceCacheDir({ HF_HOME: '~/hf' }, '/home/u'), '/home/u/hf/hub');
    assert.equal(huggingFaceCacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u'), '/x/huggingface/hub');
    assert.equal(huggingFaceCacheDir({}, '/home/u'), '/home/u/.cache/huggingface/hub');
  });
});

describe('isRepoId', () => {
  it('accepts org/name and rejects paths', () => {
    assert.ok(isRepoId('black-forest-labs/FLUX.1-dev'));
    assert.ok(!isRepoId('./FLUX.1-dev'));
    assert.ok(!isRepoId('/abs/path'));
    assert.ok(!isRepoId('a/b/c'));
    assert.ok(!isRepoId('../x'));
    assert.ok(!isRepoId('FLUX.1-dev'));
  });
});

describe('resolveModelDir', () => {
  const hub = join(root, 'hub');
  const repo = join(hub, 'models--black-forest-labs--FLUX.1-dev');
  const commit = 'a'.repeat(40);
  const older = 'b'.repeat(40);
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  mkdirSync(join(repo, 'refs'), { recursive: true });
  for (const c of [commit, older]) mkdirSync(join(repo, 'snapshots', c), { recursive: true });
  writeFileSync(join(repo, 'refs', 'main'), `${commit}\n`);
  writeFileSync(join(repo, 'blobs', 'deadbeef'), '{"_class_name": "FluxPipeline"}');
  symlinkSync(join('..', '..', 'blobs', 'deadbeef'), join(repo, 'snapshots', commit, 'model_index.json'));

  it('returns directories unchanged (absolute)', () => {
    assert.equal(resolveModelDir(root), root);
  });

  it('resolves a repo id through refs/main to its snapshot, whose files are symlinks into blobs', () => {
    const dir = resolveModelDir('black-forest-labs/FLUX.1-dev', { env: { HF_HUB_CACHE: hub } });
    assert.equal(dir, join(repo, 'snapshots', commit));
    assert.match(readFileSync(join(dir, 'model_index.json'), 'utf8'), /FluxPipeline/);
    assert.equal(resolveModelDir('black-forest-labs/FLUX.1-dev', { env: { HF_HOME: root } }), dir);
  });

  it('accepts a commit hash as revision', () => {
    assert.equal(
      resolveModelDir('black-forest-labs/FLUX.1-dev', { env: { HF_HUB_CACHE: hub }, revision: older }),
      join(repo, 'snapshots', older),
    );
  });

  it('explains what is missing', () => {
    assert.throws(
      () => resolveModelDir('black-forest-labs/FLUX.1-schnell', { env: { HF_HUB_CACHE: hub } }),
      /not in the Hugging Face cache \(looked for .*models--black-forest-labs--FLUX\.1-schnell.*huggingface-cli download/,
    );
    assert.throws(
      () => resolveModelDir('black-forest-labs/FLUX.1-dev', { env: { HF_HUB_CACHE: hub }, revision: 'v2' }),
      /no snapshot for revision 'v2'.*snapshots present: /,
    );
    assert.throws(() => resolveModelDir('./no/such/dir'), /is not a directory \(and not a Hugging Face repo id/);
  });
});
