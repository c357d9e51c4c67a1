// CUDA runtime surface on the GPU: devices, streams, events, withStream, recordStream, loading files to the
// device, and asynchronous copies through pinned memory.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cuda, Event, Stream } from './cuda';
import { memory, pinned } from './memory';
import { ops } from './ops';
import { tidy } from './scope';
import { Tensor } from './tensor';
import { buildInfo } from './index';
import { gpuOrSkip, randn } from './testing/helpers';

describe('CUDA runtime', () => {
  it('reports the device and how the addon was built', (t) => {
    const info = buildInfo();
    assert.equal(typeof info.cuda, 'boolean');
    if (!gpuOrSkip(t)) return;
    assert.ok(info.cuda);
    assert.ok(cuda.deviceCount() >= 1);
    const p = cuda.deviceProperties(0);
    assert.ok(p.name.length > 0 && p.totalMemory > 0 && p.multiProcessorCount > 0);
    console.log(`device 0: ${p.name}, sm_${p.major}${p.minor}, ${p.multiProcessorCount} SMs, ${(p.totalMemory / 2 ** 30).toFixed(1)} GiB; addon targets ${info.cudaArchs}`);
    assert.equal(cuda.currentDevice(), 0);
  });

  it('ops run on the stream given by withStream; events order work across streams', (t) => {
    if (!gpuOrSkip(t)) return;
    const side = new Stream();
    tidy(() => {
      const x = Tensor.fromArray(randn(1 << 20, 1), [1 << 20], { device: 'cuda' });
      const y = cuda.withStream(side, () => {
        assert.equal(cuda.currentStream().id, side.id);
        x.recordStream(side);
        return ops.scale(ops.exp(x), 2);
      });
      assert.equal(cuda.currentStream().id, 0, 'previous stream restored');
      const done = side.recordEvent();
      cuda.defaultStream().waitEvent(done);
      const z = ops.add(y, y);
      side.synchronize();
      assert.ok(side.query());
      const ref = (x.toArray() as Float32Array).map((v) => 4 * Math.exp(v));
      const got = z.toArray() as Float32Array;
      for (let i = 0; i < got.length; i += 4099) assert.ok(Math.abs(got[i] - ref[i]) <= 1e-5 * Math.abs(ref[i]) + 1e-6);
      done.dispose();
    });
    side.dispose();
  });

  it('timing events measure elapsed time', (t) => {
    if (!gpuOrSkip(t)) return;
    const start = new Event({ timing: true });
    const end = new Event({ timing: true });
    tidy(() => {
      const a = Tensor.ones([1024, 1024], { device: 'cuda' });
      start.record();
      for (let i = 0; i < 4; i++) ops.matmul(a, a);
      end.record();
      end.synchronize();
    });
    const ms = start.elapsedMs(end);
    assert.ok(ms > 0 && ms < 10_000, `elapsed ${ms} ms`);
    start.dispose();
    end.dispose();
  });

  it('fromFile streams a byte range to the device, converting dtypes', (t) => {
    if (!gpuOrSkip(t)) return;
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-cuda-'));
    try {
      const n = (9 << 20) + 7; // crosses the 16 MiB staging chunks
      const values = randn(n, 3);
      const path = join(dir, 'w.bin');
      writeFileSync(path, Buffer.concat([Buffer.alloc(13), Buffer.from(values.buffer)]));
      tidy(() => {
        const g = Tensor.fromFile(path, 13, [n], 'float32', { device: 'cuda', dtype: 'bfloat16' });
        const c = Tensor.fromFile(path, 13, [n], 'float32', { dtype: 'bfloat16' });
        assert.ok(Buffer.from(g.toBytes()).equals(Buffer.from(c.toBytes())));
        const f = Tensor.fromFile(path, 13, [n], 'float32', { device: 'cuda' });
        assert.ok(Buffer.from(f.toBytes()).equals(Buffer.from(values.buffer)));
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('pinned host tensors copy asynchronously and land intact', (t) => {
    if (!gpuOrSkip(t)) return;
    const buf = pinned(1 << 20);
    assert.ok(buf.pinned);
    assert.ok(memory.hostStats().pinned >= 1 << 20);
    buf.dispose();
    tidy(() => {
      const host = Tensor.fromArray(randn(1 << 18, 5), [1 << 18]).to({ pinned: true });
      assert.ok(host.pinned);
      const dev = host.to({ device: 'cuda', nonBlocking: true });
      const back = dev.to({ device: 'cpu', pinned: true, nonBlocking: true });
      cuda.synchronize();
      assert.ok(Buffer.from(back.toBytes()).equals(Buffer.from(host.toBytes())));
    });
  });
});

describe('cuda.profile', () => {
  it('needs CUDA: throws ERR_FLUXLAB_NO_CUDA without it', (t) => {
    if (cuda.isAvailable()) {
      t.skip('CUDA is available here');
      return;
    }
    assert.throws(() => cuda.profile(() => 1), (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_NO_CUDA');
  });

  it('times each op on the GPU, grouped by op and shapes, with graph replays as one op', (t) => {
    if (!gpuOrSkip(t)) return;
    const x = Tensor.randn([512, 1024], { seed: 1, device: 'cuda', dtype: 'bfloat16' });
    const w = Tensor.randn([2048, 1024], { seed: 2, device: 'cuda', dtype: 'bfloat16', std: 1 / 32 });
    const small = Tensor.randn([16, 1024], { seed: 3, device: 'cuda', dtype: 'bfloat16' });
    try {
      const profile = cuda.profile(() =>
        tidy(() => {
          for (let i = 0; i < 3; i++) ops.linear(x, w);
          ops.linear(small, w);
          return ops.gelu(ops.linear(small, w), 'tanh').keep();
        }),
      );
      profile.result.dispose();
      const linears = profile.ops.filter((o) => o.name === 'ops.linear');
      assert.deepEqual(linears.map((o) => o.calls).sort(), [2, 3], 'the two input shapes are two contexts');
      assert.match(linears.find((o) => o.calls === 3)!.context, /x \[512,1024\] bfloat16/);
      assert.ok(profile.ops.every((o) => o.totalMs > 0 && Number.isFinite(o.totalMs)));
      const names = profile.byName.map((g) => g.name);
      assert.deepEqual(names.slice().sort(), ['ops.gelu', 'ops.linear']);
      assert.equal(profile.byName.find((g) => g.name === 'ops.linear')!.calls, 5);
      // GPU time, not host time: the three large products (2.1 GFLOP each) take longer than the two small ones
      // (66 MFLOP), and all of it is well under a second on any GPU this runs on.
      const largeMs = linears.find((o) => o.calls === 3)!.totalMs / 3;
      const smallMs = linears.find((o) => o.calls === 2)!.totalMs / 2;
      assert.ok(largeMs > smallMs, `large ${largeMs} ms, small ${smallMs} ms`);
      assert.ok(profile.totalMs < 1000, `${profile.totalMs} ms`);

      const { graph, result } = cuda.captureGraph(() => ops.linear(x, w));
      try {
        const replayed = cuda.profile(() => graph.replay());
        assert.deepEqual(replayed.ops.map((o) => [o.name, o.calls]), [['CudaGraph.replay', 1]]);
        assert.throws(() => cuda.captureGraph(() => cuda.profile(() => 1)), /cuda\.profile/);
      } finally {
        result.dispose();
        graph.dispose();
      }
    } finally {
      for (const t of [x, w, small]) t.dispose();
    }
  });

  it('does not nest, and closes when fn throws', (t) => {
    if (!gpuOrSkip(t)) return;
    assert.throws(() => cuda.profile(() => cuda.profile(() => 1)), /already open/);
    assert.throws(() => cuda.profile(() => {
      throw new Error('inside');
    }), /inside/);
    assert.throws(() => cuda.profile(() => Promise.resolve(1)), /promise/);
    assert.equal(cuda.profile(() => 7).result, 7, 'a new profile opens after the failures');
  });
});
