// Issue 5's op additions on the CPU against straightforward float64 math: linear's fused epilogues (GELU-tanh,
// gate, residual; dense and NF4 weights), layerNormModulate, qkNormRope, sdpa in [B,L,H,D], timestepEmbedding
// (diffusers' float32 steps), Philox randn (a known-answer test of the generator), NF4Tensor.concatRows and
// jointQkv (bitwise the composition it replaces: linear ×3 + qkNormRope + concat).
// The same ops on CUDA are compared with these in backend-ops.spec.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cuda } from './cuda';
import { ops } from './ops';
import { tidy } from './scope';
import { Generator, NF4Tensor, Tensor } from './tensor';
import type { DType } from './types';
import { assertClose, randTensor, refMatmul, refSoftmaxRows, toF64 } from './testing/helpers';

const F32 = { atol: 2e-5, rtol: 2e-5 };
const BF16 = { atol: 2e-2, rtol: 1.6e-2 };
const F16 = { atol: 2e-3, rtol: 2e-3 };
const tolFor = (d: DType) => (d === 'bfloat16' ? BF16 : d === 'float16' ? F16 : F32);

const geluTanh = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));

describe('linear epilogues', () => {
  // x [B,L,K], w [N,K]: out = residual + gate[b] ⊙ act(x·wᵀ + bias)
  const [B, L, K, N] = [2, 5, 33, 12];

  function reference(
    x: Float64Array,
    w: Float64Array,
    bias: Float64Array,
    o: { gelu?: boolean; gate?: (b: number, n: number) => number; residual?: Float64Array },
  ): Float64Array {
    const y = refMatmul(x, w, B * L, K, N, true);
    return y.map((v, i) => {
      const m = Math.floor(i / N);
      const n = i % N;
      let r = v + bias[n];
      if (o.gelu) r = geluTanh(r);
      if (o.gate) r *= o.gate(Math.floor(m / L), n);
      if (o.residual) r += o.residual[i];
      return r;
    });
  }

  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    it(`gelu_tanh, gate [B,1,N] / [B,N] / [N] and residual, ${dtype}`, () => {
      tidy(() => {
        const x = randTensor([B, L, K], 1, { dtype });
        const w = randTensor([N, K], 2, { dtype, scale: 0.3 });
        const b = randTensor([N], 3, { dtype });
        const g = randTensor([B, 1, N], 4, { dtype });
        const r = randTensor([B, L, N], 5, { dtype });
        const tol = tolFor(dtype);

        const gelu = ops.linear(x.t, w.t, b.t, { activation: 'gelu_tanh' });
        assert.deepEqual(gelu.shape, [B, L, N]);
        assert.equal(gelu.dtype, dtype);
        assertClose(toF64(gelu), reference(x.v, w.v, b.v, { gelu: true }), tol, 'gelu_tanh');

        const gate = (bb: number, n: number): number => g.v[bb * N + n];
        const full = ops.linear(x.t, w.t, b.t, { gate: g.t, residual: r.t });
        assertClose(toF64(full), reference(x.v, w.v, b.v, { gate, residual: r.v }), tol, 'gate [B,1,N] + residual');
        const flat = ops.linear(x.t, w.t, b.t, { gate: g.t.reshape([B, N]), residual: r.t });
        assertClose(toF64(flat), toF64(full), { atol: 0, rtol: 0 }, 'gate [B,N] equals [B,1,N]');

        const shared = randTensor([N], 6, { dtype });
        const one = ops.linear(x.t, w.t, null, { gate: shared.t });
        assertClose(toF64(one), reference(x.v, w.v, new Float64Array(N), { gate: (_, n) => shared.v[n] }), tol, 'gate [N] only');
        const res = ops.linear(x.t, w.t, b.t, { residual: r.t });
        assertClose(toF64(res), reference(x.v, w.v, b.v, { residual: r.v }), tol, 'residual only');
        const both = ops.linear(x.t, w.t, b.t, { activation: 'gelu_tanh', gate: g.t, residual: r.t });
        assertClose(toF64(both), reference(x.v, w.v, b.v, { gelu: true, gate, residual: r.v }), tol, 'gelu + gate + residual');
      });
    });
  }

  it('NF4 weights take the same epilogues (plain and double quant)', () => {
    tidy(() => {
      const K64 = 128;
      const x = randTensor([B, L, K64], 7);
      const wd = randTensor([N, K64], 8, { scale: 0.1 });
      const b = randTensor([N], 9);
      const g = randTensor([B, 1, N], 10);
      const r = randTensor([B, L, N], 11);
      for (const doubleQuant of [false, true]) {
        const q = ops.nf4Quantize(wd.t, { doubleQuant });
        const deq = toF64(ops.nf4Dequantize(q));
        const y = ops.linear(x.t, q, b.t, { gate: g.t, residual: r.t });
        const ref = refMatmul(x.v, deq, B * L, K64, N, true).map((v, i) => {
          const n = i % N;
          return r.v[i] + g.v[Math.floor(Math.floor(i / N) / L) * N + n] * (v + b.v[n]);
        });
        assertClose(toF64(y), ref, { atol: 1e-4, rtol: 1e-4 }, `nf4 dq=${doubleQuant} gate + residual`);
        const gelu = ops.linear(x.t, q, b.t, { activation: 'gelu_tanh' });
        const refGelu = refMatmul(x.v, deq, B * L, K64, N, true).map((v, i) => geluTanh(v + b.v[i % N]));
        assertClose(toF64(gelu), refGelu, { atol: 1e-4, rtol: 1e-4 }, `nf4 dq=${doubleQuant} gelu_tanh`);
      }
    });
  });

  it('x in parts along its last dim: bitwise the product with their concatenation (dense and nf4 weights)', () => {
    tidy(() => {
      for (const dtype of ['float32', 'bfloat16'] as DType[]) {
        const parts = [randTensor([B, L, 64], 20, { dtype }).t, randTensor([B, L, 128], 21, { dtype }).t];
        const dense = randTensor([N, 192], 22, { dtype, scale: 0.2 }).t;
        const opts = { gate: randTensor([B, 1, N], 23, { dtype }).t, residual: randTensor([B, L, N], 24, { dtype }).t };
        const bias = randTensor([N], 25, { dtype }).t;
        for (const weight of [dense, ops.nf4Quantize(dense, { doubleQuant: true })]) {
          const whole = ops.linear(ops.concat(parts, 2), weight, bias, opts);
          const got = ops.linear(parts, weight, bias, opts);
          assert.deepEqual(got.shape, [B, L, N]);
          assert.deepEqual(toF64(got), toF64(whole), `${dtype} ${weight instanceof NF4Tensor ? 'nf4' : 'dense'}`);
        }
        const head = ops.slice(dense, 1, 0, 64);
        assert.deepEqual(toF64(ops.linear([parts[0]], head, bias)), toF64(ops.linear(parts[0], head, bias)), 'one part');
      }
      const x = randTensor([B, L, 64], 26).t;
      assert.throws(() => ops.linear([], Tensor.zeros([N, 64])), /non-empty array/);
      assert.throws(() => ops.linear([x, Tensor.zeros([B, L + 1, 64])], Tensor.zeros([N, 128])), /parts of x differ before the last dim/);
      assert.throws(() => ops.linear([x, Tensor.zeros([B, L, 64], { dtype: 'bfloat16' })], Tensor.zeros([N, 128])), /parts of x must share/);
      assert.throws(() => ops.linear([x, x], Tensor.zeros([N, 100])), /last dim of x must equal K = 100/);
    });
  });

  it('rejects gates and residuals that do not fit, and unknown activations', () => {
    tidy(() => {
      const x = Tensor.zeros([B, L, K]);
      const w = Tensor.zeros([N, K]);
      const bad = (opts: Parameters<typeof ops.linear>[3], re: RegExp) =>
        assert.throws(() => ops.linear(x, w, null, opts), (e: Error) => re.test(e.message));
      bad({ gate: Tensor.zeros([B, 1, N + 1]) }, /ops\.linear: gate \[2,1,13\].*must be \[N\], \[B,N\] or \[B,1,N\]/);
      bad({ gate: Tensor.zeros([3, 1, N]) }, /ops\.linear: gate \[3,1,12\]/);
      bad({ gate: Tensor.zeros([B, 2, N]) }, /ops\.linear: gate \[2,2,12\]/);
      bad({ residual: Tensor.zeros([B, L, N - 1]) }, /ops\.linear: residual \[2,5,11\].*output's shape \[2,5,12\]/);
      bad({ activation: 'relu' as 'gelu_tanh' }, /unknown activation 'relu'/);
    });
  });
});

describe('layerNormModulate', () => {
  const refLnMod = (x: Float64Array, sh: (r: number, i: number) => number, sc: (r: number, i: number) => number, rows: number, C: number, eps: number) => {
    const out = new Float64Array(rows * C);
    for (let r = 0; r < rows; r++) {
      let mean = 0;
      for (let i = 0; i < C; i++) mean += x[r * C + i];
      mean /= C;
      let v = 0;
      for (let i = 0; i < C; i++) v += (x[r * C + i] - mean) ** 2;
      const rstd = 1 / Math.sqrt(v / C + eps);
      for (let i = 0; i < C; i++) out[r * C + i] = (x[r * C + i] - mean) * rstd * (1 + sc(r, i)) + sh(r, i);
    }
    return out;
  };

  for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
    for (const C of [1, 3, 77, 320]) {
      it(`[2,5,${C}] with shift/scale [B,1,D], [B,D] and [D], ${dtype}`, () => {
        tidy(() => {
          const x = randTensor([2, 5, C], C, { dtype, scale: 3 });
          const sh = randTensor([2, 1, C], C + 1, { dtype });
          const sc = randTensor([2, 1, C], C + 2, { dtype });
          const y = ops.layerNormModulate(x.t, sh.t, sc.t, 1e-6);
          assert.deepEqual(y.shape, [2, 5, C]);
          assert.equal(y.dtype, dtype);
          const per = (p: Float64Array) => (r: number, i: number) => p[Math.floor(r / 5) * C + i];
          assertClose(toF64(y), refLnMod(x.v, per(sh.v), per(sc.v), 10, C, 1e-6), tolFor(dtype), 'per batch');
          const y2 = ops.layerNormModulate(x.t, sh.t.reshape([2, C]), sc.t.reshape([2, C]), 1e-6);
          assertClose(toF64(y2), toF64(y), { atol: 0, rtol: 0 }, '[B,D] equals [B,1,D]');
          const shared = randTensor([C], C + 3, { dtype });
          const y3 = ops.layerNormModulate(x.t, shared.t, shared.t);
          const s = (_: number, i: number) => shared.v[i];
          assertClose(toF64(y3), refLnMod(x.v, s, s, 10, C, 1e-6), tolFor(dtype), 'shared [D], default eps 1e-6');
        });
      });
    }
  }

  it('equals layerNorm then modulate; rejects mismatched shift/scale', () => {
    tidy(() => {
      const x = randTensor([3, 7, 64], 30, { scale: 2 });
      const sh = randTensor([3, 1, 64], 31);
      const sc = randTensor([3, 1, 64], 32);
      const fused = ops.layerNormModulate(x.t, sh.t, sc.t, 1e-6);
      const twoStep = ops.modulate(ops.layerNorm(x.t, null, null, 1e-6), sh.t, sc.t);
      assertClose(toF64(fused), toF64(twoStep), { atol: 1e-6, rtol: 1e-6 }, 'fused vs two ops');
      assert.throws(() => ops.layerNormModulate(x.t, Tensor.zeros([2, 1, 64]), sc.t), /shift \[2,1,64\].*must be \[D\], \[B,D\] or \[B,1,D\]/);
      assert.throws(() => ops.layerNormModulate(x.t, sh.t, Tensor.zeros([64])), /both be per batch or both shared/);
    });
  });
});

/** cos/sin tables [L,D] with each frequency repeated twice, as FluxPosEmbed returns them. */
function ropeTables(L: number, D: number, seed: number, dtype: DType = 'float32'): { cos: Tensor; sin: Tensor; c: Float64Array; s: Float64Array } {
  const ang = randTensor([L, D / 2], seed).v;
  const c = new Float64Array(L * D);
  const s = new Float64Array(L * D);
  for (let i = 0; i < L * (D / 2); i++) {
    c[2 * i] = c[2 * i + 1] = Math.cos(ang[i]);
    s[2 * i] = s[2 * i + 1] = Math.sin(ang[i]);
  }
  const cos = Tensor.fromArray(Float32Array.from(c), [L, D], { dtype });
  const sin = Tensor.fromArray(Float32Array.from(s), [L, D], { dtype });
  return { cos, sin, c: Float64Array.from(cos.toArray() as Float32Array), s: Float64Array.from(sin.toArray() as Float32Array) };
}

describe('qkNormRope', () => {
  for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
    for (const [Bq, L, H, D] of [
      [2, 5, 3, 8],
      [1, 7, 2, 2],
      [1, 3, 1, 200],
    ]) {
      it(`[${Bq},${L},${H},${D}] ${dtype}: rmsNorm over D, then Flux's rope`, () => {
        tidy(() => {
          const x = randTensor([Bq, L, H, D], D + L, { dtype, scale: 2 });
          const w = randTensor([D], D, { dtype });
          const { cos, sin, c, s } = ropeTables(L, D, D + 1);
          const y = ops.qkNormRope(x.t, w.t, cos, sin, 1e-6);
          assert.deepEqual(y.shape, [Bq, L, H, D]);
          assert.equal(y.dtype, dtype);
          const ref = new Float64Array(x.v.length);
          for (let r = 0; r < Bq * L * H; r++) {
            const l = Math.floor(r / H) % L;
            let sq = 0;
            for (let i = 0; i < D; i++) sq += x.v[r * D + i] ** 2;
            const rstd = 1 / Math.sqrt(sq / D + 1e-6);
            for (let i = 0; i < D; i += 2) {
              const re = x.v[r * D + i] * rstd * w.v[i];
              const im = x.v[r * D + i + 1] * rstd * w.v[i + 1];
              ref[r * D + i] = re * c[l * D + i] - im * s[l * D + i];
              ref[r * D + i + 1] = im * c[l * D + i + 1] + re * s[l * D + i + 1];
            }
          }
          assertClose(toF64(y), ref, tolFor(dtype), 'qkNormRope');
        });
      });
    }
  }

  it('takes bf16 tables and rejects odd head dims and mismatched tables', () => {
    tidy(() => {
      const x = randTensor([1, 4, 2, 16], 50);
      const w = randTensor([16], 51);
      const f = ropeTables(4, 16, 52);
      const b = ropeTables(4, 16, 52, 'bfloat16');
      const y32 = ops.qkNormRope(x.t, w.t, f.cos, f.sin);
      const y16 = ops.qkNormRope(x.t, w.t, b.cos, b.sin);
      assertClose(toF64(y16), toF64(y32), { atol: 2e-2, rtol: 1e-2 }, 'bf16 tables');
      assert.throws(() => ops.qkNormRope(Tensor.zeros([1, 4, 2, 3]), Tensor.ones([3]), Tensor.ones([4, 3]), Tensor.ones([4, 3])), /head dim must be even/);
      assert.throws(() => ops.qkNormRope(x.t, w.t, Tensor.ones([5, 16]), Tensor.ones([5, 16])), /cos and sin must be \[L,D\] = \[4,16\]/);
      assert.throws(() => ops.qkNormRope(x.t.reshape([1, 4, 32]), w.t, f.cos, f.sin), /must be \[B,L,H,D\]/);
    });
  });
});

describe('jointQkv', () => {
  /** Bit patterns of a tensor's values (float32 view of any float dtype: exact for bf16/f16). */
  const bits = (t: Tensor): Uint32Array => new Uint32Array(Float32Array.from(t.toArray() as Float32Array).buffer);

  // The composition jointQkv replaces: three projections per stream, qkNormRope on q and k, concat along L.
  for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
    for (const [B, lengths, H, D] of [
      [2, [5, 7], 3, 8],
      [1, [1, 4, 2], 2, 16],
      [1, [3], 1, 2],
      [2, [7], 4, 6],
    ] as [number, number[], number, number][]) {
      it(`streams of [${lengths}] tokens, ${H} heads × ${D}, ${dtype}: equals linear×3 + qkNormRope + concat bitwise`, () => {
        tidy(() => {
          const K = 12;
          const dim = H * D;
          const total = lengths.reduce((a, b) => a + b, 0);
          const { cos, sin } = ropeTables(total, D, 70 + D);
          let row = 0;
          const streams = lengths.map((L, i) => {
            const x = randTensor([B, L, K], 71 + i, { dtype }).t;
            const w = [0, 1, 2].map((j) => randTensor([dim, K], 80 + 3 * i + j, { dtype, scale: 0.5 }).t);
            const b = [0, 1, 2].map((j) => randTensor([dim], 90 + 3 * i + j, { dtype, scale: 0.1 }).t);
            const normQ = randTensor([D], 100 + i, { dtype }).t;
            const normK = randTensor([D], 110 + i, { dtype }).t;
            const rows = { cos: ops.slice(cos, 0, row, row + L), sin: ops.slice(sin, 0, row, row + L) };
            row += L;
            return { x, w, b, normQ, normK, ...rows };
          });
          const fused = ops.jointQkv(
            streams.map((s) => ({
              qkv: ops.linear(s.x, ops.concat(s.w, 0), ops.concat(s.b, 0)),
              normQ: s.normQ,
              normK: s.normK,
              cos: s.cos,
              sin: s.sin,
            })),
            H,
            1e-6,
          );
          const parts = streams.map((s) => {
            const [q, k, v] = [0, 1, 2].map((j) => ops.linear(s.x, s.w[j], s.b[j]).reshape([B, s.x.shape[1], H, D]));
            return {
              q: ops.qkNormRope(q, s.normQ, s.cos, s.sin, 1e-6),
              k: ops.qkNormRope(k, s.normK, s.cos, s.sin, 1e-6),
              v,
            };
          });
          for (const name of ['q', 'k', 'v'] as const) {
            const got = fused[name];
            assert.deepEqual(got.shape, [B, total, H, D]);
            assert.equal(got.dtype, dtype);
            const want = ops.concat(parts.map((p) => p[name]), 1);
            assert.deepEqual(bits(got), bits(want), `${name} differs from the composition`);
          }
        });
      });
    }
  }

  it('takes bf16 norm weights and tables beside float32 projections, and an empty stream', () => {
    tidy(() => {
      const qkv = randTensor([1, 3, 3 * 2 * 4], 120).t;
      const normQ = randTensor([4], 121, { dtype: 'bfloat16' }).t;
      const normK = randTensor([4], 122, { dtype: 'bfloat16' }).t;
      const tables = ropeTables(3, 4, 123, 'bfloat16');
      const { q, k, v } = ops.jointQkv(
        [
          { qkv: Tensor.zeros([1, 0, 24]), normQ, normK, cos: Tensor.zeros([0, 4]), sin: Tensor.zeros([0, 4]) },
          { qkv, normQ, normK, cos: tables.cos, sin: tables.sin },
        ],
        2,
      );
      const [qp, kp, vp] = ops.split(qkv, 8, 2).map((t) => t.reshape([1, 3, 2, 4]));
      assert.deepEqual(bits(q), bits(ops.qkNormRope(qp, normQ, tables.cos, tables.sin)));
      assert.deepEqual(bits(k), bits(ops.qkNormRope(kp, normK, tables.cos, tables.sin)));
      assert.deepEqual(bits(v), bits(vp));
    });
  });

  it('projects streams given as { x, weight, bias } (dense and nf4 weights) bitwise as linear + jointQkv', () => {
    tidy(() => {
      const [H, D, K] = [2, 64, 64];
      const { cos, sin } = ropeTables(9, D, 130);
      for (const dtype of ['float32', 'bfloat16'] as DType[]) {
        const streams = [4, 5].map((L, i) => {
          const dense = randTensor([3 * H * D, K], 131 + i, { dtype, scale: 0.2 }).t;
          return {
            x: randTensor([2, L, K], 133 + i, { dtype }).t,
            weight: i === 0 ? dense : ops.nf4Quantize(dense, { doubleQuant: true }),
            bias: i === 0 ? randTensor([3 * H * D], 135, { dtype, scale: 0.1 }).t : null,
            normQ: randTensor([D], 136 + i, { dtype }).t,
            normK: randTensor([D], 138 + i, { dtype }).t,
            cos: ops.slice(cos, 0, i * 4, i * 4 + L),
            sin: ops.slice(sin, 0, i * 4, i * 4 + L),
          };
        });
        const projected = ops.jointQkv(streams, H);
        const composed = ops.jointQkv(
          streams.map(({ x, weight, bias, ...tables }) => ({ qkv: ops.linear(x, weight, bias), ...tables })),
          H,
        );
        for (const name of ['q', 'k', 'v'] as const) {
          assert.deepEqual(bits(projected[name]), bits(composed[name]), `${dtype} ${name}`);
        }
        const { x, weight, bias, ...tables } = streams[0];
        assert.throws(() => ops.jointQkv([streams[0], { qkv: ops.linear(x, weight, bias), ...tables }], H), /every stream as qkv, or every stream as \{ x, weight, bias \}/);
        assert.throws(() => ops.jointQkv([{ ...streams[0], x: randTensor([2, 4, K + 8], 140, { dtype }).t }], H), /jointQkv|linear/);
        // A linear of the one stream's x alongside: its output bitwise ops.linear's, q, k, v unchanged.
        const mlp = { weight: ops.nf4Quantize(randTensor([96, K], 141, { dtype, scale: 0.2 }).t), bias: randTensor([96], 142, { dtype }).t, activation: 'gelu_tanh' as const };
        const alone = ops.jointQkv([streams[1]], H);
        const withMlp = ops.jointQkv([streams[1]], H, 1e-6, { alongside: mlp });
        for (const name of ['q', 'k', 'v'] as const) assert.deepEqual(bits(withMlp[name]), bits(alone[name]), `${dtype} ${name} with a linear alongside`);
        assert.deepEqual(bits(withMlp.alongside!), bits(ops.linear(streams[1].x, mlp.weight, mlp.bias, mlp)), `${dtype} the linear alongside`);
        assert.throws(() => ops.jointQkv(streams, H, 1e-6, { alongside: mlp }), /a linear alongside needs exactly one stream/);
      }
    });
  });

  it('rejects mismatched streams with errors naming the stream', () => {
    tidy(() => {
      const D = 4;
      const good = { qkv: Tensor.zeros([1, 3, 24]), normQ: Tensor.ones([D]), normK: Tensor.ones([D]), cos: Tensor.ones([3, D]), sin: Tensor.ones([3, D]) };
      assert.throws(() => ops.jointQkv([], 2), /non-empty array/);
      assert.throws(() => ops.jointQkv([good], 0), /heads must be a positive integer/);
      assert.throws(() => ops.jointQkv([good], 5), /last dim 24 is not 3·heads·D for 5 heads/);
      assert.throws(() => ops.jointQkv([{ ...good, qkv: Tensor.zeros([1, 3, 18]) }], 2), /head dim must be even, got 3/);
      assert.throws(() => ops.jointQkv([good, { ...good, qkv: Tensor.zeros([1, 3, 48]) }], 2), /must be \[1,L,24\] like stream 0's \(stream 1: qkv \[1,3,48\]/);
      assert.throws(() => ops.jointQkv([good, { ...good, qkv: Tensor.zeros([2, 3, 24]) }], 2), /like stream 0's/);
      assert.throws(() => ops.jointQkv([good, { ...good, qkv: Tensor.zeros([1, 3, 24], { dtype: 'bfloat16' }) }], 2), /stream 0's dtype float32/);
      assert.throws(() => ops.jointQkv([{ ...good, normK: Tensor.ones([D + 1]) }], 2), /normQ and normK must have D = 4 values/);
      assert.throws(() => ops.jointQkv([good, { ...good, cos: Tensor.ones([2, D]) }], 2), /cos and sin must be \[L,D\] = \[3,4\] \(stream 1/);
      assert.throws(() => ops.jointQkv([{ ...good, qkv: Tensor.zeros([1, 3, 24], { dtype: 'int32' }) }], 2), /jointQkv/);
      assert.throws(() => ops.jointQkv([{ ...good, normQ: undefined as unknown as Tensor }], 2), /streams\[0\]\.normQ must be a Tensor/);
    });
  });
});

describe('sdpa layout BLHD', () => {
  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    it(`[B,L,H,D] operands equal the [B,H,L,D] result transposed, ${dtype}`, () => {
      tidy(() => {
        const [B, Lq, Lk, H, D] = [2, 7, 11, 3, 16];
        const q = randTensor([B, Lq, H, D], 60, { dtype });
        const k = randTensor([B, Lk, H, D], 61, { dtype });
        const v = randTensor([B, Lk, H, D], 62, { dtype });
        const y = ops.sdpa(q.t, k.t, v.t, { layout: 'BLHD' });
        assert.deepEqual(y.shape, [B, Lq, H, D]);
        const t = (x: Tensor) => ops.permute(x, [0, 2, 1, 3]);
        const ref = t(ops.sdpa(t(q.t), t(k.t), t(v.t)));
        assertClose(toF64(y), toF64(ref), { atol: 1e-6, rtol: 1e-6 }, 'BLHD vs BHLD');
        // and against float64 math, with a key-padding mask
        const mask = Tensor.fromArray(Array.from({ length: B * Lk }, (_, i) => (i % Lk < 8 ? 1 : 0)), [B, Lk], { dtype: 'uint8' });
        const ym = ops.sdpa(q.t, k.t, v.t, { layout: 'BLHD', mask, scale: 0.3 });
        const ymRef = t(ops.sdpa(t(q.t), t(k.t), t(v.t), { mask, scale: 0.3 }));
        assertClose(toF64(ym), toF64(ymRef), { atol: 1e-6, rtol: 1e-6 }, 'BLHD with mask');
        const qv = q.v;
        const out = toF64(y);
        for (const [b, i, h] of [
          [0, 0, 0],
          [1, 6, 2],
        ]) {
          const s = new Float64Array(Lk);
          for (let j = 0; j < Lk; j++) {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += qv[((b * Lq + i) * H + h) * D + d] * k.v[((b * Lk + j) * H + h) * D + d];
            s[j] = dot / Math.sqrt(D);
          }
          const p = refSoftmaxRows(s, 1, Lk);
          for (let d = 0; d < D; d++) {
            let acc = 0;
            for (let j = 0; j < Lk; j++) acc += p[j] * v.v[((b * Lk + j) * H + h) * D + d];
            const got = out[((b * Lq + i) * H + h) * D + d];
            assert.ok(Math.abs(got - acc) <= tolFor(dtype).atol + tolFor(dtype).rtol * Math.abs(acc), `BLHD (${b},${i},${h},${d}): ${got} vs ${acc}`);
          }
        }
      });
    });
  }

  it('checks shapes against the layout', () => {
    tidy(() => {
      const q = Tensor.zeros([1, 5, 2, 8]);
      const k = Tensor.zeros([1, 6, 3, 8]);
      assert.throws(() => ops.sdpa(q, k, k, { layout: 'BLHD' }), /expects q \[B,Lq,H,D\], k and v \[B,Lk,H,D\]/);
      assert.throws(() => ops.sdpa(q, q, q, { layout: 'BHDL' as 'BLHD' }), /layout must be 'BHLD' or 'BLHD'/);
    });
  });
});

describe('timestepEmbedding', () => {
  // diffusers' get_timestep_embedding, step by step in float32 (Math.fround) as torch computes it
  function reference(t: number[], dim: number, flip: boolean, shift: number, scale: number, maxPeriod: number): Float64Array {
    const half = Math.floor(dim / 2);
    const f = Math.fround;
    const out = new Float64Array(t.length * dim);
    for (let b = 0; b < t.length; b++) {
      for (let i = 0; i < half; i++) {
        const exponent = f(f(f(-Math.log(maxPeriod)) * i) / f(half - shift));
        const arg = f(f(scale) * f(f(t[b]) * f(Math.exp(exponent))));
        out[b * dim + (flip ? half + i : i)] = Math.sin(arg);
        out[b * dim + (flip ? i : half + i)] = Math.cos(arg);
      }
    }
    return out;
  }

  for (const [dim, flip, shift, scale] of [
    [256, true, 0, 1],
    [7, false, 1, 1],
    [2, true, 0, 1000],
    [1, true, 0, 1],
  ] as [number, boolean, number, number][]) {
    it(`dim ${dim}, flipSinToCos ${flip}, downscaleFreqShift ${shift}, scale ${scale}`, () => {
      tidy(() => {
        // Flux passes t·1000 (scale 1): arguments up to 1000, whose float32 ulp (6e-5) bounds the agreement of sin/cos
        // once exp() may differ in its last bit between libraries
        const tv = scale > 1 ? [0, 0.001, 0.5, 1] : [0, 1, 999.5, 500, 0.25, 3];
        for (const dtype of ['float32', 'bfloat16'] as DType[]) {
          const t = Tensor.fromArray(tv, [tv.length], { dtype });
          const held = [...(t.toArray() as Float32Array)];
          const y = ops.timestepEmbedding(t, dim, { flipSinToCos: flip, downscaleFreqShift: shift, scale });
          assert.deepEqual(y.shape, [tv.length, dim]);
          assert.equal(y.dtype, 'float32');
          assertClose(toF64(y), reference(held, dim, flip, shift, scale, 10000), { atol: 5e-4, rtol: 0 }, `timestepEmbedding ${dtype}`);
        }
      });
    });
  }

  it('rejects non-vector timesteps and bad dims', () => {
    tidy(() => {
      assert.throws(() => ops.timestepEmbedding(Tensor.zeros([2, 1]), 8), /t must be 1-d \[B\]/);
      assert.throws(() => ops.timestepEmbedding(Tensor.zeros([2]), 0), /invalid dim 0/);
    });
  });
});

// Philox4x32-10 in BigInt arithmetic: the reference for the native generator (core/philox.h).
function philox(seed: bigint, counter: bigint): number[] {
  const M = 0xffffffffn;
  let c = [counter & M, (counter >> 32n) & M, 0n, 0n];
  let k0 = seed & M;
  let k1 = (seed >> 32n) & M;
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * c[0];
    const p1 = 0xcd9e8d57n * c[2];
    c = [((p1 >> 32n) ^ c[1] ^ k0) & M, p1 & M, ((p0 >> 32n) ^ c[3] ^ k1) & M, p0 & M];
    k0 = (k0 + 0x9e3779b9n) & M;
    k1 = (k1 + 0xbb67ae85n) & M;
  }
  return c.map(Number);
}

describe('Tensor.randn with a seed (Philox, on the tensor device)', () => {
  it('the generator passes Random123 known-answer tests', () => {
    // philox4x32-10 from the Random123 distribution's kat_vectors: counter 0, key 0
    assert.deepEqual(philox(0n, 0n).map((v) => v.toString(16)), ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']);
  });

  it('draws Box-Muller normals of the Philox words, element i from counter i/4', () => {
    tidy(() => {
      const seed = 0x1234_5678_9abcn;
      const n = 27;
      const y = Tensor.randn([3, 9], { seed }).toArray() as Float32Array;
      const uniform = (w: number) => (Math.floor(w / 256) + 0.5) / 16777216;
      for (let i = 0; i < n; i++) {
        const words = philox(seed, BigInt(Math.floor(i / 4)));
        const pair = Math.floor((i % 4) / 2);
        const r = Math.sqrt(-2 * Math.log(uniform(words[2 * pair])));
        const theta = 2 * Math.PI * uniform(words[2 * pair + 1]);
        const z = i % 2 === 0 ? r * Math.cos(theta) : r * Math.sin(theta);
        assert.ok(Math.abs(y[i] - z) <= 2e-5 * Math.max(1, Math.abs(z)), `element ${i}: ${y[i]} vs ${z}`);
      }
    });
  });

  it('is reproducible, seed-dependent, scaled by mean/std, and about N(0,1)', () => {
    tidy(() => {
      const a = Tensor.randn([1000, 100], { seed: 7 }).toArray() as Float32Array;
      const b = Tensor.randn([1000, 100], { seed: 7n }).toArray() as Float32Array;
      const c = Tensor.randn([1000, 100], { seed: 8 }).toArray() as Float32Array;
      assert.deepEqual(a, b);
      assert.notDeepEqual(a.subarray(0, 100), c.subarray(0, 100));
      let mean = 0;
      let sq = 0;
      for (const v of a) {
        mean += v;
        sq += v * v;
      }
      mean /= a.length;
      const std = Math.sqrt(sq / a.length - mean * mean);
      assert.ok(Math.abs(mean) < 0.01 && Math.abs(std - 1) < 0.01, `mean ${mean}, std ${std}`);
      const s = Tensor.randn([1000, 100], { seed: 7, mean: 3, std: 0.5, dtype: 'bfloat16' });
      assert.equal(s.dtype, 'bfloat16');
      const sv = s.toArray() as Float32Array;
      for (let i = 0; i < 1000; i++) assert.ok(Math.abs(sv[i] - (3 + 0.5 * a[i])) <= 0.02, `scaled element ${i}`);
      assert.equal(Tensor.randn([0, 5], { seed: 1 }).numel, 0);
    });
  });

  it('keeps the torch-compatible generator path and rejects ambiguous options', () => {
    tidy(() => {
      const torchLike = Tensor.randn([4], { generator: new Generator(0) }).toArray() as Float32Array;
      assert.ok(Math.abs(torchLike[0] - 1.5409960746765137) < 1e-7, 'torch.randn(manual_seed(0))[0]');
      assert.throws(() => Tensor.randn([2], { generator: new Generator(0), seed: 1 } as never), /either a generator or a seed/);
      assert.throws(() => Tensor.randn([2], {} as never), /needs \{ generator \}/);
      assert.throws(() => Tensor.randn([2], { seed: 1.5 }), /not an integer/);
      assert.throws(() => Tensor.randn([2], { seed: 1, dtype: 'int32' }), /float type/);
    });
  });
});

describe('NF4Tensor.concatRows', () => {
  it('stacks plain and double-quant weights into one plain weight computing the same products', () => {
    tidy(() => {
      const K = 128;
      const parts = [
        ops.nf4Quantize(randTensor([24, K], 70, { scale: 0.05 }).t),
        ops.nf4Quantize(randTensor([8, K], 71, { scale: 0.05 }).t, { doubleQuant: true }),
        ops.nf4Quantize(randTensor([40, K], 72, { scale: 0.05 }).t),
      ];
      const fused = NF4Tensor.concatRows(parts);
      assert.deepEqual(fused.shape, [72, K]);
      assert.equal(fused.doubleQuant, false);
      const whole = toF64(ops.nf4Dequantize(fused));
      const pieces = parts.map((p) => toF64(ops.nf4Dequantize(p)));
      assert.deepEqual([...whole], pieces.flatMap((p) => [...p]), 'dequantized rows are the parts in order');
      const x = randTensor([3, K], 73);
      const y = toF64(ops.linear(x.t, fused));
      const ys = parts.map((p) => toF64(ops.linear(x.t, p)));
      for (let m = 0; m < 3; m++) {
        const row = [...ys[0].subarray(m * 24, m * 24 + 24), ...ys[1].subarray(m * 8, m * 8 + 8), ...ys[2].subarray(m * 40, m * 40 + 40)];
        assertClose(y.subarray(m * 72, m * 72 + 72), Float64Array.from(row), { atol: 1e-6, rtol: 1e-6 }, `row ${m}`);
      }
      // the parts stay usable: concatRows copies
      for (const p of parts) p.dispose();
      assert.deepEqual([...toF64(ops.nf4Dequantize(fused))], [...whole]);
      fused.dispose();
    });
  });

  it('rejects parts that do not line up', () => {
    tidy(() => {
      const a = ops.nf4Quantize(Tensor.ones([4, 128]));
      const b = ops.nf4Quantize(Tensor.ones([4, 64]));
      const c = ops.nf4Quantize(Tensor.ones([4, 96]));
      assert.throws(() => NF4Tensor.concatRows([a, b]), /must share K, blocksize and device/);
      assert.throws(() => NF4Tensor.concatRows([c, c]), /K = 96 must be a multiple of the blocksize 64/);
      assert.throws(() => NF4Tensor.concatRows([]), /at least one/);
    });
  });
});

describe('cuda.captureGraph without a GPU', () => {
  it('throws a clear error when CUDA is unavailable', (t) => {
    if (cuda.isAvailable()) {
      t.skip('a GPU is present: graph.spec.ts covers capture');
      return;
    }
    assert.throws(
      () => cuda.captureGraph(() => null),
      (e: Error & { code?: string }) => e.code === 'ERR_FLUXLAB_NO_CUDA' && /cuda\.captureGraph/.test(e.message),
    );
  });
});
