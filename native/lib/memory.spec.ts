// Memory statistics: host and device allocate/free cycles return to their baseline, tags attribute memory,
// peaks reset, pinned buffers detach on dispose, the caching allocator reuses and empties, OOM is an exception.
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, it } from 'node:test';
import { cuda } from './cuda';
import { memory, pinned } from './memory';
import { ops } from './ops';
import { tidy } from './scope';
import { Tensor } from './tensor';
import { gpuOrSkip } from './testing/helpers';

describe('host memory', () => {
  it('allocate/free cycles return to the baseline', () => {
    const before = memory.hostStats();
    for (let i = 0; i < 5; i++) {
      tidy(() => {
        const a = Tensor.zeros([1000, 77]);
        const b = ops.add(a, a);
        ops.linear(b, Tensor.ones([13, 77]));
      });
    }
    const after = memory.hostStats();
    assert.equal(after.allocated, before.allocated);
    assert.equal(after.numAllocs - before.numAllocs, after.numFrees - before.numFrees);
    assert.ok(after.numAllocs > before.numAllocs);
  });

  it('withTag attributes allocations; the peak resets', () => {
    memory.resetHostPeak();
    const base = memory.hostStats();
    const t = memory.withTag('text_encoder', () => Tensor.zeros([256], { dtype: 'float32' }));
    const s = memory.hostStats();
    assert.equal(s.byTag['text_encoder'], 1024);
    assert.equal(s.allocated - base.allocated, 1024);
    assert.ok(s.peakAllocated >= s.allocated);
    t.dispose();
    assert.equal(memory.hostStats().byTag['text_encoder'] ?? 0, 0);
    memory.resetHostPeak();
    assert.equal(memory.hostStats().peakAllocated, memory.hostStats().allocated);
    assert.throws(() => memory.withTag('x', () => { throw new Error('inner'); }), /inner/);
    const untagged = Tensor.zeros([1]);
    assert.equal(untagged.describe(), '[1] float32 cpu');
    untagged.dispose();
  });

  it('pinned buffers are counted and detached on dispose', () => {
    const base = memory.hostStats();
    const buf = pinned(4096);
    assert.equal(buf.byteLength, 4096);
    assert.equal(buf.pinned, cuda.isAvailable());
    const view = buf.bytes;
    view[4095] = 7;
    assert.equal(buf.bytes[4095], 7);
    assert.equal(memory.hostStats().allocated - base.allocated, 4096);
    buf.dispose();
    assert.equal(view.length, 0, 'views see a detached buffer, never freed memory');
    assert.equal(memory.hostStats().allocated, base.allocated);
    assert.throws(() => buf.bytes, /used after dispose/);
  });

  it('the garbage collector reports tensors that were never disposed', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const before = memory.leakedTensors();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    (() => {
      for (let i = 0; i < 8; i++) Tensor.zeros([16]);
    })();
    for (let i = 0; i < 50 && memory.leakedTensors() === before; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    process.off('warning', onWarning);
    assert.ok(memory.leakedTensors() > before, 'leaks counted');
  });

  it('device statistics throw a clear error without CUDA', (t) => {
    if (cuda.isAvailable()) {
      t.skip('CUDA available: covered by the device tests');
      return;
    }
    assert.throws(() => memory.stats(), (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_NO_CUDA' && /memory\.stats/.test(e.message));
    assert.throws(() => Tensor.zeros([1], { device: 'cuda' }), /CUDA is unavailable/);
  });
});

describe('device memory (caching allocator)', () => {
  it('allocate/free cycles return allocated to the baseline and reuse cached blocks', (t) => {
    if (!gpuOrSkip(t)) return;
    cuda.synchronize();
    const base = memory.stats();
    for (let i = 0; i < 10; i++) {
      tidy(() => {
        const a = Tensor.zeros([1000, 333], { device: 'cuda' });
        ops.gelu(ops.add(a, a));
      });
    }
    const after = memory.stats();
    assert.equal(after.allocated, base.allocated);
    assert.equal(after.numAllocs - base.numAllocs, after.numFrees - base.numFrees);
    assert.ok(after.numCudaMallocs - base.numCudaMallocs <= 3, 'cached blocks are reused, not re-malloced');
    assert.ok(after.reserved >= after.allocated);
    assert.ok(after.total > 0 && after.free > 0);
  });

  it('tags, peak reset and emptyCache', (t) => {
    if (!gpuOrSkip(t)) return;
    memory.resetPeak();
    const base = memory.stats();
    const big = memory.withTag('transformer', () => Tensor.zeros([64 << 20], { device: 'cuda', dtype: 'uint8' }));
    const s = memory.stats();
    assert.equal(s.byTag['transformer'], 64 << 20);
    assert.ok(s.peakAllocated >= base.allocated + (64 << 20));
    big.dispose();
    assert.equal(memory.stats().allocated, base.allocated);
    memory.emptyCache();
    const emptied = memory.stats();
    assert.ok(emptied.reserved < s.reserved, 'cached segments returned to the driver');
    memory.resetPeak();
    assert.equal(memory.stats().peakAllocated, memory.stats().allocated);
  });

  it('an impossible allocation throws ERR_FLUXLAB_OOM and leaves the device usable', (t) => {
    if (!gpuOrSkip(t)) return;
    assert.throws(
      () => Tensor.empty([1 << 30, 1 << 20], { device: 'cuda', dtype: 'uint8' }),
      (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_OOM' && /out of memory/.test(e.message),
    );
    const ok = Tensor.ones([4], { device: 'cuda' });
    assert.deepEqual([...(ok.toArray() as Float32Array)], [1, 1, 1, 1]);
    ok.dispose();
  });
});
