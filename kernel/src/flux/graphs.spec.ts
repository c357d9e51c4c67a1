// GraphCache's bookkeeping on the CPU, with a stand-in capture whose "graph" re-runs the recorded function on the
// static inputs (the real cuda.captureGraph is exercised by transformer.gpu.spec.ts): signatures, eager first
// calls, inputs copied in, outputs copied out, memory records, disposal.
import { Tensor, ops, tidy } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CaptureFn, GraphCache } from './graphs';

interface Inputs extends Record<string, Tensor | undefined> {
  a: Tensor;
  b?: Tensor;
}

const replaying: CaptureFn = (fn) => {
  const result = tidy(fn);
  return {
    result,
    graph: {
      memoryBytes: 4096,
      replay(): void {
        tidy(() => void (result as unknown as Tensor).copyFrom(fn() as unknown as Tensor));
      },
      dispose(): void {},
    },
  };
};

describe('GraphCache (stand-in capture on the CPU)', () => {
  it('runs eagerly then captures per signature, copies inputs in and results out', () => {
    let calls = 0;
    const cache = new GraphCache<Inputs>('cpu', 'graphs', (inputs) => {
      calls++;
      return inputs.b ? ops.add(inputs.a, inputs.b) : ops.scale(inputs.a, 2);
    }, replaying);
    const t = (values: number[]): Tensor => Tensor.fromArray(values, [values.length]);
    const a1 = t([1, 2]);
    const b1 = t([10, 20]);
    const first = cache.call({ a: a1, b: b1 });
    assert.deepEqual([...(first.toArray() as Float32Array)], [11, 22]);
    assert.equal(calls, 2, 'eager forward, then the capture');
    const [info] = cache.info();
    assert.equal(info.key, 'a:[2]float32 b:[2]float32');
    assert.equal(info.replays, 0);
    assert.equal(info.poolBytes, 4096);
    assert.equal(info.staticBytes, 16);

    const second = cache.call({ a: t([3, 4]), b: t([30, 40]) });
    assert.deepEqual([...(second.toArray() as Float32Array)], [33, 44], 'new inputs are copied into the static ones');
    const third = cache.call({ a: t([5, 6]), b: t([50, 60]) });
    assert.deepEqual([...(second.toArray() as Float32Array)], [33, 44], 'earlier results are copies, not the static output');
    assert.deepEqual([...(third.toArray() as Float32Array)], [55, 66]);
    assert.equal(cache.info()[0].replays, 2);

    const other = cache.call({ a: t([1, 2, 3]) });
    assert.deepEqual([...(other.toArray() as Float32Array)], [2, 4, 6]);
    assert.deepEqual(cache.info().map((g) => g.key), ['a:[2]float32 b:[2]float32', 'a:[3]float32']);
    assert.equal(cache.bytes, 4096 * 2 + 16 + 12);
    cache.dispose();
    assert.deepEqual(cache.info(), []);
    for (const x of [first, second, third, other]) assert.ok(!x.isDisposed, 'results belong to the caller');
    for (const x of [first, second, third, other, a1, b1]) x.dispose();
  });

  it('refuses the CPU with the real capture', () => {
    assert.throws(() => new GraphCache('cpu', 'graphs', () => Tensor.zeros([1])), /compile\(\): CUDA graphs need a CUDA device/);
  });
});
