// Tensor construction and copies, lifetimes (dispose, tidy, Scope), safety errors, and torch-compatible randn.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ops } from './ops';
import { Scope, keep, tidy } from './scope';
import { Generator, Tensor } from './tensor';
import { fixturePath, haveFixtures, SafetensorsFile } from './testing/helpers';

describe('construction and copies', () => {
  it('fromArray keeps typed-array dtypes and converts plain arrays', () => {
    tidy(() => {
      assert.equal(Tensor.fromArray(new Int32Array([1, 2]), [2]).dtype, 'int32');
      assert.equal(Tensor.fromArray(new BigInt64Array([1n]), [1]).dtype, 'int64');
      assert.equal(Tensor.fromArray(new Uint8Array([1]), [1]).dtype, 'uint8');
      const f = Tensor.fromArray([1.5, 2.5], [2, 1]);
      assert.equal(f.dtype, 'float32');
      assert.deepEqual(f.shape, [2, 1]);
      assert.deepEqual([...(Tensor.fromArray([3, -4], [2], { dtype: 'int64' }).toArray() as BigInt64Array)], [3n, -4n]);
      assert.throws(() => Tensor.fromArray([1, 2, 3], [2, 2]), /3 values do not fill shape \[2,2\]/);
      assert.throws(() => Tensor.fromArray([1], [1], { device: 'tpu' as 'cpu' }), /unknown device 'tpu'/);
    });
  });

  it('fromBytes reads little-endian bf16 and converts to float32', () => {
    tidy(() => {
      const bits = new Uint16Array([0x3f80, 0xc000, 0x3fc0]); // 1, -2, 1.5
      const t = Tensor.fromBytes(new Uint8Array(bits.buffer), [3], 'bfloat16', { dtype: 'float32' });
      assert.deepEqual([...(t.toArray() as Float32Array)], [1, -2, 1.5]);
      const raw = Tensor.fromBytes(new Uint8Array(bits.buffer), [3], 'bfloat16');
      assert.equal(raw.dtype, 'bfloat16');
      assert.deepEqual([...new Uint16Array(raw.toBytes().buffer.slice(0))], [0x3f80, 0xc000, 0x3fc0]);
      assert.throws(() => Tensor.fromBytes(new Uint8Array(5), [3], 'bfloat16'), /5 bytes given, shape \[3\] bfloat16 needs 6/);
    });
  });

  it('fromFile reads a byte range, converts dtypes and names the file when short', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-native-'));
    try {
      const path = join(dir, 'data.bin');
      const values = new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]);
      writeFileSync(path, Buffer.concat([Buffer.from('header!'), Buffer.from(values.buffer)]));
      tidy(() => {
        const t = Tensor.fromFile(path, 7 + 8, [2, 3], 'float32');
        assert.deepEqual([...(t.toArray() as Float32Array)], [2, 3, 4, 5, 6, 7]);
        const h = Tensor.fromFile(path, 7, [4], 'float32', { dtype: 'bfloat16' });
        assert.equal(h.dtype, 'bfloat16');
        assert.deepEqual([...(h.toArray() as Float32Array)], [0, 1, 2, 3]);
        assert.throws(
          () => Tensor.fromFile(path, 7, [9], 'float32'),
          (e: Error & { code?: string }) => e.message.includes(path) && /needs bytes \[7, 43\)/.test(e.message),
        );
        assert.throws(() => Tensor.fromFile(join(dir, 'missing.bin'), 0, [1], 'float32'), /cannot open .*missing\.bin/);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('full/zeros/ones/empty, item, to() and copyFrom()', () => {
    tidy(() => {
      assert.deepEqual([...(Tensor.full([2, 2], 2.5, { dtype: 'float16' }).toArray() as Float32Array)], [2.5, 2.5, 2.5, 2.5]);
      assert.deepEqual([...(Tensor.ones([3], { dtype: 'int32' }).toArray() as Int32Array)], [1, 1, 1]);
      assert.equal(Tensor.zeros([1]).item(), 0);
      assert.equal(Tensor.empty([0, 3]).numel, 0);
      const a = Tensor.fromArray([1.25, -3], [2]);
      const b = a.to({ dtype: 'bfloat16' });
      assert.notEqual(b.nativeHandle('t').storageId, a.nativeHandle('t').storageId);
      const c = Tensor.zeros([2]);
      c.copyFrom(b);
      assert.deepEqual([...(c.toArray() as Float32Array)], [1.25, -3]);
      assert.throws(() => c.copyFrom(Tensor.zeros([3])), /copyFrom: shapes differ/);
      assert.throws(() => Tensor.zeros([2]).item(), /has 2 elements/);
      assert.equal(a.to('cpu').describe(), '[2] float32 cpu');
    });
  });
});

describe('lifetimes', () => {
  it('tidy disposes what it created except returned and kept tensors', () => {
    let inner!: Tensor;
    let kept!: Tensor;
    const out = tidy(() => {
      inner = Tensor.zeros([2]);
      kept = keep(Tensor.ones([2]));
      return { result: ops.add(inner, inner), list: [Tensor.zeros([1])] };
    });
    assert.ok(inner.isDisposed);
    assert.ok(!kept.isDisposed);
    assert.ok(!out.result.isDisposed && !out.list[0].isDisposed);
    kept.dispose();
    out.result.dispose();
    out.list[0].dispose();
  });

  it('nested tidy hands returned tensors to the outer scope', () => {
    let mid!: Tensor;
    tidy(() => {
      mid = tidy(() => Tensor.zeros([3]));
      assert.ok(!mid.isDisposed);
    });
    assert.ok(mid.isDisposed);
  });

  it('tidy disposes on throw and refuses async functions', () => {
    let made!: Tensor;
    assert.throws(() =>
      tidy(() => {
        made = Tensor.zeros([1]);
        throw new Error('boom');
      }),
    /boom/);
    assert.ok(made.isDisposed);
    assert.throws(() => tidy(() => Promise.resolve(1)), /use a Scope across awaits/);
  });

  it('Scope owns tensors across awaits', async () => {
    const scope = new Scope();
    const a = scope.track(Tensor.zeros([2]));
    await new Promise((r) => setTimeout(r, 1));
    const b = scope.track(ops.add(a, a));
    assert.equal(scope.size, 2);
    const free = scope.untrack(Tensor.zeros([1]));
    scope.dispose();
    assert.ok(a.isDisposed && b.isDisposed && !free.isDisposed);
    free.dispose();
    assert.throws(() => scope.track(Tensor.zeros([1])), /already disposed/);
  });

  it('use after dispose throws naming the op; dispose is idempotent; views outlive their source', () => {
    const t = Tensor.fromArray([1, 2, 3, 4], [4]);
    const v = t.reshape([2, 2]);
    t.dispose();
    t.dispose();
    assert.deepEqual([...(v.toArray() as Float32Array)], [1, 2, 3, 4]);
    v.dispose();
    assert.throws(
      () => ops.exp(t),
      (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_DISPOSED' && /ops\.exp: tensor \[4\] float32 cpu was used after dispose/.test(e.message),
    );
    assert.throws(() => t.toArray(), /toArray: .* after dispose/);
    assert.throws(() => t.reshape([4]), /reshape: .* after dispose/);
  });

  it('dtype and device mismatches throw with the op, shapes and dtypes', () => {
    tidy(() => {
      const i = Tensor.fromArray([1, 2], [2], { dtype: 'int32' });
      assert.throws(() => ops.softmax(i), /ops\.softmax: x \[2\] int32 cpu must be float32, bfloat16 or float16/);
      assert.throws(() => ops.embedding(Tensor.zeros([3, 2]), Tensor.zeros([2])), /ids must be int32 or int64, got \[2\] float32/);
      assert.throws(() => ops.layerNorm(Tensor.zeros([2, 3]), Tensor.zeros([4])), /weight \[4\] float32 cpu must have 3 values/);
      assert.throws(() => ops.cast(Tensor.zeros([1]), 'float64' as 'float32'), /unknown dtype 'float64'/);
    });
  });
});

describe('random', () => {
  it('matches torch.randn(generator=manual_seed(0)) for the first values', () => {
    const g = new Generator(0);
    const t = Tensor.randn([1, 4, 4, 4], { generator: g });
    const v = t.toArray() as Float32Array;
    // torch.manual_seed(0); torch.randn(64)[:4]
    assert.deepEqual([...v.subarray(0, 4)].map((x) => x.toFixed(4)), ['-1.1258', '-1.1524', '-0.2506', '-0.4339']);
    t.dispose();
    const again = Tensor.randn([64], { generator: g.manualSeed(0) });
    assert.deepEqual(again.toArray(), v);
    again.dispose();
  });

  it("reproduces diffusers' packed latents_init of the golden cases bit for bit", (t) => {
    if (!haveFixtures()) {
      if (process.env.CI === 'true') assert.fail('fixtures missing');
      t.skip('fixtures missing');
      return;
    }
    const cases = [
      { pipe: 'tiny-flux', name: 'cat', seed: 0, shape: [1, 4, 16, 16] },
      { pipe: 'tiny-flux', name: 'batch2', seed: 7, shape: [2, 4, 16, 24] },
      { pipe: 'mini-flux', name: 'astronaut', seed: 3, shape: [1, 16, 8, 8] },
    ];
    for (const c of cases) {
      tidy(() => {
        const golden = new SafetensorsFile(fixturePath(`${c.pipe}-golden`, `${c.name}.safetensors`)).tensor('latents_init');
        const [B, C, H, W] = c.shape;
        const noise = Tensor.randn(c.shape, { generator: new Generator(c.seed) });
        // FluxPipeline._pack_latents: [B,C,H/2,2,W/2,2] -> [B,(H/2)(W/2),C*4]
        const packed = ops
          .permute(noise.reshape([B, C, H / 2, 2, W / 2, 2]), [0, 2, 4, 1, 3, 5])
          .reshape([B, (H / 2) * (W / 2), C * 4]);
        assert.deepEqual(packed.shape, golden.shape);
        const a = packed.toArray() as Float32Array;
        const b = golden.toArray() as Float32Array;
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
        assert.equal(worst, 0, `${c.pipe}/${c.name}: max difference ${worst}`);
      });
    }
  });
});
