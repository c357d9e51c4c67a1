// CUDA graphs on the GPU: a captured sequence of ops (linear with epilogues on bf16 and NF4 weights, attention,
// fused norms, elementwise ops, temporaries freed inside) replays to the same bits as running it eagerly, also
// after new data is copied into its inputs; the private pool shows in the memory statistics and goes away with
// dispose(); host reads, syncs and host copies inside a capture throw clearly and leave no capture behind.
// Skips without a GPU (fails under FLUXLAB_REQUIRE_GPU=1).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cuda } from './cuda';
import { memory } from './memory';
import { ops } from './ops';
import { tidy } from './scope';
import { Tensor } from './tensor';
import { gpuOrSkip } from './testing/helpers';

const D = 256; // 2 heads of 128: the fluxk attention serves it
const H = 2;

interface Block {
  w1: Tensor;
  w2: Tensor;
  b1: Tensor;
  nf4: Tensor;
  qNorm: Tensor;
  cos: Tensor;
  sin: Tensor;
}

function makeBlock(seed: number): Block {
  const dev = { device: 'cuda' as const, dtype: 'bfloat16' as const };
  const ang = Tensor.randn([77, 64], { seed: seed + 9 });
  const a = ang.toArray() as Float32Array;
  ang.dispose();
  const c = new Float32Array(77 * 128);
  const s = new Float32Array(77 * 128);
  for (let i = 0; i < a.length; i++) {
    c[2 * i] = c[2 * i + 1] = Math.cos(a[i]);
    s[2 * i] = s[2 * i + 1] = Math.sin(a[i]);
  }
  const dense = Tensor.randn([3 * D, D], { seed: seed + 4, std: 0.05, device: 'cuda' });
  const block = {
    w1: Tensor.randn([4 * D, D], { seed, std: 1 / 16, ...dev }),
    w2: Tensor.randn([D, 4 * D], { seed: seed + 1, std: 1 / 32, ...dev }),
    b1: Tensor.randn([4 * D], { seed: seed + 2, std: 0.1, ...dev }),
    nf4: ops.nf4Quantize(dense, { doubleQuant: true }),
    qNorm: Tensor.randn([128], { seed: seed + 3, mean: 1, std: 0.1, ...dev }),
    cos: Tensor.fromArray(c, [77, 128], { device: 'cuda' }),
    sin: Tensor.fromArray(s, [77, 128], { device: 'cuda' }),
  };
  dense.dispose();
  return block;
}

function disposeBlock(b: Block): void {
  for (const t of Object.values(b)) t.dispose();
}

/** A Flux-like block on x [2,77,D] bf16 with modulation emb [2,6D]; everything temporary is freed inside. */
function step(b: Block, x: Tensor, emb: Tensor): Tensor {
  return tidy(() => {
    const [shift, scale, gate, shift2, scale2, gate2] = ops.split(emb.reshape([2, 1, 6 * D]), D, -1);
    const h = tidy(() => {
      const n = ops.layerNormModulate(x, shift, scale);
      const qkv = ops.linear(n, b.nf4); // [2,77,3D] from NF4 weights
      const [q, k, v] = ops.split(qkv, D, -1);
      const qr = ops.qkNormRope(q.reshape([2, 77, H, 128]), b.qNorm, b.cos, b.sin);
      const kr = ops.qkNormRope(k.reshape([2, 77, H, 128]), b.qNorm, b.cos, b.sin);
      const attn = ops.sdpa(qr, kr, v.reshape([2, 77, H, 128]), { layout: 'BLHD' });
      return ops.add(x, ops.mul(ops.softmax(attn.reshape([2, 77, D]), -1), gate));
    });
    const n2 = ops.layerNormModulate(h, shift2, scale2);
    const up = ops.linear(n2, b.w1, b.b1, { activation: 'gelu_tanh' });
    const out = ops.linear(up, b.w2, null, { gate: gate2, residual: h });
    return ops.rmsNorm(ops.silu(out), null, 1e-6);
  });
}

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.toBytes());
}

describe('cuda.captureGraph', () => {
  it('replays to the bits eager execution gives, also with new input data', (t) => {
    if (!gpuOrSkip(t)) return;
    const blocks = [makeBlock(1), makeBlock(100)];
    const x = Tensor.randn([2, 77, D], { seed: 7, device: 'cuda', dtype: 'bfloat16' });
    const emb = Tensor.randn([2, 6 * D], { seed: 8, std: 0.3, device: 'cuda', dtype: 'bfloat16' });
    const run = () => blocks.reduce((h, b) => {
      const next = step(b, h, emb);
      if (h !== x) h.dispose();
      return next;
    }, x);
    try {
      const eager = run();
      const routesBefore = cuda.routeCounts();
      const started = performance.now();
      const { graph, result } = cuda.captureGraph(run);
      const captureMs = performance.now() - started;
      const routesAfter = cuda.routeCounts();
      assert.equal(cuda.isCapturing(), false);
      assert.equal(cuda.currentStream().id, 0, 'the previous current stream is back after the capture');
      assert.deepEqual(result.shape, [2, 77, D]);
      graph.replay();
      assert.ok(bytesOf(result).equals(bytesOf(eager)), 'the replay gives the eager bits');

      // new data in the captured inputs, then eager and replay again
      tidy(() => {
        x.copyFrom(Tensor.randn([2, 77, D], { seed: 70, dtype: 'bfloat16' })); // host → device
        emb.copyFrom(Tensor.randn([2, 6 * D], { seed: 80, std: 0.3, device: 'cuda', dtype: 'bfloat16' })); // device → device
      });
      const eager2 = run();
      assert.ok(!bytesOf(eager2).equals(bytesOf(eager)), 'new inputs change the result');
      for (let i = 0; i < 3; i++) graph.replay();
      assert.ok(bytesOf(result).equals(bytesOf(eager2)), 'replays after new input data give the new eager bits');
      const kernels = Object.keys(routesAfter)
        .filter((k) => routesAfter[k] !== routesBefore[k])
        .map((k) => `${k} x${routesAfter[k] - routesBefore[k]}`);
      console.log(`graph: captured 2 blocks in ${captureMs.toFixed(1)} ms (${kernels.join(', ')}); pool ${(graph.memoryBytes / 2 ** 20).toFixed(1)} MiB`);
      result.dispose();
      graph.dispose();
      eager.dispose();
      eager2.dispose();
    } finally {
      x.dispose();
      emb.dispose();
      blocks.forEach(disposeBlock);
    }
  });

  it('keeps its memory in a private pool shown by memory.stats until dispose', (t) => {
    if (!gpuOrSkip(t)) return;
    memory.emptyCache();
    const base = memory.stats();
    const x = Tensor.randn([1024, 1024], { seed: 1, device: 'cuda' }); // 4 MiB
    const { graph, result } = cuda.captureGraph(() => {
      let h = ops.scale(x, 1);
      for (let i = 0; i < 20; i++) {
        const next = tidy(() => ops.add(ops.silu(h), x)); // two 4 MiB tensors per iteration, freed as it goes
        h.dispose();
        h = next;
      }
      return h;
    }, { tag: 'graph-test' });
    const during = memory.stats();
    assert.equal(during.graphPools, base.graphPools + 1);
    assert.equal(during.graphReserved - base.graphReserved, graph.memoryBytes);
    assert.ok(graph.memoryBytes >= 4 << 20, `pool ${graph.memoryBytes} bytes holds at least the result`);
    assert.ok(graph.memoryBytes <= 24 << 20, `freed temporaries are reused inside the capture (pool ${graph.memoryBytes} bytes for 41 allocations of 4 MiB)`);
    assert.ok((during.byTag['graph-test'] ?? 0) >= 4 << 20, 'allocations inside the capture carry its tag');
    graph.replay();
    const expected = tidy(() => {
      let h = ops.scale(x, 1);
      for (let i = 0; i < 20; i++) h = ops.add(ops.silu(h), x);
      return h;
    });
    assert.ok(bytesOf(result).equals(bytesOf(expected)));
    expected.dispose();

    // disposing the graph while its result lives keeps that memory; disposing the result returns it
    graph.dispose();
    assert.equal(graph.isDisposed, true);
    const afterGraph = memory.stats();
    assert.equal(afterGraph.graphPools, base.graphPools);
    assert.ok(afterGraph.graphReserved - base.graphReserved > 0, 'the live result still holds its segment');
    assert.throws(() => graph.replay(), /disposed/);
    result.dispose();
    const after = memory.stats();
    assert.equal(after.graphReserved, base.graphReserved, 'the pool went back to the driver');
    x.dispose();
    assert.equal(memory.stats().allocated, base.allocated);
  });

  it('throws clearly on host reads, syncs and host copies inside a capture, leaving no capture behind', (t) => {
    if (!gpuOrSkip(t)) return;
    const x = Tensor.randn([64, 64], { seed: 2, device: 'cuda' });
    const base = memory.stats();
    const attempts: [string, () => unknown][] = [
      ['toArray', () => ops.exp(x).toArray()],
      ['item', () => ops.slice(ops.exp(x).reshape([4096]), 0, 0, 1).item()],
      ['fromArray to cuda', () => Tensor.fromArray([1, 2, 3], [3], { device: 'cuda' })],
      ['to cpu', () => ops.exp(x).to('cpu')],
      ['cuda.synchronize', () => cuda.synchronize()],
      ['Stream.synchronize', () => cuda.currentStream().synchronize()],
    ];
    for (const [what, f] of attempts) {
      assert.throws(
        () => cuda.captureGraph(() => {
          ops.exp(x);
          return f();
        }),
        (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_CAPTURE' && /while cuda\.captureGraph is capturing cuda:0/.test(e.message),
        `${what} inside a capture`,
      );
      assert.equal(cuda.isCapturing(), false, `${what}: the capture was ended`);
      assert.equal(cuda.currentStream().id, 0, `${what}: the previous stream is current again`);
    }
    const after = memory.stats();
    assert.equal(after.graphPools, base.graphPools, 'aborted captures release their pools');
    assert.equal(after.allocated, base.allocated, 'and the tensors created inside them');
    // eager work is unaffected
    const y = ops.exp(x).toArray();
    assert.equal(y.length, 4096);
    assert.throws(() => cuda.captureGraph(() => cuda.captureGraph(() => null)), /already capturing/);
    assert.throws(() => cuda.captureGraph(() => Promise.resolve(1)), /returned a Promise/);
    assert.equal(cuda.isCapturing(), false);
    x.dispose();
  });

  it('captures a random-weight init and device randn', (t) => {
    if (!gpuOrSkip(t)) return;
    const { graph, result } = cuda.captureGraph(() => Tensor.randn([333, 77], { seed: 5, device: 'cuda', dtype: 'bfloat16' }));
    graph.replay();
    const eager = Tensor.randn([333, 77], { seed: 5, device: 'cuda', dtype: 'bfloat16' });
    assert.ok(bytesOf(result).equals(bytesOf(eager)));
    for (const tensor of [result, eager]) tensor.dispose();
    graph.dispose();
  });
});
