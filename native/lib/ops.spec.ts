// Every op on the CPU against straightforward float64 reference math, with random inputs and awkward sizes
// (1, 3, 77, odd channel counts), in float32 and through bfloat16/float16 storage.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ops } from './ops';
import { tidy } from './scope';
import { Tensor } from './tensor';
import type { DType } from './types';
import {
  assertClose,
  erf,
  product,
  randTensor,
  refMatmul,
  refSoftmaxRows,
  toF64,
} from './testing/helpers';

const F32 = { atol: 2e-5, rtol: 2e-5 };
// bf16 keeps 8 significant bits: results are rounded once to that
const BF16 = { atol: 2e-2, rtol: 1.6e-2 };
const F16 = { atol: 2e-3, rtol: 2e-3 };
const tolFor = (d: DType) => (d === 'bfloat16' ? BF16 : d === 'float16' ? F16 : F32);

describe('linear', () => {
  for (const [M, K, N] of [
    [1, 1, 1],
    [3, 77, 5],
    [77, 33, 130],
    [130, 300, 17],
  ]) {
    for (const wdtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
      it(`x [${M},${K}] · w [${N},${K}] ${wdtype} + bias`, () => {
        tidy(() => {
          const x = randTensor([M, K], 1);
          const w = randTensor([N, K], 2, { dtype: wdtype });
          const b = randTensor([N], 3);
          const y = ops.linear(x.t, w.t, b.t);
          assert.deepEqual(y.shape, [M, N]);
          assert.equal(y.dtype, 'float32');
          const ref = refMatmul(x.v, w.v, M, K, N, true).map((v, i) => v + b.v[i % N]);
          assertClose(toF64(y), ref, { atol: 1e-4, rtol: 1e-4 }, 'linear');
        });
      });
    }
  }

  it('keeps leading dims and the input dtype', () => {
    tidy(() => {
      const x = randTensor([2, 3, 7], 4, { dtype: 'bfloat16' });
      const w = randTensor([5, 7], 5);
      const y = ops.linear(x.t, w.t);
      assert.deepEqual(y.shape, [2, 3, 5]);
      assert.equal(y.dtype, 'bfloat16');
      assertClose(toF64(y), refMatmul(x.v, w.v, 6, 7, 5, true), BF16, 'linear bf16');
    });
  });

  // A float32 layer stored as bf16 (docs/native.md): float32 x with a bf16 weight computes in float32 on the widened
  // values, so it equals the float32 product of those values bit for bit, bias included.
  for (const [M, K, N] of [
    [1, 8, 8],
    [7, 72, 24],
    [33, 10, 5],
    [3, 300, 17],
  ]) {
    it(`float32 x [${M},${K}] · bfloat16 w [${N},${K}] = the float32 product of the widened weight`, () => {
      tidy(() => {
        const x = randTensor([M, K], 20 + M, { scale: 3 });
        const w = randTensor([N, K], 21 + K, { dtype: 'bfloat16', scale: 1 / Math.sqrt(K) });
        const b = randTensor([N], 22);
        const y = ops.linear(x.t, w.t, b.t);
        assert.equal(y.dtype, 'float32');
        assert.deepEqual(y.shape, [M, N]);
        assert.deepEqual(y.toArray(), ops.linear(x.t, w.t.to({ dtype: 'float32' }), b.t).toArray());
        const bf16Bias = ops.linear(x.t, w.t, b.t.to({ dtype: 'bfloat16' }));
        assert.deepEqual(bf16Bias.toArray(), ops.linear(x.t, w.t.to({ dtype: 'float32' }), b.t.to({ dtype: 'bfloat16' })).toArray());
        const ref = refMatmul(x.v, w.v, M, K, N, true).map((v, i) => v + b.v[i % N]);
        assertClose(toF64(y), ref, F32, 'linear f32 x bf16 w');
      });
    });
  }

  it('float32 x with a bfloat16 weight: float32 semantics at extreme magnitudes (huge, tiny, subnormal, inf)', () => {
    tidy(() => {
      const K = 8;
      const xs = [3.0e38, -1.5e38, 1e-30, 3e-39, 1.0000001, Math.fround(1 / 3), 2 ** -20, 0];
      const x = Tensor.fromArray(xs, [1, K]);
      const w = Tensor.fromArray([0.5, 0.25, 1, 1, 1, 1, 1, 1], [1, K], { dtype: 'bfloat16' });
      const y = (ops.linear(x, w).toArray() as Float32Array)[0];
      assert.equal(y, (ops.linear(x, w.to({ dtype: 'float32' })).toArray() as Float32Array)[0]);
      assert.ok(Number.isFinite(y) && Math.abs(y - 1.125e38) / 1.125e38 < 1e-6, `got ${y}`);
      const inf = Tensor.fromArray([Infinity, 1, 1, 1, 1, 1, 1, 1], [1, K]);
      assert.equal((ops.linear(inf, w).toArray() as Float32Array)[0], Infinity);
    });
  });

  it('rejects mismatched inner dims with op, shapes and dtypes', () => {
    tidy(() => {
      const x = Tensor.zeros([2, 3]);
      const w = Tensor.zeros([4, 5], { dtype: 'bfloat16' });
      assert.throws(
        () => ops.linear(x, w),
        (e: Error & { code?: string }) =>
          e.code === 'ERR_FLUXLAB_INVALID' && /ops\.linear/.test(e.message) && /\[2,3\] float32/.test(e.message) &&
          /\[4,5\] bfloat16/.test(e.message),
      );
      assert.throws(
        () => ops.linear(Tensor.zeros([2, 8]), Tensor.zeros([4, 8, 1], { dtype: 'bfloat16' })),
        (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_INVALID' && /ops\.linear: weight must be \[N,K\], got \[4,8,1\] bfloat16/.test(e.message),
      );
      assert.throws(
        () => ops.linear(Tensor.zeros([2, 8]), Tensor.zeros([4, 8], { dtype: 'bfloat16' }), Tensor.zeros([5])),
        (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_INVALID' && /ops\.linear: bias \[5\] float32 cpu must have 4 values/.test(e.message),
      );
      assert.throws(
        () => ops.linear(Tensor.zeros([2, 8]), Tensor.zeros([4, 8], { dtype: 'int32' })),
        (e: Error) => /ops\.linear/.test(e.message) && /int32/.test(e.message),
      );
    });
  });
});

describe('linearGroup', () => {
  it('runs each linear with its own epilogue, bitwise the separate linears (dense and nf4)', () => {
    tidy(() => {
      const w = (n: number, k: number, seed: number) => Tensor.randn([n, k], { seed, std: 0.1, dtype: 'bfloat16' });
      const x1 = Tensor.randn([1, 5, 64], { seed: 80, dtype: 'bfloat16' });
      const x2 = Tensor.randn([1, 3, 128], { seed: 81, dtype: 'bfloat16' });
      const items = [
        { x: x1, weight: ops.nf4Quantize(w(16, 64, 82)), bias: Tensor.randn([16], { seed: 83, dtype: 'bfloat16' }), activation: 'gelu_tanh' as const },
        {
          x: x2,
          weight: w(8, 128, 84),
          gate: Tensor.randn([1, 1, 8], { seed: 85, dtype: 'bfloat16' }),
          residual: Tensor.randn([1, 3, 8], { seed: 86, dtype: 'bfloat16' }),
        },
      ];
      const got = ops.linearGroup(items);
      assert.equal(got.length, 2);
      items.forEach((it, i) => assert.deepEqual(got[i].toArray(), ops.linear(it.x, it.weight, 'bias' in it ? it.bias : null, it).toArray()));
      assert.throws(() => ops.linearGroup([]), /ops\.linearGroup: needs at least one linear/);
      assert.throws(() => ops.linearGroup([{ x: x1, weight: w(8, 32, 87) }]), /ops\.linear: x \[1,5,64\] bfloat16 cpu and weight \[8,32\]/);
    });
  });
});

describe('linearConcat', () => {
  it('puts the linears side by side, bitwise the separate linears (dense, nf4, with and without bias)', () => {
    tidy(() => {
      const x = Tensor.randn([2, 3, 128], { seed: 90, dtype: 'bfloat16' });
      const w = (n: number, seed: number) => Tensor.randn([n, 128], { seed, std: 0.1, dtype: 'bfloat16' });
      const layers = [
        { weight: ops.nf4Quantize(w(16, 91)), bias: Tensor.randn([16], { seed: 92, dtype: 'bfloat16' }) },
        { weight: w(8, 93) },
        { weight: ops.nf4Quantize(w(24, 94), { doubleQuant: true }), bias: null },
      ];
      const got = ops.linearConcat(x, layers);
      assert.deepEqual(got.shape, [2, 3, 48]);
      const separate = ops.concat(layers.map(({ weight, bias }) => ops.linear(x, weight, bias)), -1);
      assert.deepEqual(got.toArray(), separate.toArray());
    });
  });

  it('rejects no layers and a weight of another K, naming the op', () => {
    tidy(() => {
      const x = Tensor.zeros([1, 8], { dtype: 'bfloat16' });
      assert.throws(() => ops.linearConcat(x, []), /ops\.linearConcat: needs at least one layer/);
      assert.throws(
        () => ops.linearConcat(x, [{ weight: Tensor.zeros([4, 8], { dtype: 'bfloat16' }) }, { weight: Tensor.zeros([4, 6], { dtype: 'bfloat16' }) }]),
        /ops\.linearConcat: layer 1's weight \[4,6\] bfloat16 cpu does not take x \[1,8\] bfloat16 cpu/,
      );
    });
  });
});

describe('matmul / bmm', () => {
  it('broadcasts batch dims', () => {
    tidy(() => {
      const a = randTensor([2, 1, 3, 77], 10);
      const b = randTensor([3, 77, 5], 11);
      const y = ops.matmul(a.t, b.t);
      assert.deepEqual(y.shape, [2, 3, 3, 5]);
      const out = toF64(y);
      for (let i = 0; i < 2; i++) {
        for (let j = 0; j < 3; j++) {
          const ref = refMatmul(a.v.subarray(i * 231, i * 231 + 231), b.v.subarray(j * 385, j * 385 + 385), 3, 77, 5);
          assertClose(out.subarray((i * 3 + j) * 15, (i * 3 + j) * 15 + 15), ref, { atol: 1e-4, rtol: 1e-4 }, 'matmul');
        }
      }
    });
  });

  it('bmm in bfloat16 and float16', () => {
    for (const dtype of ['bfloat16', 'float16'] as DType[]) {
      tidy(() => {
        const a = randTensor([3, 5, 9], 12, { dtype });
        const b = randTensor([3, 9, 1], 13, { dtype });
        const y = ops.bmm(a.t, b.t);
        assert.equal(y.dtype, dtype);
        const out = toF64(y);
        for (let i = 0; i < 3; i++) {
          const ref = refMatmul(a.v.subarray(i * 45, i * 45 + 45), b.v.subarray(i * 9, i * 9 + 9), 5, 9, 1);
          assertClose(out.subarray(i * 5, i * 5 + 5), ref, tolFor(dtype), `bmm ${dtype}`);
        }
      });
    }
  });

  it('mixed dtypes promote to float32', () => {
    tidy(() => {
      const a = randTensor([2, 3], 14, { dtype: 'bfloat16' });
      const b = randTensor([3, 2], 15, { dtype: 'float16' });
      const y = ops.matmul(a.t, b.t);
      assert.equal(y.dtype, 'float32');
      assertClose(toF64(y), refMatmul(a.v, b.v, 2, 3, 2), F32, 'promoted matmul');
    });
  });
});

function refAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  [B, H, Lq, Lk, D]: number[],
  scale: number,
  bias?: (b: number, h: number, i: number, j: number) => number,
  keep?: (b: number, h: number, i: number, j: number) => boolean,
): Float64Array {
  const out = new Float64Array(B * H * Lq * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      for (let i = 0; i < Lq; i++) {
        const s = new Float64Array(Lk);
        let any = false;
        for (let j = 0; j < Lk; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(bh * Lq + i) * D + d] * k[(bh * Lk + j) * D + d];
          s[j] = dot * scale + (bias ? bias(b, h, i, j) : 0);
          if (keep && !keep(b, h, i, j)) s[j] = -Infinity;
          else any = true;
        }
        if (!any) continue;
        const p = refSoftmaxRows(s, 1, Lk);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < Lk; j++) acc += p[j] * v[(bh * Lk + j) * D + d];
          out[(bh * Lq + i) * D + d] = acc;
        }
      }
    }
  }
  return out;
}

describe('sdpa', () => {
  it('plain, odd lengths, default scale', () => {
    tidy(() => {
      const dims = [2, 3, 77, 33, 16];
      const [B, H, Lq, Lk, D] = dims;
      const q = randTensor([B, H, Lq, D], 20);
      const k = randTensor([B, H, Lk, D], 21);
      const v = randTensor([B, H, Lk, D], 22);
      const y = ops.sdpa(q.t, k.t, v.t);
      assertClose(toF64(y), refAttention(q.v, k.v, v.v, dims, 1 / Math.sqrt(D)), F32, 'sdpa');
    });
  });

  it('additive bias [1,H,Lq,Lk] (T5) and scale 1', () => {
    tidy(() => {
      const dims = [1, 2, 5, 5, 8];
      const q = randTensor([1, 2, 5, 8], 23);
      const k = randTensor([1, 2, 5, 8], 24);
      const v = randTensor([1, 2, 5, 8], 25);
      const bias = randTensor([1, 2, 5, 5], 26);
      const y = ops.sdpa(q.t, k.t, v.t, { bias: bias.t, scale: 1 });
      const ref = refAttention(q.v, k.v, v.v, dims, 1, (_b, h, i, j) => bias.v[(h * 5 + i) * 5 + j]);
      assertClose(toF64(y), ref, F32, 'sdpa bias');
    });
  });

  it('key-padding mask [B,Lk] and a causal mask; a fully masked row gives zeros', () => {
    tidy(() => {
      const dims = [2, 1, 4, 6, 4];
      const q = randTensor([2, 1, 4, 4], 27);
      const k = randTensor([2, 1, 6, 4], 28);
      const v = randTensor([2, 1, 6, 4], 29);
      const pad = [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0];
      const mask = Tensor.fromArray(pad, [2, 6], { dtype: 'uint8' });
      const y = ops.sdpa(q.t, k.t, v.t, { mask });
      const ref = refAttention(q.v, k.v, v.v, dims, 0.5, undefined, (b, _h, _i, j) => pad[b * 6 + j] === 1);
      assertClose(toF64(y), ref, F32, 'sdpa key padding');

      const causal = Tensor.fromArray(
        Array.from({ length: 24 }, (_, n) => (n % 6 <= Math.floor(n / 6) ? 1 : 0)),
        [1, 1, 4, 6],
        { dtype: 'int32' },
      );
      const yc = ops.sdpa(q.t, k.t, v.t, { mask: causal });
      assertClose(toF64(yc), refAttention(q.v, k.v, v.v, dims, 0.5, undefined, (_b, _h, i, j) => j <= i), F32, 'causal');

      const none = Tensor.zeros([2, 6], { dtype: 'uint8' });
      assert.ok(toF64(ops.sdpa(q.t, k.t, v.t, { mask: none })).every((x) => x === 0));
    });
  });

  it('bfloat16 storage', () => {
    tidy(() => {
      const dims = [1, 2, 9, 9, 32];
      const q = randTensor([1, 2, 9, 32], 30, { dtype: 'bfloat16' });
      const k = randTensor([1, 2, 9, 32], 31, { dtype: 'bfloat16' });
      const v = randTensor([1, 2, 9, 32], 32, { dtype: 'bfloat16' });
      const y = ops.sdpa(q.t, k.t, v.t);
      assert.equal(y.dtype, 'bfloat16');
      assertClose(toF64(y), refAttention(q.v, k.v, v.v, dims, 1 / Math.sqrt(32)), BF16, 'sdpa bf16');
    });
  });

  it('rejects mismatched shapes and non-broadcastable biases', () => {
    tidy(() => {
      const q = Tensor.zeros([1, 2, 3, 4]);
      const k = Tensor.zeros([1, 2, 5, 8]);
      assert.throws(() => ops.sdpa(q, k, k), /ops\.sdpa: shapes do not match/);
      const kk = Tensor.zeros([1, 2, 5, 4]);
      assert.throws(() => ops.sdpa(q, kk, kk, { bias: Tensor.zeros([4, 5]) }), /does not broadcast/);
    });
  });
});

describe('normalisation and softmax', () => {
  for (const C of [1, 3, 77, 256]) {
    it(`layerNorm / rmsNorm over ${C}`, () => {
      tidy(() => {
        const rows = 5;
        const x = randTensor([rows, C], 40 + C, { scale: 3 });
        const w = randTensor([C], 41);
        const b = randTensor([C], 42);
        const ln = ops.layerNorm(x.t, w.t, b.t, 1e-6);
        const plain = ops.layerNorm(x.t, null, null, 1e-5);
        const rms = ops.rmsNorm(x.t, w.t, 1e-6);
        const refLn = new Float64Array(rows * C);
        const refPlain = new Float64Array(rows * C);
        const refRms = new Float64Array(rows * C);
        for (let r = 0; r < rows; r++) {
          const row = x.v.subarray(r * C, r * C + C);
          const mean = row.reduce((a, v) => a + v, 0) / C;
          const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / C;
          const ms = row.reduce((a, v) => a + v * v, 0) / C;
          for (let i = 0; i < C; i++) {
            refLn[r * C + i] = ((row[i] - mean) / Math.sqrt(variance + 1e-6)) * w.v[i] + b.v[i];
            refPlain[r * C + i] = (row[i] - mean) / Math.sqrt(variance + 1e-5);
            refRms[r * C + i] = (row[i] / Math.sqrt(ms + 1e-6)) * w.v[i];
          }
        }
        assertClose(toF64(ln), refLn, { atol: 1e-4, rtol: 1e-4 }, 'layerNorm');
        assertClose(toF64(plain), refPlain, { atol: 1e-4, rtol: 1e-4 }, 'layerNorm (no affine)');
        assertClose(toF64(rms), refRms, { atol: 1e-4, rtol: 1e-4 }, 'rmsNorm');
      });
    });
  }

  it('groupNorm with odd channel counts', () => {
    tidy(() => {
      const [B, C, H, W, G] = [2, 6, 3, 5, 3];
      const x = randTensor([B, C, H, W], 50, { scale: 2 });
      const w = randTensor([C], 51);
      const b = randTensor([C], 52);
      const y = ops.groupNorm(x.t, G, w.t, b.t, 1e-6);
      const ref = new Float64Array(x.v.length);
      const cpg = C / G;
      const n = cpg * H * W;
      for (let bi = 0; bi < B; bi++) {
        for (let g = 0; g < G; g++) {
          const base = (bi * C + g * cpg) * H * W;
          const seg = x.v.subarray(base, base + n);
          const mean = seg.reduce((a, v) => a + v, 0) / n;
          const variance = seg.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
          for (let i = 0; i < n; i++) {
            const c = g * cpg + Math.floor(i / (H * W));
            ref[base + i] = ((seg[i] - mean) / Math.sqrt(variance + 1e-6)) * w.v[c] + b.v[c];
          }
        }
      }
      assertClose(toF64(y), ref, { atol: 1e-4, rtol: 1e-4 }, 'groupNorm');
      assert.throws(() => ops.groupNorm(x.t, 4), /6 channels .* do not split into 4 groups/);
      const silu = ops.groupNorm(x.t, G, w.t, b.t, 1e-6, { silu: true });
      assertClose(toF64(silu), ref.map((v) => v / (1 + Math.exp(-v))), { atol: 1e-4, rtol: 1e-4 }, 'groupNorm + silu');
      const bf = ops.groupNorm(x.t.to({ dtype: 'bfloat16' }), G, w.t, b.t, 1e-6, { silu: true });
      assert.equal(bf.dtype, 'bfloat16');
      // torch's group_norm then silu in bf16: the fused op rounds the norm's output first, so the bits are the same
      const unfused = ops.silu(ops.groupNorm(x.t.to({ dtype: 'bfloat16' }), G, w.t, b.t, 1e-6));
      assert.deepEqual(bf.toBytes(), unfused.toBytes(), 'groupNorm + silu bf16 = silu(groupNorm) bit for bit');
    });
  });

  it('softmax over the last and an inner dim', () => {
    tidy(() => {
      const x = randTensor([3, 4, 77], 60, { scale: 4 });
      assertClose(toF64(ops.softmax(x.t)), refSoftmaxRows(x.v, 12, 77), F32, 'softmax(-1)');
      const y = toF64(ops.softmax(x.t, 1));
      const ref = new Float64Array(x.v.length);
      for (let a = 0; a < 3; a++) {
        for (let c = 0; c < 77; c++) {
          const col = [0, 1, 2, 3].map((j) => x.v[(a * 4 + j) * 77 + c]);
          const s = refSoftmaxRows(col, 1, 4);
          for (let j = 0; j < 4; j++) ref[(a * 4 + j) * 77 + c] = s[j];
        }
      }
      assertClose(y, ref, F32, 'softmax(1)');
    });
  });
});

describe('elementwise', () => {
  const unaryRefs: [string, (t: Tensor) => Tensor, (v: number) => number][] = [
    ['gelu', (t) => ops.gelu(t), (v) => 0.5 * v * (1 + erf(v / Math.SQRT2))],
    [
      'gelu tanh',
      (t) => ops.gelu(t, 'tanh'),
      (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
    ],
    ['quickGelu', (t) => ops.quickGelu(t), (v) => v / (1 + Math.exp(-1.702 * v))],
    ['silu', (t) => ops.silu(t), (v) => v / (1 + Math.exp(-v))],
    ['tanh', (t) => ops.tanh(t), Math.tanh],
    ['sigmoid', (t) => ops.sigmoid(t), (v) => 1 / (1 + Math.exp(-v))],
    ['exp', (t) => ops.exp(t), Math.exp],
    ['scale', (t) => ops.scale(t, -0.37), (v) => v * -0.37],
    ['affine', (t) => ops.affine(t, 0.5, 0.5), (v) => v * 0.5 + 0.5],
    ['clamp', (t) => ops.clamp(t, -0.5, 0.25), (v) => Math.min(Math.max(v, -0.5), 0.25)],
  ];
  for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
    for (const [name, op, ref] of unaryRefs) {
      it(`${name} ${dtype}`, () => {
        tidy(() => {
          const x = randTensor([77], 70, { dtype, scale: 2 });
          const y = op(x.t);
          assert.equal(y.dtype, dtype);
          assertClose(toF64(y), x.v.map(ref), tolFor(dtype), `${name} ${dtype}`);
        });
      });
    }
  }

  it('add/sub/mul/div broadcast like numpy', () => {
    tidy(() => {
      const a = randTensor([2, 1, 5], 80);
      const b = randTensor([3, 1], 81);
      const shape = [2, 3, 5];
      const at = (i: number, j: number, k: number) => a.v[i * 5 + k];
      const bt = (_i: number, j: number) => b.v[j];
      for (const [name, op, f] of [
        ['add', ops.add, (x: number, y: number) => x + y],
        ['sub', ops.sub, (x: number, y: number) => x - y],
        ['mul', ops.mul, (x: number, y: number) => x * y],
        ['div', ops.div, (x: number, y: number) => x / y],
      ] as const) {
        const y = op(a.t, b.t);
        assert.deepEqual(y.shape, shape);
        const ref = new Float64Array(30);
        for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 5; k++) ref[(i * 3 + j) * 5 + k] = f(at(i, j, k), bt(i, j));
        assertClose(toF64(y), ref, { atol: 1e-5, rtol: 1e-5 }, name);
      }
      assert.throws(() => ops.add(a.t, Tensor.zeros([4])), /ops\.add: shapes \[2,1,5\] and \[4\] do not broadcast/);
    });
  });

  it('modulate x·(1+scale)+shift with [B,1,D] against [B,L,D]', () => {
    tidy(() => {
      const x = randTensor([2, 3, 7], 90, { dtype: 'bfloat16' });
      const shift = randTensor([2, 1, 7], 91, { dtype: 'bfloat16' });
      const scale = randTensor([2, 1, 7], 92, { dtype: 'bfloat16' });
      const y = ops.modulate(x.t, shift.t, scale.t);
      assert.equal(y.dtype, 'bfloat16');
      const ref = x.v.map((v, n) => {
        const b = Math.floor(n / 21);
        const d = n % 7;
        return v * (1 + scale.v[b * 7 + d]) + shift.v[b * 7 + d];
      });
      assertClose(toF64(y), ref, BF16, 'modulate');
    });
  });
});

describe('layout', () => {
  it('concat, split and slice along inner and outer dims', () => {
    tidy(() => {
      const a = randTensor([2, 3, 4], 100);
      const b = randTensor([2, 1, 4], 101);
      const c = ops.concat([a.t, b.t], 1);
      assert.deepEqual(c.shape, [2, 4, 4]);
      const cv = toF64(c);
      for (let i = 0; i < 2; i++) {
        assert.deepEqual([...cv.subarray(i * 16, i * 16 + 12)], [...a.v.subarray(i * 12, i * 12 + 12)]);
        assert.deepEqual([...cv.subarray(i * 16 + 12, i * 16 + 16)], [...b.v.subarray(i * 4, i * 4 + 4)]);
      }
      const [p, q] = ops.split(c, [3, 1], 1);
      assert.deepEqual(toF64(p), a.v);
      assert.deepEqual(toF64(q), b.v);
      const pieces = ops.split(c, 3, -1);
      assert.deepEqual(
        pieces.map((t) => t.shape),
        [
          [2, 4, 3],
          [2, 4, 1],
        ],
      );
      const s = ops.slice(c, 0, 1, 2);
      assert.equal(s.nativeHandle('t').storageId, c.nativeHandle('t').storageId, 'leading slice is a view');
      assert.deepEqual(toF64(s), cv.subarray(16, 32));
      const neg = ops.slice(c, -1, -2, 100);
      assert.deepEqual(neg.shape, [2, 4, 2]);
      assert.throws(() => ops.split(c, [1, 1], 1), /do not add up to 4/);
    });
  });

  it('permute and transpose', () => {
    tidy(() => {
      const x = randTensor([2, 3, 5, 7], 110);
      const y = ops.permute(x.t, [0, 2, 1, 3]);
      assert.deepEqual(y.shape, [2, 5, 3, 7]);
      const yv = toF64(y);
      for (let a = 0; a < 2; a++) for (let b = 0; b < 5; b++) for (let c = 0; c < 3; c++) for (let d = 0; d < 7; d++) {
        assert.equal(yv[((a * 5 + b) * 3 + c) * 7 + d], x.v[((a * 3 + c) * 5 + b) * 7 + d]);
      }
      const t = ops.transpose(x.t, -1, 0);
      assert.deepEqual(t.shape, [7, 3, 5, 2]);
      assert.throws(() => ops.permute(x.t, [0, 0, 1, 2]), /not a permutation/);
    });
  });

  it('reshape views share storage; contiguous is a view', () => {
    tidy(() => {
      const x = randTensor([4, 6], 120);
      const r = x.t.reshape([2, -1, 3]);
      assert.deepEqual(r.shape, [2, 4, 3]);
      assert.equal(r.nativeHandle('t').storageId, x.t.nativeHandle('t').storageId);
      assert.deepEqual(toF64(ops.contiguous(r)), x.v);
      assert.throws(() => x.t.reshape([5, 5]), /cannot reshape \[4,6\] float32 cpu to \[5,5\]/);
    });
  });

  it('embedding gathers rows for int32 and int64 ids and rejects out-of-range ids', () => {
    tidy(() => {
      const w = randTensor([11, 5], 130);
      for (const dtype of ['int32', 'int64'] as DType[]) {
        const ids = Tensor.fromArray([3, 0, 10, 3], [2, 2], { dtype });
        const y = ops.embedding(w.t, ids);
        assert.deepEqual(y.shape, [2, 2, 5]);
        const yv = toF64(y);
        [3, 0, 10, 3].forEach((id, i) => assert.deepEqual([...yv.subarray(i * 5, i * 5 + 5)], [...w.v.subarray(id * 5, id * 5 + 5)]));
      }
      assert.throws(() => ops.embedding(w.t, Tensor.fromArray([11], [1], { dtype: 'int32' })), /id 11 .* out of range/);
    });
  });

  it('rope rotates interleaved pairs like Flux apply_rotary_emb', () => {
    tidy(() => {
      const [B, H, L, D] = [1, 2, 3, 6];
      const x = randTensor([B, H, L, D], 140);
      const angles = randTensor([L, D / 2], 141);
      const cosv = new Float32Array(L * D);
      const sinv = new Float32Array(L * D);
      for (let l = 0; l < L; l++) {
        for (let i = 0; i < D / 2; i++) {
          cosv[l * D + 2 * i] = cosv[l * D + 2 * i + 1] = Math.cos(angles.v[l * (D / 2) + i]);
          sinv[l * D + 2 * i] = sinv[l * D + 2 * i + 1] = Math.sin(angles.v[l * (D / 2) + i]);
        }
      }
      const y = ops.rope(x.t, Tensor.fromArray(cosv, [L, D]), Tensor.fromArray(sinv, [L, D]));
      const ref = new Float64Array(x.v.length);
      for (let r = 0; r < B * H * L; r++) {
        const l = r % L;
        for (let i = 0; i < D; i += 2) {
          const re = x.v[r * D + i];
          const im = x.v[r * D + i + 1];
          ref[r * D + i] = re * cosv[l * D + i] - im * sinv[l * D + i];
          ref[r * D + i + 1] = im * cosv[l * D + i + 1] + re * sinv[l * D + i + 1];
        }
      }
      assertClose(toF64(y), ref, F32, 'rope');
    });
  });

  it('upsampleNearest2x', () => {
    tidy(() => {
      const x = randTensor([1, 3, 2, 3], 150);
      const y = toF64(ops.upsampleNearest2x(x.t));
      for (let c = 0; c < 3; c++) for (let i = 0; i < 4; i++) for (let j = 0; j < 6; j++) {
        assert.equal(y[(c * 4 + i) * 6 + j], x.v[(c * 2 + (i >> 1)) * 3 + (j >> 1)]);
      }
    });
  });
});

function refConv(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | null,
  [B, Cin, H, W]: number[],
  [Cout, KH, KW]: number[],
  stride: number,
  pad: number,
): { out: Float64Array; shape: number[] } {
  const OH = Math.floor((H + 2 * pad - KH) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - KW) / stride) + 1;
  const out = new Float64Array(B * Cout * OH * OW);
  for (let bi = 0; bi < B; bi++) for (let co = 0; co < Cout; co++) for (let oy = 0; oy < OH; oy++) for (let ox = 0; ox < OW; ox++) {
    let s = b ? b[co] : 0;
    for (let ci = 0; ci < Cin; ci++) for (let ky = 0; ky < KH; ky++) for (let kx = 0; kx < KW; kx++) {
      const iy = oy * stride - pad + ky;
      const ix = ox * stride - pad + kx;
      if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
      s += x[((bi * Cin + ci) * H + iy) * W + ix] * w[((co * Cin + ci) * KH + ky) * KW + kx];
    }
    out[((bi * Cout + co) * OH + oy) * OW + ox] = s;
  }
  return { out, shape: [B, Cout, OH, OW] };
}

describe('conv2d', () => {
  for (const [xs, ws, stride, pad] of [
    [[2, 3, 7, 5], [5, 3, 3, 3], 1, 1],
    [[1, 5, 9, 9], [3, 5, 3, 3], 2, 0],
    [[2, 7, 4, 3], [9, 7, 1, 1], 1, 0],
    [[1, 1, 1, 1], [1, 1, 1, 1], 1, 0],
    [[1, 4, 6, 6], [2, 4, 3, 3], 2, 1],
  ] as [number[], number[], number, number][]) {
    it(`x [${xs}] w [${ws}] stride ${stride} padding ${pad}`, () => {
      tidy(() => {
        const x = randTensor(xs, 160);
        const w = randTensor(ws, 161, { scale: 0.3 });
        const b = randTensor([ws[0]], 162);
        const y = ops.conv2d(x.t, w.t, b.t, { stride, padding: pad });
        const ref = refConv(x.v, w.v, b.v, xs, [ws[0], ws[2], ws[3]], stride, pad);
        assert.deepEqual(y.shape, ref.shape);
        assertClose(toF64(y), ref.out, { atol: 1e-4, rtol: 1e-4 }, 'conv2d');
      });
    });
  }

  it('upsample nearest2x fused into the convolution', () => {
    tidy(() => {
      for (const [xs, ws, stride, pad] of [
        [[2, 3, 4, 5], [5, 3, 3, 3], 1, 1],
        [[1, 8, 3, 3], [4, 8, 1, 1], 1, 0],
        [[1, 2, 5, 4], [3, 2, 3, 3], 2, 1],
      ] as [number[], number[], number, number][]) {
        const x = randTensor(xs, 180);
        const w = randTensor(ws, 181, { scale: 0.3 });
        const b = randTensor([ws[0]], 182);
        const [B, C, H, W] = xs;
        const up = new Float64Array(B * C * 4 * H * W);
        for (let p = 0; p < B * C; p++) for (let y = 0; y < 2 * H; y++) for (let xx = 0; xx < 2 * W; xx++) {
          up[(p * 2 * H + y) * 2 * W + xx] = x.v[(p * H + (y >> 1)) * W + (xx >> 1)];
        }
        const y = ops.conv2d(x.t, w.t, b.t, { stride, padding: pad, upsample: 'nearest2x' });
        const ref = refConv(up, w.v, b.v, [B, C, 2 * H, 2 * W], [ws[0], ws[2], ws[3]], stride, pad);
        assert.deepEqual(y.shape, ref.shape);
        assertClose(toF64(y), ref.out, { atol: 1e-4, rtol: 1e-4 }, `conv2d upsample [${xs}]`);
      }
      const x = randTensor([1, 2, 3, 3], 183);
      assert.throws(() => ops.conv2d(x.t, x.t, null, { upsample: 'bilinear' as 'nearest2x' }), /upsample must be 'nearest2x'/);
    });
  });

  it('norm: the convolution of groupNorm(x) (+SiLU), the two ops bit for bit', () => {
    tidy(() => {
      for (const [xs, groups, silu, upsample, dtype] of [
        [[2, 6, 5, 4], 3, true, false, 'float32'],
        [[1, 8, 3, 5], 2, false, true, 'float32'],
        [[1, 4, 6, 6], 4, true, false, 'bfloat16'],
      ] as [number[], number, boolean, boolean, DType][]) {
        const x = randTensor(xs, 190, { scale: 2, dtype });
        const w = randTensor([3, xs[1], 3, 3], 191, { scale: 0.3, dtype });
        const nw = randTensor([xs[1]], 192);
        const nb = randTensor([xs[1]], 193);
        const up = upsample ? ('nearest2x' as const) : undefined;
        const fused = ops.conv2d(x.t, w.t, null, { padding: 1, upsample: up, norm: { groups, weight: nw.t, bias: nb.t, eps: 1e-6, silu } });
        const unfused = ops.conv2d(ops.groupNorm(x.t, groups, nw.t, nb.t, 1e-6, { silu }), w.t, null, { padding: 1, upsample: up });
        assert.deepEqual(fused.toBytes(), unfused.toBytes(), `conv2d norm [${xs}] G=${groups} ${dtype}`);
      }
      const x = randTensor([1, 6, 3, 3], 194);
      const w = randTensor([2, 6, 1, 1], 195);
      assert.throws(() => ops.conv2d(x.t, w.t, null, { norm: { groups: 4 } }), /6 channels .* do not split into 4 groups/);
      assert.throws(() => ops.conv2d(x.t, w.t, null, { norm: { groups: 0 } }), /norm\.groups must be a positive integer/);
    });
  });

  it('bfloat16 storage and channel mismatch errors', () => {
    tidy(() => {
      const x = randTensor([1, 3, 5, 5], 170, { dtype: 'bfloat16' });
      const w = randTensor([4, 3, 3, 3], 171, { dtype: 'bfloat16', scale: 0.3 });
      const y = ops.conv2d(x.t, w.t, null, { padding: 1 });
      assert.equal(y.dtype, 'bfloat16');
      assertClose(toF64(y), refConv(x.v, w.v, null, [1, 3, 5, 5], [4, 3, 3], 1, 1).out, BF16, 'conv2d bf16');
      assert.throws(() => ops.conv2d(x.t, Tensor.zeros([4, 2, 3, 3])), /ops\.conv2d: channels differ/);
    });
  });
});

describe('casts', () => {
  it('float32 -> bfloat16 / float16 round to nearest even; float -> int truncates', () => {
    tidy(() => {
      const vals = [1, 1.00390625, 1.005859375, -2.5, 65504, 1e-8, 3.14159];
      const x = Tensor.fromArray(vals, [vals.length]);
      const bf = ops.cast(x, 'bfloat16').toArray() as Float32Array;
      assert.equal(bf[1], 1); // halfway between 1 and 1.0078125: to even
      assert.equal(bf[2], 1.0078125);
      const h = ops.cast(x, 'float16').toArray() as Float32Array;
      assert.equal(h[4], 65504);
      assert.equal(h[6], 3.140625);
      const i = ops.cast(Tensor.fromArray([1.9, -1.9, 7], [3]), 'int32').toArray();
      assert.deepEqual([...i], [1, -1, 7]);
      const i64 = ops.cast(Tensor.fromArray([5, -3], [2], { dtype: 'int32' }), 'int64').toArray();
      assert.deepEqual([...i64], [5n, -3n]);
      assert.equal(product(x.shape), vals.length);
    });
  });
});
