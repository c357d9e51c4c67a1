// The backend-ops test (after llama.cpp's test-backend-ops): every CUDA op against the CPU op on the same random
// inputs, over many shapes (odd ones, Flux's own) and dtypes, judged by the normalised mean squared error
// ‖gpu−cpu‖²/‖cpu‖² against a limit per dtype, and by the worst element max|gpu−cpu|/max|cpu| (a wrong tile or
// row hides in a mean over millions of values); layout ops, gathers and NF4 quantization must match exactly.
// Limits: float32 results differ only in float32 rounding order (NMSE ~1e-12); a bfloat16 result is rounded to 8
// significant bits, a relative error up to 2^-9 per element, so two correct kernels that round at different points
// (bf16 GEMM operands, P in attention, NF4 weights dequantized to bf16 as bitsandbytes does) differ by NMSE ~1e-5
// and by a few bf16 ulps of the largest value: 5e-4 and 2^-5 leave a margin of ~50x and ~4x and still catch one
// wrong row of tiles. float16 has 11 bits: 1e-5 and 2^-8.
// Routed ops (linear with bf16/nf4 weights, sdpa) also report which kernel served them (cuda.routeCounts) and
// assert it: a shape the fluxk kernels accept must run on them, so a silent fallback to the portable kernel
// fails here instead of passing as correct-but-slow.
// Without a GPU every case is skipped with the reason printed; FLUXLAB_REQUIRE_GPU=1 turns that into failures.
// A summary table is printed at the end (and written to $FLUXLAB_BACKEND_OPS_LOG when set).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { cuda } from './cuda';
import { ops } from './ops';
import { tidy } from './scope';
import { Generator, NF4Tensor, Tensor } from './tensor';
import type { DType } from './types';
import { buildInfo } from './index';
import { gpuOrSkip, nmse, product, randn } from './testing/helpers';

const LIMIT: Record<string, number> = { float32: 1e-9, bfloat16: 5e-4, float16: 1e-5 };
const MAX_REL: Record<string, number> = { float32: 1e-4, bfloat16: 2 ** -5, float16: 2 ** -8 };
const FLOATS: DType[] = ['float32', 'bfloat16', 'float16'];

interface Row {
  op: string;
  dtype: string;
  err: number;
  limit: number;
  ok: boolean;
  /** max|gpu−cpu| / max|cpu| */
  maxRel?: number;
  /** the kernel that served a routed op */
  route?: string;
}
const rows: Row[] = [];

after(() => {
  if (rows.length === 0) return;
  const failed = rows.filter((r) => !r.ok);
  const lines = rows.map(
    (r) =>
      `${r.ok ? 'OK  ' : 'FAIL'} ${r.op.padEnd(58)} ${r.dtype.padEnd(9)} err ${r.err.toExponential(2)} (limit ${r.limit.toExponential(0)})` +
      (r.maxRel === undefined ? '' : ` max ${r.maxRel.toExponential(2)}`) +
      (r.route === undefined ? '' : ` [${r.route}]`),
  );
  const summary = `backend-ops: ${rows.length - failed.length}/${rows.length} comparisons passed`;
  if (process.env.FLUXLAB_BACKEND_OPS_LOG) writeFileSync(process.env.FLUXLAB_BACKEND_OPS_LOG, [...lines, summary, ''].join('\n'));
  console.log([...failed.map((r) => lines[rows.indexOf(r)]), summary].join('\n'));
});

/** Random input on the CPU and the same values on the GPU. */
function pair(shape: number[], seed: number, dtype: DType = 'float32', scale = 1): [Tensor, Tensor] {
  const cpu = Tensor.fromArray(randn(product(shape), seed, scale), shape, { dtype });
  return [cpu, cpu.to('cuda')];
}

/** max|a−b| / max|b| (0 when both are all zero; Infinity on NaN mismatch). */
function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Infinity;
    if (Number.isNaN(a[i])) continue;
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? (worst === 0 ? 0 : Infinity) : worst / scale;
}

function check(op: string, dtype: string, cpu: Tensor, gpu: Tensor, limit = LIMIT[dtype] ?? 0, route?: string): void {
  assert.equal(gpu.device.startsWith('cuda'), true, `${op}: result not on the GPU`);
  assert.deepEqual(gpu.shape, cpu.shape, `${op}: shapes differ`);
  assert.equal(gpu.dtype, cpu.dtype, `${op}: dtypes differ`);
  const g = gpu.toArray();
  const c = cpu.toArray();
  let err: number;
  let maxRel: number | undefined;
  if (g instanceof BigInt64Array || c instanceof BigInt64Array) {
    err = g.every((v, i) => v === c[i]) ? 0 : Infinity;
  } else if (limit === 0) {
    err = g.every((v, i) => Object.is(v, c[i]) || v === c[i]) ? 0 : Infinity;
  } else {
    err = nmse(g as ArrayLike<number>, c as ArrayLike<number>);
    maxRel = maxRelError(g as ArrayLike<number>, c as ArrayLike<number>);
  }
  const maxLimit = MAX_REL[dtype] ?? Infinity;
  const ok = err <= limit && (maxRel === undefined || maxRel <= maxLimit);
  rows.push({ op, dtype, err, limit, ok, maxRel, route });
  assert.ok(err <= limit, `${op} ${dtype}: error ${err} exceeds ${limit}${route ? ` (kernel: ${route})` : ''}`);
  assert.ok(
    maxRel === undefined || maxRel <= maxLimit,
    `${op} ${dtype}: worst element off by ${maxRel} of the largest value (limit ${maxLimit})${route ? ` (kernel: ${route})` : ''}`,
  );
}

/**
 * `got` equals `expected` (both on the GPU) up to a float32 summation order before the bf16 rounding: every element
 * within one bf16 step of the largest value's scale, and few elements differing at all.
 */
function sameUpToSplitOrder(op: string, expected: Tensor, got: Tensor, route: string): void {
  assert.deepEqual(got.shape, expected.shape, `${op}: shapes differ`);
  const g = got.toArray() as Float32Array;
  const e = expected.toArray() as Float32Array;
  const maxRel = maxRelError(g, e);
  const differing = g.reduce((n, v, i) => n + (Object.is(v, e[i]) ? 0 : 1), 0) / g.length;
  const ok = maxRel <= 2 ** -7 && differing <= 0.05;
  rows.push({ op, dtype: 'bfloat16', err: differing, limit: 0.05, ok, maxRel, route });
  assert.ok(ok, `${op}: ${(100 * differing).toFixed(2)}% of the elements differ, worst by ${maxRel} of the largest value (kernel: ${route})`);
}

/** Runs `f` on CPU and GPU inputs and compares. */
function both(op: string, dtype: string, inputs: [Tensor, Tensor][], f: (...xs: Tensor[]) => Tensor, limit?: number): void {
  const c = f(...inputs.map((p) => p[0]));
  const g = f(...inputs.map((p) => p[1]));
  check(op, dtype, c, g, limit);
}

describe('backend-ops: elementwise', () => {
  const unary: [string, (x: Tensor) => Tensor][] = [
    ['gelu', (x) => ops.gelu(x)],
    ['gelu_tanh', (x) => ops.gelu(x, 'tanh')],
    ['quickGelu', (x) => ops.quickGelu(x)],
    ['silu', (x) => ops.silu(x)],
    ['tanh', (x) => ops.tanh(x)],
    ['sigmoid', (x) => ops.sigmoid(x)],
    ['exp', (x) => ops.exp(x)],
    ['scale', (x) => ops.scale(x, 0.125)],
    ['affine', (x) => ops.affine(x, 0.5, 0.5)],
    ['clamp', (x) => ops.clamp(x, -1, 1)],
  ];
  for (const dtype of FLOATS) {
    for (const [name, f] of unary) {
      it(`${name} ${dtype}`, (t) => {
        if (!gpuOrSkip(t)) return;
        for (const shape of [[1], [77], [3, (1 << 16) + 3]]) {
          tidy(() => both(`${name} [${shape}]`, dtype, [pair(shape, shape.length, dtype, 2)], f));
        }
      });
    }
    it(`add/sub/mul/div/modulate ${dtype} with broadcasting`, (t) => {
      if (!gpuOrSkip(t)) return;
      const shapes: [number[], number[]][] = [
        [[77], [77]],
        [[2, 3, 77], [77]],
        [[2, 1, 5], [3, 1]],
        [[1, 4096, 64], [1, 1, 64]],
        [[3, 1], [1]],
      ];
      for (const [sa, sb] of shapes) {
        tidy(() => {
          const a = pair(sa, 1, dtype);
          const b = pair(sb, 2, dtype);
          for (const [n, f] of [
            ['add', ops.add],
            ['sub', ops.sub],
            ['mul', ops.mul],
            ['div', ops.div],
          ] as const) {
            both(`${n} [${sa}]x[${sb}]`, dtype, [a, b], f);
          }
        });
      }
      tidy(() => {
        const x = pair([2, 333, 128], 3, dtype);
        const sh = pair([2, 1, 128], 4, dtype);
        const sc = pair([2, 1, 128], 5, dtype);
        both('modulate [2,333,128]', dtype, [x, sh, sc], (a, b, c) => ops.modulate(a, b, c));
      });
    });
  }

  it('casts between every pair of dtypes, fills, host/device copies', (t) => {
    if (!gpuOrSkip(t)) return;
    const all: DType[] = ['float32', 'bfloat16', 'float16', 'uint8', 'int32', 'int64'];
    for (const from of all) {
      for (const to of all) {
        tidy(() => {
          const values = Array.from({ length: 1001 }, (_, i) => ((i * 37) % 251) - (from === 'uint8' ? 0 : 120) + (from.startsWith('float') || from === 'bfloat16' ? 0.375 : 0));
          const c = Tensor.fromArray(values, [1001], { dtype: from });
          const g = c.to('cuda');
          check(`cast ${from}->${to}`, to, c.to({ dtype: to }), g.to({ dtype: to }), 0);
        });
      }
    }
    tidy(() => {
      for (const dtype of all) check(`full ${dtype}`, dtype, Tensor.full([5, 7], 3, { dtype }), Tensor.full([5, 7], 3, { dtype, device: 'cuda' }), 0);
      const src = pair([1000], 9, 'bfloat16');
      const host = src[1].to({ device: 'cpu', pinned: true, nonBlocking: true });
      assert.equal(host.pinned, true);
      cuda.synchronize(); // the asynchronous copy must land before the host reads it
      const dst = Tensor.zeros([1000], { device: 'cuda', dtype: 'float32' });
      dst.copyFrom(host.to({ pinned: true }), { nonBlocking: true });
      check('copyFrom pinned host -> cuda (bf16->f32)', 'float32', src[0].to({ dtype: 'float32' }), dst, 0);
    });
  });
});

describe('backend-ops: normalisation', () => {
  for (const dtype of FLOATS) {
    it(`layerNorm / rmsNorm / softmax ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      for (const C of [1, 3, 77, 768, 1025, 3072, 4096, 4097]) {
        tidy(() => {
          const x = pair([5, C], C, dtype, 3);
          const w = pair([C], C + 1, dtype);
          const b = pair([C], C + 2, dtype);
          both(`layerNorm [5,${C}] affine`, dtype, [x, w, b], (a, ww, bb) => ops.layerNorm(a, ww, bb, 1e-6));
          both(`layerNorm [5,${C}]`, dtype, [x], (a) => ops.layerNorm(a, null, null, 1e-6));
          both(`rmsNorm [5,${C}]`, dtype, [x, w], (a, ww) => ops.rmsNorm(a, ww, 1e-6));
          both(`softmax [5,${C}]`, dtype, [x], (a) => ops.softmax(a));
        });
      }
      tidy(() => {
        const x = pair([3, 77, 9], 7, dtype, 3);
        both('softmax dim 1 [3,77,9]', dtype, [x], (a) => ops.softmax(a, 1));
      });
    });

    it(`groupNorm ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number[], number][] = [
        [[2, 6, 3, 5], 3],
        [[1, 128, 32, 32], 32],
        [[1, 64, 128, 128], 32],
        [[2, 3, 1, 1], 1],
      ];
      for (const [shape, groups] of cases) {
        tidy(() => {
          const x = pair(shape, shape[1], dtype, 2);
          const w = pair([shape[1]], 1, dtype);
          const b = pair([shape[1]], 2, dtype);
          both(`groupNorm [${shape}] G=${groups}`, dtype, [x, w, b], (a, ww, bb) => ops.groupNorm(a, groups, ww, bb, 1e-6));
        });
      }
    });
  }
});

describe('backend-ops: matrix products', () => {
  const linearShapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 64, 3072],
    [7, 77, 130],
    [77, 3, 5],
    [333, 3072, 128],
    [130, 768, 333],
    [512, 256, 1024],
  ];
  for (const xd of FLOATS) {
    for (const wd of FLOATS) {
      it(`linear x ${xd} w ${wd}`, (t) => {
        if (!gpuOrSkip(t)) return;
        for (const [M, K, N] of linearShapes) {
          tidy(() => {
            const x = pair([M, K], M + K, xd);
            const w = pair([N, K], N, wd, 1 / Math.sqrt(K));
            const b = pair([N], 3, xd);
            both(`linear [${M},${K}]x[${N},${K}]${wd === xd ? '' : ` w ${wd}`}`, xd, [x, w, b], (a, ww, bb) => ops.linear(a, ww, bb));
          });
        }
      });
    }
    it(`linear with NF4 weights, x ${xd}`, (t) => {
      if (!gpuOrSkip(t)) return;
      for (const [M, K, N] of [
        [1, 64, 96],
        [5, 128, 77],
        [256, 3072, 64],
      ]) {
        for (const doubleQuant of [false, true]) {
          tidy(() => {
            const w = Tensor.fromArray(randn(N * K, N + K, 0.05), [N, K]);
            const q = ops.nf4Quantize(w, { doubleQuant });
            const qg = q.to('cuda') as NF4Tensor;
            const x = pair([M, K], M, xd);
            check(`linear nf4${doubleQuant ? ' dq' : ''} [${M},${K}]x[${N},${K}]`, xd, ops.linear(x[0], q), ops.linear(x[1], qg));
            check(`nf4Dequantize${doubleQuant ? ' dq' : ''} [${N},${K}]`, xd, ops.nf4Dequantize(q, xd), ops.nf4Dequantize(qg, xd), 0);
          });
        }
      }
    });
    it(`matmul / bmm ${xd}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number[], number[]][] = [
        [[3, 5, 9], [3, 9, 1]],
        [[2, 1, 7, 77], [3, 77, 5]],
        [[24, 64, 128], [24, 128, 64]],
        [[1, 1], [1, 1]],
        [[130, 65], [65, 33]],
      ];
      for (const [sa, sb] of cases) {
        tidy(() => both(`matmul [${sa}]x[${sb}]`, xd, [pair(sa, 1, xd), pair(sb, 2, xd, 0.3)], (a, b) => ops.matmul(a, b)));
      }
    });
  }
});

describe('backend-ops: attention', () => {
  for (const dtype of FLOATS) {
    it(`sdpa ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number, number, number, number, number][] = [
        [1, 1, 1, 1, 8],
        [2, 3, 77, 33, 16],
        [1, 2, 77, 77, 64],
        [1, 4, 200, 200, 128],
        [1, 1, 33, 65, 256],
        [1, 24, 96, 96, 128],
      ];
      for (const [B, H, Lq, Lk, D] of cases) {
        tidy(() => {
          const q = pair([B, H, Lq, D], 1, dtype);
          const k = pair([B, H, Lk, D], 2, dtype);
          const v = pair([B, H, Lk, D], 3, dtype);
          both(`sdpa B${B} H${H} Lq${Lq} Lk${Lk} D${D}`, dtype, [q, k, v], (a, b, c) => ops.sdpa(a, b, c));
        });
      }
      tidy(() => {
        const q = pair([2, 4, 13, 64], 4, dtype);
        const k = pair([2, 4, 13, 64], 5, dtype);
        const v = pair([2, 4, 13, 64], 6, dtype);
        const bias = pair([1, 4, 13, 13], 7, 'float32');
        both('sdpa + T5 bias [1,H,L,L], scale 1', dtype, [q, k, v, bias], (a, b, c, bb) => ops.sdpa(a, b, c, { bias: bb, scale: 1 }));
        const pad = Tensor.fromArray(Array.from({ length: 26 }, (_, i) => (i % 13 < 9 || i < 13 ? 1 : 0)), [2, 13], { dtype: 'uint8' });
        const padPair: [Tensor, Tensor] = [pad, pad.to('cuda')];
        both('sdpa + key padding mask [B,Lk]', dtype, [q, k, v, padPair], (a, b, c, m) => ops.sdpa(a, b, c, { mask: m }));
        const causal = Tensor.fromArray(Array.from({ length: 169 }, (_, i) => (i % 13 <= Math.floor(i / 13) ? 1 : 0)), [1, 1, 13, 13], { dtype: 'int64' });
        both('sdpa + causal mask [1,1,L,L] int64', dtype, [q, k, v, [causal, causal.to('cuda')]], (a, b, c, m) => ops.sdpa(a, b, c, { mask: m }));
        const none = Tensor.zeros([2, 13], { dtype: 'uint8' });
        both('sdpa fully masked rows give zeros', dtype, [q, k, v, [none, none.to('cuda')]], (a, b, c, m) => ops.sdpa(a, b, c, { mask: m }), 0);
      });
    });
  }
});

describe('backend-ops: layout, gathers, convolution', () => {
  for (const dtype of [...FLOATS, 'uint8', 'int32', 'int64'] as DType[]) {
    it(`concat / split / slice / permute / upsample ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      tidy(() => {
        const mk = (shape: number[], seed: number): [Tensor, Tensor] => {
          const c = Tensor.fromArray(randn(product(shape), seed, 50).map((v) => (dtype === 'uint8' ? Math.abs(v) : v)), shape, { dtype });
          return [c, c.to('cuda')];
        };
        const a = mk([2, 3, 77], 1);
        const b = mk([2, 5, 77], 2);
        both('concat dim 1', dtype, [a, b], (x, y) => ops.concat([x, y], 1), 0);
        both('concat dim -1', dtype, [a, a], (x, y) => ops.concat([x, y], -1), 0);
        both('concat dim 0 (one run per input)', dtype, [a, b, a], (x, y, z) => ops.concat([x.reshape([6, 77]), y.reshape([10, 77]), z.reshape([6, 77])], 0), 0);
        both('slice inner', dtype, [b], (x) => ops.slice(x, 1, 1, 4), 0);
        both('slice last', dtype, [b], (x) => ops.slice(x, 2, 7, 70), 0);
        both('split [1,2] dim 1 (second)', dtype, [a], (x) => ops.split(x, [1, 2], 1)[1], 0);
        both('permute [2,0,1]', dtype, [a], (x) => ops.permute(x, [2, 0, 1]), 0);
        const img = mk([1, 2, 3, 16, 24], 3);
        both('permute 5-d (latent packing)', dtype, [img], (x) => ops.permute(x.reshape([1, 2, 3, 8, 2, 12, 2]), [0, 3, 5, 1, 2, 4, 6]), 0);
        both('upsampleNearest2x [2,3,5,7]', dtype, [mk([2, 3, 5, 7], 4)], (x) => ops.upsampleNearest2x(x), 0);
      });
    });
  }

  for (const dtype of FLOATS) {
    it(`embedding / rope ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      tidy(() => {
        const w = pair([1000, 77], 1, dtype);
        for (const idt of ['int32', 'int64'] as DType[]) {
          const ids = Tensor.fromArray(Array.from({ length: 150 }, (_, i) => (i * 7919) % 1000), [3, 50], { dtype: idt });
          both(`embedding ${idt} ids`, dtype, [w, [ids, ids.to('cuda')]], (ww, ii) => ops.embedding(ww, ii), 0);
        }
        const x = pair([1, 24, 96, 128], 2, dtype);
        const ang = randn(96 * 64, 3);
        const cos = new Float32Array(96 * 128);
        const sin = new Float32Array(96 * 128);
        for (let i = 0; i < 96 * 64; i++) {
          cos[2 * i] = cos[2 * i + 1] = Math.cos(ang[i]);
          sin[2 * i] = sin[2 * i + 1] = Math.sin(ang[i]);
        }
        const c = Tensor.fromArray(cos, [96, 128]);
        const s = Tensor.fromArray(sin, [96, 128]);
        both('rope [1,24,96,128]', dtype, [x, [c, c.to('cuda')], [s, s.to('cuda')]], (a, cc, ss) => ops.rope(a, cc, ss));
      });
    });

    it(`conv2d ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number[], number[], number, number][] = [
        [[2, 3, 7, 5], [5, 3, 3, 3], 1, 1],
        [[1, 5, 9, 9], [3, 5, 3, 3], 2, 0],
        [[2, 7, 4, 3], [9, 7, 1, 1], 1, 0],
        [[1, 128, 32, 32], [128, 128, 3, 3], 1, 1],
        [[1, 16, 64, 64], [3, 16, 3, 3], 1, 1],
        [[1, 4, 6, 6], [2, 4, 3, 3], 2, 1],
      ];
      for (const [xs, ws, stride, padding] of cases) {
        tidy(() => {
          const x = pair(xs, 1, dtype);
          const w = pair(ws, 2, dtype, 1 / Math.sqrt(ws[1] * ws[2] * ws[3]));
          const b = pair([ws[0]], 3, dtype);
          both(`conv2d x[${xs}] w[${ws}] s${stride} p${padding}`, dtype, [x, w, b], (a, ww, bb) => ops.conv2d(a, ww, bb, { stride, padding }));
        });
      }
    });
  }
});

describe('backend-ops: NF4 quantization and random numbers', () => {
  it('nf4Quantize on the GPU is byte-identical to the CPU (plain and double quant)', (t) => {
    if (!gpuOrSkip(t)) return;
    for (const [N, K] of [
      [1, 2],
      [3, 77],
      [64, 64],
      [333, 256],
      [3072, 3072],
    ]) {
      for (const dtype of FLOATS) {
        for (const doubleQuant of [false, true]) {
          tidy(() => {
            const w = Tensor.fromArray(randn(N * K, N * 31 + K, 0.02), [N, K], { dtype });
            const c = ops.nf4Quantize(w, { doubleQuant }).toBitsandbytes();
            const g = ops.nf4Quantize(w.to('cuda'), { doubleQuant }).toBitsandbytes();
            for (const key of Object.keys(c)) {
              const cb = Buffer.from(c[key].toBytes());
              const gb = Buffer.from(g[key].toBytes());
              const ok = cb.equals(gb);
              rows.push({ op: `nf4Quantize${doubleQuant ? ' dq' : ''} [${N},${K}] ${key}`, dtype, err: ok ? 0 : Infinity, limit: 0, ok });
              assert.ok(ok, `nf4Quantize [${N},${K}] ${dtype} dq=${doubleQuant}: ${key} differs`);
            }
          });
        }
      }
    }
  });

  it('randn on the GPU equals randn on the CPU', (t) => {
    if (!gpuOrSkip(t)) return;
    tidy(() => {
      const c = Tensor.randn([2, 16, 64, 64], { generator: new Generator(42) });
      const g = Tensor.randn([2, 16, 64, 64], { generator: new Generator(42), device: 'cuda', dtype: 'bfloat16' });
      check('randn (bf16 on cuda)', 'bfloat16', c.to({ dtype: 'bfloat16' }), g, 0);
    });
  });
});

// ---- issue 5: the fluxk routes, the fused ops, device randn -------------------------------------------------

/** The route names of native/src/cuda/fluxk_routes.cpp. */
const ROUTE = {
  linear: {
    sm90: 'linear bf16: fluxk sm90 (wgmma)',
    sm80: 'linear bf16: fluxk sm80 (mma.sync)',
    gemv: 'linear bf16: fluxk gemv (M<=16)',
    portable: 'linear: portable',
  },
  f32Split: {
    sm90: 'linear f32 (bf16 weight): fluxk 3xbf16 split sm90 (wgmma)',
    sm80: 'linear f32 (bf16 weight): fluxk 3xbf16 split sm80 (mma.sync)',
  },
  nf4: {
    sm90: 'linear nf4: fluxk sm90 (wgmma)',
    sm80: 'linear nf4: fluxk sm80 (mma.sync)',
    gemv: 'linear nf4: fluxk gemv (M<=16)',
    portable: 'linear nf4: portable',
    dequantized: { sm90: 'linear nf4: dequantized + fluxk sm90 (wgmma)', sm80: 'linear nf4: dequantized + fluxk sm80 (mma.sync)' },
  },
  sdpa: { sm90: 'sdpa: fluxk sm90 (wgmma)', sm80: 'sdpa: fluxk sm80 (mma.sync)', portable: 'sdpa: portable' },
} as const;

let hopper: boolean | undefined;
/** sm_90 device and an addon built with sm_90a: the wgmma kernels must serve. */
function onHopper(): boolean {
  if (hopper === undefined) {
    const p = cuda.deviceProperties(0);
    hopper = p.major === 9 && p.minor === 0 && buildInfo().cudaArchs.split(',').includes('sm_90a');
    console.log(`backend-ops: ${p.name} sm_${p.major}${p.minor}, addon ${buildInfo().cudaArchs}: fluxk ${hopper ? 'sm90 (wgmma)' : 'sm80 (mma.sync)'} kernels expected`);
  }
  return hopper;
}

/**
 * What a case must run on: one route name, or for shapes the head-dim-128 fluxk attention does not take, any
 * other sdpa kernel (the portable one, or the VAE / text-encoder kernels of src/sm80/vae_t5.h).
 */
type Expected = string | { notFluxk128: true };
const OTHER_SDPA: Expected = { notFluxk128: true };

function describeExpected(e: Expected): string {
  return typeof e === 'string' ? e : `an sdpa kernel other than '${ROUTE.sdpa.sm90}' / '${ROUTE.sdpa.sm80}'`;
}

/** Runs a GPU op and returns its result with the one route it took (asserted against `expected`). */
function routed(expected: Expected, op: string, f: () => Tensor): { out: Tensor; route: string } {
  const before = cuda.routeCounts();
  const out = f();
  const after = cuda.routeCounts();
  const taken = Object.keys(after).filter((k) => after[k] !== (before[k] ?? 0));
  const route = taken.join(' + ') || 'none';
  const ok =
    typeof expected === 'string'
      ? route === expected
      : taken.length === 1 && route.startsWith('sdpa: ') && route !== ROUTE.sdpa.sm90 && route !== ROUTE.sdpa.sm80;
  assert.ok(ok, `${op}: expected kernel ${describeExpected(expected)}, ran '${route}'`);
  return { out, route };
}

/** Random input drawn on the CPU (Philox, fast for Flux-size tensors) and the same values on the GPU. */
function bigPair(shape: number[], seed: number, dtype: DType, std = 1): [Tensor, Tensor] {
  const cpu = Tensor.randn(shape, { seed, std, dtype });
  return [cpu, cpu.to('cuda')];
}

/** CPU op, GPU op (route asserted), compare. */
function routedBoth(op: string, dtype: string, expected: Expected, inputs: [Tensor, Tensor][], f: (...xs: Tensor[]) => Tensor, limit?: number): void {
  const c = f(...inputs.map((p) => p[0]));
  const { out, route } = routed(expected, op, () => f(...inputs.map((p) => p[1])));
  check(op, dtype, c, out, limit, route);
}

type Epi = 'none' | 'gelu' | 'gate+residual' | 'gate' | 'residual' | 'gelu+gate+residual';

/** linear with epilogue `epi` on x [B,L,K] (gate [B,1,N], residual [B,L,N]). */
function linearCase(
  label: string,
  dtype: DType,
  [B, L, K, N]: number[],
  epi: Epi,
  weight: (dev: 0 | 1) => Tensor,
  expected: string,
  seed: number,
): void {
  tidy(() => {
    const x = bigPair([B, L, K], seed, dtype);
    const b = bigPair([N], seed + 1, dtype, 0.1);
    const g = bigPair([B, 1, N], seed + 2, dtype);
    const r = bigPair([B, L, N], seed + 3, dtype);
    const opts = (i: 0 | 1) => ({
      activation: epi.includes('gelu') ? ('gelu_tanh' as const) : undefined,
      gate: epi.includes('gate') ? g[i] : undefined,
      residual: epi.includes('residual') ? r[i] : undefined,
    });
    const c = ops.linear(x[0], weight(0), b[0], opts(0));
    const { out, route } = routed(expected, label, () => ops.linear(x[1], weight(1), b[1], opts(1)));
    check(`${label} [${B},${L},${K}]x[${N},${K}] ${epi}`, dtype, c, out, undefined, route);
  });
}

/** The fluxk kernel of a bf16 x bf16-weight linear of M rows that fluxk takes: the skinny kernel up to 16 rows. */
function bf16LinearRoute(M: number): string {
  return M <= 16 ? ROUTE.linear.gemv : onHopper() ? ROUTE.linear.sm90 : ROUTE.linear.sm80;
}

describe('backend-ops: linear epilogues and the fluxk GEMMs', () => {
  // [B, L, K, N]: M = B·L; K, N multiples of 8 (fluxk) or not (portable); M ≤ 16 takes the skinny kernel (odd M,
  // N a multiple of 8 but not 16, K not a multiple of 32, gate rows per batch L), M = 17 the GEMM again
  const shapes: number[][] = [
    [1, 1, 64, 64],
    [3, 1, 128, 72],
    [7, 11, 320, 200],
    [3, 111, 256, 136],
    [1, 5, 77, 64],
    [7, 11, 64, 77],
    [2, 3, 16, 32],
    [1, 4, 32, 8],
    [1, 7, 200, 136],
    [2, 8, 328, 264],
    [1, 16, 1024, 24],
    [1, 17, 200, 136],
  ];
  for (const dtype of FLOATS) {
    it(`linear ${dtype} weights with every epilogue, awkward shapes`, (t) => {
      if (!gpuOrSkip(t)) return;
      for (const [i, [B, L, K, N]] of shapes.entries()) {
        const w = bigPair([N, K], 100 + i, dtype, 1 / Math.sqrt(K));
        const eligible = dtype === 'bfloat16' && K % 8 === 0 && N % 8 === 0;
        for (const epi of ['none', 'gelu', 'gate+residual', 'gate', 'residual', 'gelu+gate+residual'] as Epi[]) {
          // fluxk's epilogues: bias, gelu_tanh, or gate+residual (a missing term is supplied) — not gelu with a gate
          const fluxk = eligible && epi !== 'gelu+gate+residual';
          const expected = fluxk ? bf16LinearRoute(B * L) : ROUTE.linear.portable;
          linearCase('linear', dtype, [B, L, K, N], epi, (d) => w[d], expected, 10 * i);
        }
        w[0].dispose();
        w[1].dispose();
      }
    });
  }

  it('linear bfloat16 at the Flux transformer sizes (1024²: 4096 + 512 tokens; 512²: 1024 + 512)', (t) => {
    if (!gpuOrSkip(t)) return;
    const cases: [string, number[], Epi][] = [
      ['attn.to_q', [1, 4608, 3072, 3072], 'none'],
      ['ff.net.0.proj (GELU)', [1, 4608, 3072, 12288], 'gelu'],
      ['ff.net.2 (gate, residual)', [1, 4608, 12288, 3072], 'gate+residual'],
      ['single proj_out (gate, residual)', [1, 4608, 15360, 3072], 'gate+residual'],
      ['context qkv', [1, 512, 3072, 9216], 'none'],
      ['single proj_out at 512² (gate, residual)', [1, 1536, 15360, 3072], 'gate+residual'],
      ['context ff.net.2 (gate, residual)', [1, 512, 12288, 3072], 'gate+residual'],
      ['norm1.linear (modulation, M=1)', [1, 1, 3072, 18432], 'none'],
      ['single norm.linear (modulation, M=1)', [1, 1, 3072, 9216], 'none'],
      ['norm1.linear (modulation, batch 16)', [16, 1, 3072, 18432], 'none'],
    ];
    for (const [i, [name, [B, L, K, N], epi]] of cases.entries()) {
      const w = bigPair([N, K], 200 + i, 'bfloat16', 1 / Math.sqrt(K));
      linearCase(`linear ${name}`, 'bfloat16', [B, L, K, N], epi, (d) => w[d], bf16LinearRoute(B * L), 300 + 10 * i);
      w[0].dispose();
      w[1].dispose();
    }
  });

  it('linear with NF4 weights, x bfloat16: gemv (M ≤ 16), fluxk GEMM, dequantized + bf16 GEMM (gelu from 4096 rows, gate from 1536), portable fallbacks', (t) => {
    if (!gpuOrSkip(t)) return;
    const big = () => (onHopper() ? ROUTE.nf4.sm90 : ROUTE.nf4.sm80);
    const dequantized = () => (onHopper() ? ROUTE.nf4.dequantized.sm90 : ROUTE.nf4.dequantized.sm80);
    // [B, L, K, N, epilogue]
    const cases: [number[], Epi][] = [
      [[1, 1, 128, 96], 'none'],
      [[3, 1, 256, 136], 'gate+residual'],
      [[1, 16, 128, 96], 'gelu'],
      [[1, 17, 128, 96], 'gelu'],
      [[7, 11, 256, 136], 'none'],
      [[3, 111, 128, 200], 'gate+residual'],
      [[1, 5, 128, 77], 'none'],
      [[1, 77, 96, 64], 'none'],
      [[1, 1, 3072, 18432], 'none'],
      [[1, 4608, 3072, 12288], 'gelu'],
      [[1, 4608, 12288, 3072], 'gate+residual'],
      [[1, 512, 4096, 10240], 'none'],
      // sm90 splits the last round's tiles along K here (132 SMs): within a tile, across two, K blocks odd (17)
      [[1, 512, 6144, 3072], 'gate+residual'],
      [[1, 512, 12288, 3072], 'gate+residual'],
      [[1, 300, 1088, 9216], 'gelu'],
      [[1, 4095, 128, 200], 'gelu'],
      [[1, 4096, 128, 200], 'gelu'],
      [[1, 1535, 128, 200], 'gate+residual'],
      [[1, 1536, 128, 200], 'gate+residual'],
      [[2, 2053, 256, 136], 'gate+residual'],
      [[1, 4100, 64, 8], 'none'],
    ];
    for (const [i, [[B, L, K, N], epi]] of cases.entries()) {
      for (const doubleQuant of [false, true]) {
        if (K * N > 1 << 24 && doubleQuant !== (i % 2 === 1)) continue; // Flux-size weights once: plain or double quant
        const dense = Tensor.randn([N, K], { seed: 400 + i, std: 0.02, device: 'cuda', dtype: 'bfloat16' });
        const qg = ops.nf4Quantize(dense, { doubleQuant });
        dense.dispose();
        const qc = qg.to('cpu') as NF4Tensor;
        const M = B * L;
        const fluxk = K % 64 === 0 && N % 8 === 0;
        const minRows = 4096; // src/cuda/launch.h kNf4DequantizeMinRows
        const expected = !fluxk ? ROUTE.nf4.portable : M <= 16 ? ROUTE.nf4.gemv : M >= minRows && epi !== 'none' ? dequantized() : big();
        linearCase(`linear nf4${doubleQuant ? ' dq' : ''}`, 'bfloat16', [B, L, K, N], epi, (d) => (d === 0 ? qc : qg), expected, 500 + 10 * i);
        qg.dispose();
        qc.dispose();
      }
    }
  });

  // x in two parts along K (Flux's single-block proj_out over [attention | MLP]): on sm_90 the ping-pong GEMM reads each
  // k-block from its part (an NF4 weight dequantized whole first, where linear would dequantize it: from 4096 rows
  // with gelu or gate), else the fused NF4 GEMM does (more than 16 rows); the result must be the bits of linear over
  // the concatenation. Full width, partial tiles, and the cases that concatenate instead: bf16 below 512 rows, NF4 at
  // 16 rows or fewer, a first part not a multiple of 64 wide.
  it('linear with x in two parts: bitwise linear of the concatenation (bf16 and nf4 weights)', (t) => {
    if (!gpuOrSkip(t)) return;
    const route = {
      bf16: 'linear bf16, x in two parts: fluxk sm90 (wgmma)',
      nf4: 'linear nf4, x in two parts: fluxk sm90 (wgmma)',
      nf4Dequantized: 'linear nf4, x in two parts: dequantized + fluxk sm90 (wgmma)',
    };
    // [B, L, K1, K2, N, epilogue, weight]
    const cases: [number, number, number, number, number, Epi, 'bf16' | 'nf4'][] = [
      [1, 4608, 3072, 12288, 3072, 'gate+residual', 'bf16'],
      [1, 4608, 3072, 12288, 3072, 'gate+residual', 'nf4'],
      [1, 1536, 3072, 12288, 3072, 'gate+residual', 'nf4'],
      [2, 300, 192, 320, 264, 'gate+residual', 'bf16'],
      [1, 777, 64, 136, 72, 'none', 'bf16'],
      [1, 700, 64, 128, 200, 'gelu', 'bf16'],
      [1, 300, 128, 256, 128, 'gate+residual', 'bf16'],
      [1, 600, 96, 160, 128, 'none', 'bf16'],
      [1, 1000, 128, 256, 136, 'gate+residual', 'nf4'],
      [2, 300, 192, 320, 264, 'gelu', 'nf4'],
      [1, 20, 64, 64, 136, 'none', 'nf4'],
      [1, 16, 64, 64, 136, 'none', 'nf4'],
      [1, 700, 96, 160, 128, 'none', 'nf4'],
    ];
    for (const [i, [B, L, K1, K2, N, epi, kind]] of cases.entries()) {
      tidy(() => {
        const seed = 1500 + 10 * i;
        const parts = [K1, K2].map((k, j) => Tensor.randn([B, L, k], { seed: seed + j, dtype: 'bfloat16', device: 'cuda' }));
        const dense = Tensor.randn([N, K1 + K2], { seed: seed + 2, std: 1 / Math.sqrt(K1 + K2), dtype: 'bfloat16', device: 'cuda' });
        const weight = kind === 'bf16' ? dense : ops.nf4Quantize(dense, { doubleQuant: i % 2 === 0 });
        const bias = Tensor.randn([N], { seed: seed + 3, std: 0.1, dtype: 'bfloat16', device: 'cuda' });
        const opts = {
          activation: epi.includes('gelu') ? ('gelu_tanh' as const) : undefined,
          gate: epi.includes('gate') ? Tensor.randn([B, 1, N], { seed: seed + 4, dtype: 'bfloat16', device: 'cuda' }) : undefined,
          residual: epi.includes('residual') ? Tensor.randn([B, L, N], { seed: seed + 5, dtype: 'bfloat16', device: 'cuda' }) : undefined,
        };
        const M = B * L;
        const dequantized = kind === 'nf4' && epi !== 'none' && M >= 4096;
        const key = kind === 'bf16' ? route.bf16 : dequantized ? route.nf4Dequantized : route.nf4;
        const inPlace = onHopper() && K1 % 64 === 0 && (kind === 'bf16' || dequantized ? M >= 512 : M > 16);
        const counts = () => Object.values(route).map((r) => cuda.routeCounts()[r] ?? 0);
        const before = counts();
        const got = ops.linear(parts, weight, bias, opts);
        const taken = counts().map((n, j) => n - before[j]);
        const what = `linear ${kind} x parts [${B},${L},${K1}] + [${B},${L},${K2}] x [${N},${K1 + K2}] ${epi}`;
        const expected = Object.values(route).map((r) => (inPlace && r === key ? 1 : 0));
        assert.deepEqual(taken, expected, `${what}: two-part routes ${JSON.stringify(Object.values(route))} ran ${taken}, expected ${expected}`);
        check(`${what} = linear of the concatenation`, 'bfloat16', ops.linear(ops.concat(parts, 2), weight, bias, opts), got, 0, inPlace ? key : undefined);
      });
    }
  });

  // Linears of one x side by side (Flux's 77 adaptive-norm projections of silu(temb), one skinny launch per 32 NF4
  // weights): the bits of the separate linears, concatenated. Full-size rows, more parts than one launch takes,
  // K % 128 = 64 (the half chunk), 16 rows, double quant and missing biases mixed; 17 rows and a dense weight among
  // the NF4 ones go layer by layer.
  it('linearConcat: the linears side by side, bitwise the separate linears (skinny NF4 launches)', (t) => {
    if (!gpuOrSkip(t)) return;
    const route = 'linear nf4 side by side: fluxk gemv (M<=16)';
    // [B, L, K, output widths, a dense weight among them]
    const cases: [number, number, number, number[], boolean][] = [
      [1, 1, 3072, [18432, 18432, 9216, 6144], false],
      [1, 3, 128, Array.from({ length: 40 }, (_, i) => 8 + 8 * (i % 9)), false],
      [2, 8, 192, [136, 8, 264, 3080, 16], false],
      [1, 17, 128, [96, 136], false],
      [1, 2, 128, [96, 136, 64], true],
    ];
    for (const [i, [B, L, K, widths, withDense]] of cases.entries()) {
      tidy(() => {
        const seed = 1800 + 100 * i;
        const x = Tensor.randn([B, L, K], { seed, dtype: 'bfloat16', device: 'cuda' });
        const layers = widths.map((N, j) => {
          const dense = Tensor.randn([N, K], { seed: seed + 1 + j, std: 1 / Math.sqrt(K), dtype: 'bfloat16', device: 'cuda' });
          const weight = withDense && j === 1 ? dense : ops.nf4Quantize(dense, { doubleQuant: (i + j) % 3 === 0 });
          const bias = j % 4 === 3 ? undefined : Tensor.randn([N], { seed: seed + 50 + j, std: 0.1, dtype: 'bfloat16', device: 'cuda' });
          return { weight, bias };
        });
        const skinny = B * L <= 16 && !withDense;
        const before = cuda.routeCounts()[route] ?? 0;
        const got = ops.linearConcat(x, layers);
        const taken = (cuda.routeCounts()[route] ?? 0) - before;
        const what = `linearConcat x [${B},${L},${K}], ${widths.length} ${withDense ? 'nf4 + dense' : 'nf4'} weights [${widths.reduce((a, b) => a + b, 0)},${K}]`;
        assert.equal(taken, skinny ? 1 : 0, `${what}: the side-by-side route ran ${taken} times`);
        const separate = ops.concat(layers.map(({ weight, bias }) => ops.linear(x, weight, bias)), -1);
        check(`${what} = the separate linears`, 'bfloat16', separate, got, 0, skinny ? route : undefined);
      });
    }
  });

  // Independent linears in one launch (Flux's double blocks: the image and text streams' proj, MLP up and MLP down
  // through their own NF4 weights): the values of the separate linears up to the float32 order of the pair's split
  // last round, the same bits on every run. Full-size pairs, partial tiles, double quant, M = 17 and 16 rows (the
  // latter too few: one by one), a pair whose first product would be dequantized first (one by one), unequal N.
  it('linearGroup: two NF4 linears in one launch (sm90 pair), the values of the separate linears', (t) => {
    if (!gpuOrSkip(t)) return;
    const route = 'linear nf4, two products in one launch: fluxk sm90 (wgmma)';
    // [rows of each, K, N of each, epilogue]
    const cases: [[number, number], number, [number, number], Epi][] = [
      [[1024, 512], 3072, [3072, 3072], 'gate+residual'],
      [[1024, 512], 3072, [12288, 12288], 'gelu'],
      [[1024, 512], 12288, [3072, 3072], 'gate+residual'],
      [[300, 77], 256, [264, 264], 'gelu'],
      [[33, 700], 192, [136, 136], 'gate+residual'],
      [[17, 17], 64, [8, 8], 'none'],
      [[16, 600], 128, [136, 136], 'none'],
      [[4096, 512], 128, [136, 136], 'gelu'],
      [[600, 300], 128, [136, 264], 'none'],
    ];
    for (const [i, [rows, K, widths, epi]] of cases.entries()) {
      tidy(() => {
        const seed = 2100 + 20 * i;
        const items = rows.map((L, j) => {
          const N = widths[j];
          const dense = Tensor.randn([N, K], { seed: seed + j, std: 1 / Math.sqrt(K), dtype: 'bfloat16', device: 'cuda' });
          return {
            x: Tensor.randn([1, L, K], { seed: seed + 2 + j, dtype: 'bfloat16', device: 'cuda' }),
            weight: ops.nf4Quantize(dense, { doubleQuant: (i + j) % 2 === 1 }),
            bias: Tensor.randn([N], { seed: seed + 4 + j, std: 0.1, dtype: 'bfloat16', device: 'cuda' }),
            activation: epi.includes('gelu') ? ('gelu_tanh' as const) : undefined,
            gate: epi.includes('gate') ? Tensor.randn([1, 1, N], { seed: seed + 6 + j, dtype: 'bfloat16', device: 'cuda' }) : undefined,
            residual: epi.includes('residual') ? Tensor.randn([1, L, N], { seed: seed + 8 + j, dtype: 'bfloat16', device: 'cuda' }) : undefined,
          };
        });
        const dequantizedFirst = rows.some((L) => L >= 4096) && epi !== 'none';
        const paired = onHopper() && rows.every((L) => L > 16) && widths[0] === widths[1] && !dequantizedFirst;
        const before = cuda.routeCounts()[route] ?? 0;
        const got = ops.linearGroup(items);
        const again = ops.linearGroup(items);
        const taken = (cuda.routeCounts()[route] ?? 0) - before;
        const what = `linearGroup nf4 [${rows}]x${K} -> [${widths}] ${epi}`;
        assert.equal(taken, paired ? 2 : 0, `${what}: the pair route ran ${taken} times in two calls`);
        items.forEach((it, j) => {
          const separate = ops.linear(it.x, it.weight, it.bias, it);
          check(`${what} #${j}: the same bits every run`, 'bfloat16', again[j], got[j], 0, paired ? route : undefined);
          if (paired) sameUpToSplitOrder(`${what} #${j} = the separate linear`, separate, got[j], route);
          else check(`${what} #${j} = the separate linear`, 'bfloat16', separate, got[j], 0);
        });
      });
    }
  });

  // A float32 layer stored as bf16 (T5's wo under bitsandbytes, FLUX.1-dev's checkpoint): float32 x splits exactly into
  // three bf16 parts, so the tensor cores compute the float32 product; the float32 limits apply, and at T5's size
  // the error must not exceed twice (in rms) that of the float32 SIMT kernel on the same values.
  it('linear float32 x with a bfloat16 weight: the exact 3×bf16 split GEMM', (t) => {
    if (!gpuOrSkip(t)) return;
    const split = () => (onHopper() ? ROUTE.f32Split.sm90 : ROUTE.f32Split.sm80);
    const cases: [number[], Epi, boolean][] = [];
    for (const M of [1, 7, 33]) for (const [K, N] of [[8, 8], [72, 24], [8, 24], [72, 8]]) cases.push([[1, M, K, N], 'none', true]);
    cases.push([[3, 111, 256, 136], 'none', true], [[2, 3, 64, 64], 'none', true]);
    // not taken: K or N not a multiple of 8, or an epilogue beyond the bias
    cases.push([[1, 5, 77, 64], 'none', false], [[1, 5, 64, 77], 'none', false], [[1, 7, 64, 64], 'gelu', false], [[1, 7, 64, 64], 'residual', false]);
    for (const [i, [[B, L, K, N], epi, taken]] of cases.entries()) {
      tidy(() => {
        const w = bigPair([N, K], 700 + i, 'bfloat16', 1 / Math.sqrt(K));
        const x = bigPair([B, L, K], 720 + i, 'float32', 2);
        const b = bigPair([N], 740 + i, 'float32', 0.1);
        const r = bigPair([B, L, N], 760 + i, 'float32');
        const opts = (d: 0 | 1) => ({ activation: epi === 'gelu' ? ('gelu_tanh' as const) : undefined, residual: epi === 'residual' ? r[d] : undefined });
        routedBoth(`linear f32 x bf16 w [${B},${L},${K}]x[${N},${K}] ${epi} + bias`, 'float32', taken ? split() : ROUTE.linear.portable, [x, w, b], (a, ww, bb) =>
          ops.linear(a, ww, bb, opts(a.device === 'cpu' ? 0 : 1)),
        );
        if (taken && i % 4 === 0) routedBoth(`linear f32 x bf16 w [${B},${L},${K}]x[${N},${K}] no bias`, 'float32', split(), [x, w], (a, ww) => ops.linear(a, ww));
      });
    }
    tidy(() => {
      // magnitudes across float32's range: huge (no overflow in the split), tiny, subnormal, exact tails
      const K = 64;
      // one huge pair per row (|sum| < 2.6e38: no order-dependent overflow), the rest spread over the range
      const spread = [1e36, 1e-30, 3e-39, 1.0000001, 1 / 3, 2 ** -20, -7.123456789];
      const values = Array.from({ length: 3 * K }, (_, j) => (j % K === 0 ? 1.5e38 : j % K === 1 ? -1e38 : spread[j % 7] * (j < K ? 1 : -0.5)));
      const xc = Tensor.fromArray(values, [3, K]);
      const wc = Tensor.fromArray(Array.from({ length: 8 * K }, (_, j) => [0.5, 0.25, 1, -1, 0.375][j % 5] * 2 ** -(j % 7)), [8, K], { dtype: 'bfloat16' });
      routedBoth('linear f32 x bf16 w, magnitudes 1e-39..3e38', 'float32', split(), [[xc, xc.to('cuda')], [wc, wc.to('cuda')]], (a, ww) => ops.linear(a, ww));
    });
    tidy(() => {
      // T5-XXL's wo at 512 tokens: [512, 10240] x [4096, 10240] (+ bias, which T5 has not)
      const [M, K, N] = [512, 10240, 4096];
      const x = bigPair([1, M, K], 780, 'float32');
      const w = bigPair([N, K], 781, 'bfloat16', 1 / Math.sqrt(K));
      const b = bigPair([N], 782, 'float32', 0.1);
      const cpu = ops.linear(x[0], w[0], b[0]);
      const { out, route } = routed(split(), 'linear f32 x bf16 w T5 wo', () => ops.linear(x[1], w[1], b[1]));
      check(`linear f32 x bf16 w T5 wo [1,${M},${K}]x[${N},${K}] + bias`, 'float32', cpu, out, undefined, route);
      const wf = w[1].to({ dtype: 'float32' });
      const { out: simt, route: simtRoute } = routed(ROUTE.linear.portable, 'linear f32 x f32 w T5 wo', () => ops.linear(x[1], wf, b[1]));
      check(`linear f32 x f32 w T5 wo [1,${M},${K}]x[${N},${K}] + bias (reference)`, 'float32', cpu, simt, undefined, simtRoute);
      const errSplit = nmse(out.toArray() as Float32Array, cpu.toArray() as Float32Array);
      const errSimt = nmse(simt.toArray() as Float32Array, cpu.toArray() as Float32Array);
      console.log(`backend-ops: T5 wo float32 vs CPU: 3xbf16 split NMSE ${errSplit.toExponential(2)}, float32 SIMT NMSE ${errSimt.toExponential(2)}`);
      assert.ok(errSplit <= Math.max(4 * errSimt, 1e-13), `split GEMM error ${errSplit} exceeds 4x the float32 kernel's ${errSimt}`);
    });
  });

  it('NF4Tensor.concatRows (fused QKV) on the GPU computes what the CPU computes', (t) => {
    if (!gpuOrSkip(t)) return;
    tidy(() => {
      const parts = [0, 1, 2].map((i) => ops.nf4Quantize(Tensor.randn([3072, 3072], { seed: 600 + i, std: 0.02, device: 'cuda' }), { doubleQuant: i === 1 }));
      const fused = NF4Tensor.concatRows(parts);
      const fusedCpu = fused.to('cpu') as NF4Tensor;
      check('nf4 absmax decode (double quant)', 'float32', ops.nf4Dequantize(parts[1].to('cpu') as NF4Tensor), ops.nf4Dequantize(parts[1]), 0);
      const x = bigPair([1, 333, 3072], 610, 'bfloat16');
      routedBoth('linear nf4 concatRows [333,3072]x[9216,3072]', 'bfloat16', onHopper() ? ROUTE.nf4.sm90 : ROUTE.nf4.sm80, [x], (a) =>
        ops.linear(a, a.device === 'cpu' ? fusedCpu : fused),
      );
    });
  });
});

describe('backend-ops: attention in [B,L,H,D] and the fluxk kernels', () => {
  for (const dtype of FLOATS) {
    it(`sdpa layout BLHD ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      // [B, Lq, Lk, H, D]
      const cases: number[][] = [
        [1, 1, 1, 1, 128],
        [2, 77, 333, 3, 128],
        [1, 200, 200, 4, 64],
        [2, 13, 29, 2, 40],
        // on 132 SMs the last round of these runs split over the key blocks (attention.cu): 288 and 144 units
        [1, 1536, 1536, 24, 128],
        [2, 1000, 777, 9, 128],
      ];
      for (const [i, [B, Lq, Lk, H, D]] of cases.entries()) {
        tidy(() => {
          const q = bigPair([B, Lq, H, D], 700 + i, dtype);
          const k = bigPair([B, Lk, H, D], 710 + i, dtype);
          const v = bigPair([B, Lk, H, D], 720 + i, dtype);
          const fluxk = dtype === 'bfloat16' && D === 128;
          const expected = fluxk ? (onHopper() ? ROUTE.sdpa.sm90 : ROUTE.sdpa.sm80) : OTHER_SDPA;
          routedBoth(`sdpa BLHD B${B} Lq${Lq} Lk${Lk} H${H} D${D}`, dtype, expected, [q, k, v], (a, b, c) => ops.sdpa(a, b, c, { layout: 'BLHD' }));
          if (i === 1) {
            // a mask keeps the head-dim-128 fluxk kernel out (it has none); strided [B,L,H,D] reads elsewhere too
            const pad = Tensor.fromArray(Array.from({ length: B * Lk }, (_, j) => (j % Lk < 300 ? 1 : 0)), [B, Lk], { dtype: 'uint8' });
            routedBoth(`sdpa BLHD + key padding B${B} Lq${Lq} Lk${Lk}`, dtype, OTHER_SDPA, [q, k, v, [pad, pad.to('cuda')]], (a, b, c, m) =>
              ops.sdpa(a, b, c, { layout: 'BLHD', mask: m }),
            );
          }
        });
      }
    });
  }

  it('sdpa bfloat16 at the Flux size (1024²: 24 heads x 4608 tokens x 128), both layouts', (t) => {
    if (!gpuOrSkip(t)) return;
    const expected = onHopper() ? ROUTE.sdpa.sm90 : ROUTE.sdpa.sm80;
    tidy(() => {
      const q = bigPair([1, 4608, 24, 128], 800, 'bfloat16');
      const k = bigPair([1, 4608, 24, 128], 801, 'bfloat16');
      const v = bigPair([1, 4608, 24, 128], 802, 'bfloat16');
      routedBoth('sdpa BLHD Flux 1024²', 'bfloat16', expected, [q, k, v], (a, b, c) => ops.sdpa(a, b, c, { layout: 'BLHD' }));
    });
    tidy(() => {
      const q = bigPair([1, 24, 4608, 128], 803, 'bfloat16');
      const k = bigPair([1, 24, 4608, 128], 804, 'bfloat16');
      const v = bigPair([1, 24, 4608, 128], 805, 'bfloat16');
      routedBoth('sdpa BHLD Flux 1024²', 'bfloat16', expected, [q, k, v], (a, b, c) => ops.sdpa(a, b, c));
    });
  });
});

describe('backend-ops: fused norms, timestep embedding, device randn', () => {
  for (const dtype of FLOATS) {
    it(`layerNormModulate ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      // [B, L, C] with per-batch, [B,D] and shared parameters. 16-byte pieces where C % (16 bytes of the dtype) == 0,
      // single values otherwise; rows of ≤ 16 pieces share a warp (64: 8 lanes a row in 16-bit, 74 rows), a row of up
      // to 4096 values stays in registers (1000: lanes with fewer pieces; 3072 and 4096 fill them; 999: 32 single
      // values a lane), longer rows re-read (5000, 4100: 16-byte pieces in float32, single values in 16-bit), as do
      // single-value rows beyond 1024 (3071)
      const cases: [number[], 'B1D' | 'BD' | 'D'][] = [
        [[2, 333, 1], 'B1D'],
        [[2, 5, 3], 'BD'],
        [[2, 37, 64], 'B1D'],
        [[3, 77, 77], 'B1D'],
        [[3, 50, 200], 'BD'],
        [[2, 3, 1000], 'D'],
        [[2, 4, 999], 'B1D'],
        [[2, 33, 3072], 'BD'],
        [[2, 9, 3071], 'B1D'],
        [[1, 9, 4096], 'D'],
        [[2, 5, 4100], 'BD'],
        [[2, 7, 5000], 'B1D'],
        [[1, 4608, 3072], 'B1D'],
      ];
      for (const [i, [[B, L, C], kind]] of cases.entries()) {
        tidy(() => {
          const pshape = kind === 'B1D' ? [B, 1, C] : kind === 'BD' ? [B, C] : [C];
          const x = bigPair([B, L, C], 900 + i, dtype, 3);
          const sh = bigPair(pshape, 910 + i, dtype);
          const sc = bigPair(pshape, 920 + i, dtype, 0.5);
          both(`layerNormModulate [${B},${L},${C}] shift/scale ${kind}`, dtype, [x, sh, sc], (a, b, c) => ops.layerNormModulate(a, b, c, 1e-6));
        });
      }
      // x as a view one value into its storage (not 16-byte aligned): the single-value path at Flux's width
      tidy(() => {
        const [B, L, C] = [2, 6, 3072];
        const n = B * L * C;
        const x = bigPair([n + 1], 950, dtype, 3);
        const sh = bigPair([B, 1, C], 951, dtype);
        const sc = bigPair([B, 1, C], 952, dtype, 0.5);
        both(`layerNormModulate [${B},${L},${C}] x at offset 1`, dtype, [x, sh, sc], (a, b, c) =>
          ops.layerNormModulate(ops.slice(a, 0, 1, n + 1).reshape([B, L, C]), b, c, 1e-6),
        );
      });
    });

    it(`qkNormRope ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: number[][] = [
        [1, 3, 2, 2],
        [2, 77, 3, 64],
        [1, 5, 1, 200],
        [1, 5, 2, 256],
        [1, 3, 1, 512],
        [1, 4608, 24, 128],
      ];
      for (const [i, [B, L, H, D]] of cases.entries()) {
        tidy(() => {
          const x = bigPair([B, L, H, D], 1000 + i, dtype, 2);
          const w = bigPair([D], 1010 + i, dtype);
          const ang = Tensor.randn([L, D / 2], { seed: 1020 + i });
          const a = ang.toArray() as Float32Array;
          const cosv = new Float32Array(L * D);
          const sinv = new Float32Array(L * D);
          for (let j = 0; j < a.length; j++) {
            cosv[2 * j] = cosv[2 * j + 1] = Math.cos(a[j]);
            sinv[2 * j] = sinv[2 * j + 1] = Math.sin(a[j]);
          }
          const tableDtype: DType = i % 2 === 0 ? 'float32' : dtype;
          const c = Tensor.fromArray(cosv, [L, D], { dtype: tableDtype });
          const s = Tensor.fromArray(sinv, [L, D], { dtype: tableDtype });
          both(`qkNormRope [${B},${L},${H},${D}] tables ${tableDtype}`, dtype, [x, w, [c, c.to('cuda')], [s, s.to('cuda')]], (xx, ww, cc, ss) =>
            ops.qkNormRope(xx, ww, cc, ss, 1e-6),
          );
        });
      }
    });

    // Fused QKV projections of each token stream → joint q, k, v [B, ΣL, H, D]: q/k against the CPU op within the
    // dtype's limits, v exactly; and on the GPU bitwise equal to qkNormRope of the split projections + concat (the
    // composition it replaces). Flux's double block (512 + 4096 tokens) and single block (4608), odd head dims and
    // counts, a stream of one token, and more streams than one launch takes (4).
    it(`jointQkv ${dtype}`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number, number[], number, number][] = [
        [1, [512, 4096], 24, 128],
        [1, [4608], 24, 128],
        [2, [7, 1], 3, 64],
        [1, [1], 1, 16],
        [2, [7, 3], 3, 32],
        [2, [7, 3, 1, 5, 2], 1, 32],
        [1, [5], 3, 6],
        [2, [3, 4], 2, 200],
        [1, [2], 2, 512],
      ];
      for (const [i, [B, lengths, H, D]] of cases.entries()) {
        tidy(() => {
          const total = lengths.reduce((a, b) => a + b, 0);
          const tableDtype: DType = i % 2 === 0 ? 'float32' : dtype;
          const ang = Tensor.randn([total, D / 2], { seed: 1120 + i }).toArray() as Float32Array;
          const cosv = new Float32Array(total * D);
          const sinv = new Float32Array(total * D);
          for (let j = 0; j < ang.length; j++) {
            cosv[2 * j] = cosv[2 * j + 1] = Math.cos(ang[j]);
            sinv[2 * j] = sinv[2 * j + 1] = Math.sin(ang[j]);
          }
          const cos = Tensor.fromArray(cosv, [total, D], { dtype: tableDtype });
          const sin = Tensor.fromArray(sinv, [total, D], { dtype: tableDtype });
          let row = 0;
          const streams = lengths.map((L, s) => {
            const rows = (dev: 0 | 1) => {
              const [c, g] = [cos, sin].map((table) => ops.slice(dev === 0 ? table : table.to('cuda'), 0, row, row + L));
              return { cos: c, sin: g };
            };
            const stream = { qkv: bigPair([B, L, 3 * H * D], 1100 + 10 * i + s, dtype, 2), normQ: bigPair([D], 1150 + 10 * i + s, dtype), normK: bigPair([D], 1200 + 10 * i + s, dtype), tables: [rows(0), rows(1)] };
            row += L;
            return stream;
          });
          const on = (dev: 0 | 1) =>
            ops.jointQkv(
              streams.map((s) => ({ qkv: s.qkv[dev], normQ: s.normQ[dev], normK: s.normK[dev], ...s.tables[dev] })),
              H,
              1e-6,
            );
          const cpu = on(0);
          const gpu = on(1);
          const what = `jointQkv B ${B} L [${lengths}] H ${H} D ${D} tables ${tableDtype}`;
          check(`${what} q`, dtype, cpu.q, gpu.q);
          check(`${what} k`, dtype, cpu.k, gpu.k);
          check(`${what} v`, dtype, cpu.v, gpu.v, 0);
          const parts = streams.map((s) => {
            const L = s.qkv[1].shape[1];
            const [q, k, v] = ops.split(s.qkv[1], H * D, 2).map((p) => p.reshape([B, L, H, D]));
            const { cos: c, sin: g } = s.tables[1];
            return { q: ops.qkNormRope(q, s.normQ[1], c, g, 1e-6), k: ops.qkNormRope(k, s.normK[1], c, g, 1e-6), v };
          });
          for (const name of ['q', 'k', 'v'] as const) {
            check(`${what} ${name} = qkNormRope + concat (GPU)`, dtype, ops.concat(parts.map((p) => p[name]), 1), gpu[name], 0);
          }
        });
      }
    });
  }

  // jointQkv from the projections' inputs: on sm_90 (bf16, D = 128) the GEMM epilogue writes q, k and v itself
  // (fluxk's kQkNormRope); the result must be the bits of ops.linear + ops.jointQkv on the GPU (two NF4 streams run
  // as one pair launch: the same up to the float32 order of its split last round), and match the CPU.
  // Flux's double block (512 + 4096 tokens) and single block (4608) at full width, partial tiles, a batch of two,
  // streams below the ping-pong GEMM's 512 rows or at the NF4 GEMV's ≤ 16 (those take the unfused way), D = 64.
  it('jointQkv from projections: the fused GEMM epilogue (bf16, nf4, nf4 double quant)', (t) => {
    if (!gpuOrSkip(t)) return;
    const fusedRoute = {
      bf16: 'linear bf16 + jointQkv: fluxk sm90 (wgmma, fused epilogue)',
      nf4: 'linear nf4 + jointQkv: fluxk sm90 (wgmma, fused epilogue)',
      nf4Pair: 'linear nf4 + jointQkv, two streams in one launch: fluxk sm90 (wgmma, fused epilogue)',
    };
    // [B, token counts, H, D, K, compare with the CPU]
    const cases: [number, number[], number, number, number, boolean][] = [
      [1, [512, 4096], 24, 128, 3072, false],
      [1, [4608], 24, 128, 3072, false],
      [2, [300, 77], 3, 128, 256, true],
      [1, [1000], 2, 128, 192, true],
      [1, [9, 700], 2, 128, 128, true],
      [1, [600], 2, 64, 128, true],
    ];
    for (const [i, [B, lengths, H, D, K, withCpu]] of cases.entries()) {
      for (const kind of ['bf16', 'nf4', 'nf4 dq'] as const) {
        tidy(() => {
          const total = lengths.reduce((a, b) => a + b, 0);
          const ang = Tensor.randn([total, D / 2], { seed: 1320 + i }).toArray() as Float32Array;
          const cosv = new Float32Array(total * D);
          const sinv = new Float32Array(total * D);
          for (let j = 0; j < ang.length; j++) {
            cosv[2 * j] = cosv[2 * j + 1] = Math.cos(ang[j]);
            sinv[2 * j] = sinv[2 * j + 1] = Math.sin(ang[j]);
          }
          const tables = [Tensor.fromArray(cosv, [total, D]), Tensor.fromArray(sinv, [total, D])];
          const gpuTables = tables.map((table) => table.to('cuda'));
          let row = 0;
          const streams = lengths.map((L, s) => {
            const seed = 1300 + 10 * i + s;
            const dense = Tensor.randn([3 * H * D, K], { seed: seed + 1, std: 1 / Math.sqrt(K), dtype: 'bfloat16', device: 'cuda' });
            const gpuWeight = kind === 'bf16' ? dense : ops.nf4Quantize(dense, { doubleQuant: kind === 'nf4 dq' });
            const rows = (dev: 0 | 1) => {
              const [cos, sin] = (dev === 0 ? tables : gpuTables).map((table) => ops.slice(table, 0, row, row + L));
              return { cos, sin };
            };
            const stream = {
              L,
              x: bigPair([B, L, K], seed, 'bfloat16'),
              weight: [withCpu ? gpuWeight.to('cpu') : gpuWeight, gpuWeight],
              bias: bigPair([3 * H * D], seed + 2, 'bfloat16', 0.1),
              normQ: bigPair([D], seed + 3, 'bfloat16'),
              normK: bigPair([D], seed + 4, 'bfloat16'),
              tables: [rows(0), rows(1)],
            };
            row += L;
            return stream;
          });
          const projected = (dev: 0 | 1) =>
            ops.jointQkv(
              streams.map((s) => ({ x: s.x[dev], weight: s.weight[dev], bias: s.bias[dev], normQ: s.normQ[dev], normK: s.normK[dev], ...s.tables[dev] })),
              H,
              1e-6,
            );
          const key = kind === 'bf16' ? fusedRoute.bf16 : fusedRoute.nf4;
          const keys = [key, fusedRoute.nf4Pair];
          const counts = () => keys.map((k) => cuda.routeCounts()[k] ?? 0);
          const before = counts();
          const gpu = projected(1);
          const [fusedStreams, pairs] = counts().map((n, j) => n - before[j]);
          const eligible = streams.filter((s) => onHopper() && D === 128 && (kind === 'bf16' ? B * s.L >= 512 : B * s.L > 16)).length;
          // Two NF4 streams that would each take the fused way run as one pair launch.
          const paired = kind !== 'bf16' && streams.length === 2 && eligible === 2;
          const what = `jointQkv from projections (${kind}) B ${B} L [${lengths}] H ${H} D ${D} K ${K}`;
          assert.deepEqual([fusedStreams, pairs], paired ? [0, 1] : [eligible, 0], `${what}: routes ${JSON.stringify(keys)} ran ${fusedStreams}, ${pairs}`);
          const unfused = ops.jointQkv(
            streams.map((s) => ({ qkv: ops.linear(s.x[1], s.weight[1], s.bias[1]), normQ: s.normQ[1], normK: s.normK[1], ...s.tables[1] })),
            H,
            1e-6,
          );
          for (const name of ['q', 'k', 'v'] as const) {
            if (paired) {
              // The pair's split last round sums in another float32 order: the same values up to bf16 rounding there.
              sameUpToSplitOrder(`${what} ${name} = linear + jointQkv (GPU)`, unfused[name], gpu[name], fusedRoute.nf4Pair);
            } else {
              check(`${what} ${name} = linear + jointQkv (GPU)`, 'bfloat16', unfused[name], gpu[name], 0, eligible > 0 ? key : undefined);
            }
          }
          if (withCpu) {
            const cpu = projected(0);
            for (const name of ['q', 'k', 'v'] as const) check(`${what} ${name}`, 'bfloat16', cpu[name], gpu[name]);
          }
        });
      }
    }
  });

  // A single block's QKV projection (jointQkv, one stream) and MLP up (GELU) of the same x in one launch (two NF4
  // weights on sm_90): q, k, v and the MLP output equal the separate ops up to the float32 order of the pair's split
  // last round, and match the CPU. Full width, partial tiles and double quant; a bf16 MLP weight goes alone.
  it('jointQkv with a linear alongside: QKV and MLP up of one x in one launch', (t) => {
    if (!gpuOrSkip(t)) return;
    const route = 'linear nf4 + jointQkv and a linear of the same x in one launch: fluxk sm90 (wgmma, fused epilogues)';
    // [B, L, H, K, MLP width, MLP weight, compare with the CPU]
    const cases: [number, number, number, number, number, 'nf4' | 'nf4 dq' | 'bf16', boolean][] = [
      [1, 1536, 24, 3072, 12288, 'nf4', false],
      [2, 300, 3, 256, 264, 'nf4 dq', true],
      [1, 700, 2, 128, 136, 'bf16', true],
    ];
    for (const [i, [B, L, H, K, N, kind, withCpu]] of cases.entries()) {
      tidy(() => {
        const D = 128;
        const seed = 2300 + 20 * i;
        const ang = Tensor.randn([L, D / 2], { seed }).toArray() as Float32Array;
        const cosv = new Float32Array(L * D);
        const sinv = new Float32Array(L * D);
        for (let j = 0; j < ang.length; j++) {
          cosv[2 * j] = cosv[2 * j + 1] = Math.cos(ang[j]);
          sinv[2 * j] = sinv[2 * j + 1] = Math.sin(ang[j]);
        }
        const cos: [Tensor, Tensor] = [Tensor.fromArray(cosv, [L, D]), Tensor.fromArray(cosv, [L, D]).to('cuda')];
        const sin: [Tensor, Tensor] = [Tensor.fromArray(sinv, [L, D]), Tensor.fromArray(sinv, [L, D]).to('cuda')];
        const qkvDense = Tensor.randn([3 * H * D, K], { seed: seed + 1, std: 1 / Math.sqrt(K), dtype: 'bfloat16', device: 'cuda' });
        const qkvWeight = ops.nf4Quantize(qkvDense, { doubleQuant: i % 2 === 1 });
        const mlpDense = Tensor.randn([N, K], { seed: seed + 2, std: 1 / Math.sqrt(K), dtype: 'bfloat16', device: 'cuda' });
        const mlpWeight = kind === 'bf16' ? mlpDense : ops.nf4Quantize(mlpDense, { doubleQuant: kind === 'nf4 dq' });
        const x = bigPair([B, L, K], seed + 3, 'bfloat16');
        const bias = bigPair([3 * H * D], seed + 4, 'bfloat16', 0.1);
        const mlpBias = bigPair([N], seed + 5, 'bfloat16', 0.1);
        const normQ = bigPair([D], seed + 6, 'bfloat16');
        const normK = bigPair([D], seed + 7, 'bfloat16');
        const run = (d: 0 | 1) => {
          const onDevice = (w: Tensor) => (d === 1 ? w : w.to('cpu'));
          return ops.jointQkv([{ x: x[d], weight: onDevice(qkvWeight), bias: bias[d], normQ: normQ[d], normK: normK[d], cos: cos[d], sin: sin[d] }], H, 1e-6, {
            alongside: { weight: onDevice(mlpWeight), bias: mlpBias[d], activation: 'gelu_tanh' },
          });
        };
        const before = cuda.routeCounts()[route] ?? 0;
        const gpu = run(1);
        const taken = (cuda.routeCounts()[route] ?? 0) - before;
        const paired = onHopper() && kind !== 'bf16';
        const what = `jointQkv B ${B} L ${L} H ${H} K ${K} with a ${kind} linear of width ${N}`;
        assert.equal(taken, paired ? 1 : 0, `${what}: the shared launch ran ${taken} times`);
        const alone = ops.jointQkv([{ x: x[1], weight: qkvWeight, bias: bias[1], normQ: normQ[1], normK: normK[1], cos: cos[1], sin: sin[1] }], H, 1e-6);
        const mlpAlone = ops.linear(x[1], mlpWeight, mlpBias[1], { activation: 'gelu_tanh' });
        for (const name of ['q', 'k', 'v'] as const) {
          if (paired) sameUpToSplitOrder(`${what}: ${name} = jointQkv alone`, alone[name], gpu[name], route);
          else check(`${what}: ${name} = jointQkv alone`, 'bfloat16', alone[name], gpu[name], 0);
        }
        if (paired) sameUpToSplitOrder(`${what}: the linear = ops.linear`, mlpAlone, gpu.alongside!, route);
        else check(`${what}: the linear = ops.linear`, 'bfloat16', mlpAlone, gpu.alongside!, 0);
        if (withCpu) {
          const cpu = run(0);
          for (const name of ['q', 'k', 'v'] as const) check(`${what}: ${name}`, 'bfloat16', cpu[name], gpu[name]);
          check(`${what}: the linear`, 'bfloat16', cpu.alongside!, gpu.alongside!);
        }
      });
    }
  });

  it('timestepEmbedding', (t) => {
    if (!gpuOrSkip(t)) return;
    for (const [B, dim, flip, shift] of [
      [1, 256, true, 0],
      [3, 7, false, 1],
      [77, 256, true, 0],
      [2, 1, true, 0],
    ] as [number, number, boolean, number][]) {
      for (const tdtype of ['float32', 'bfloat16'] as DType[]) {
        tidy(() => {
          const tv = Array.from({ length: B }, (_, i) => (i * 997.3) % 1000);
          const tc = Tensor.fromArray(tv, [B], { dtype: tdtype });
          both(`timestepEmbedding B${B} dim ${dim} flip ${flip} shift ${shift} (t ${tdtype})`, 'float32', [[tc, tc.to('cuda')]], (x) =>
            ops.timestepEmbedding(x, dim, { flipSinToCos: flip, downscaleFreqShift: shift }),
          );
        });
      }
    }
  });

  it('Tensor.randn with a seed: the GPU draws what the CPU draws', (t) => {
    if (!gpuOrSkip(t)) return;
    for (const dtype of FLOATS) {
      for (const shape of [[1], [3], [77, 3], [4096, 3073]]) {
        tidy(() => {
          const c = Tensor.randn(shape, { seed: 1234, dtype, mean: 0.5, std: 2 });
          const g = Tensor.randn(shape, { seed: 1234, dtype, mean: 0.5, std: 2, device: 'cuda' });
          check(`randn seed [${shape}] mean 0.5 std 2`, dtype, c, g);
        });
      }
    }
  });
});

// The VAE decoder's and the text encoders' kernels (src/sm80/vae_t5.h) at their real sizes and awkward ones, each
// GPU call asserted to have run on its fluxk route.
describe('backend-ops: VAE and text-encoder kernels', () => {
  const CONV = 'conv2d: fluxk implicit GEMM (mma.sync)';
  const D64 = 'sdpa: fluxk head_dim 64 + bias/mask (mma.sync)';
  const WIDE = 'sdpa: fluxk wide head (GEMM + softmax)';
  const host = (t: Tensor): [Tensor, Tensor] => [t, t.to('cuda')];

  for (const dtype of ['bfloat16', 'float16'] as DType[]) {
    const full = dtype === 'bfloat16'; // the largest shapes once, in the decoder's own dtype

    it(`conv2d tensor cores ${dtype}: decoder shapes, odd channels, upsample fused`, (t) => {
      if (!gpuOrSkip(t)) return;
      // [x shape, w shape, stride, padding, upsample]
      const cases: [number[], number[], number, number, boolean][] = [
        [[1, 16, 64, 64], [512, 16, 3, 3], 1, 1, false], // conv_in (16 latent channels)
        [[1, 512, 32, 32], [512, 512, 3, 3], 1, 1, false], // mid block / up_blocks.0 resnet conv
        [[1, 512, 32, 32], [512, 512, 3, 3], 1, 1, true], // up_blocks.0 upsampler (nearest 2x fused)
        [[1, 512, 48, 40], [256, 512, 3, 3], 1, 1, false], // up_blocks.2 resnets.0 conv1
        [[1, 512, 40, 24], [256, 512, 1, 1], 1, 0, false], // conv_shortcut 512 -> 256
        [[1, 256, 32, 48], [256, 256, 3, 3], 1, 1, true], // up_blocks.2 upsampler
        [[1, 256, 64, 64], [128, 256, 3, 3], 1, 1, false], // up_blocks.3 resnets.0 conv1
        [[1, 128, 64, 64], [3, 128, 3, 3], 1, 1, false], // conv_out (3 channels: the narrow tile)
        [[2, 77, 13, 11], [77, 77, 3, 3], 1, 1, false], // odd channels, pixels not a multiple of the tile
        [[1, 3, 17, 19], [5, 3, 3, 3], 1, 1, false], // 3 input channels (padded to 8)
        [[2, 40, 15, 15], [24, 40, 3, 3], 2, 1, false], // stride 2
        [[1, 24, 7, 9], [36, 24, 3, 3], 1, 1, true], // upsample with odd sizes
        [[3, 8, 5, 5], [130, 8, 5, 5], 1, 2, false], // 5x5 kernel, cout past one 128 tile
      ];
      if (full) {
        cases.push([[1, 512, 128, 128], [512, 512, 3, 3], 1, 1, false]); // the mid block at 1024² (77 GFLOP)
        cases.push([[1, 8, 2100, 2052], [16, 8, 3, 3], 1, 1, false]); // 69 MB of input: two bands of output rows
      }
      for (const [xs, ws, stride, padding, up] of cases) {
        tidy(() => {
          const x = bigPair(xs, 11, dtype);
          const w = bigPair(ws, 12, dtype, 1 / Math.sqrt(ws[1] * ws[2] * ws[3]));
          const b = pair([ws[0]], 13, dtype);
          const upsample = up ? ('nearest2x' as const) : undefined;
          routedBoth(`conv2d x[${xs}] w[${ws}] s${stride} p${padding}${up ? ' up2x' : ''}`, dtype, CONV, [x, w, b], (a, ww, bb) =>
            ops.conv2d(a, ww, bb, { stride, padding, upsample }),
          );
        });
      }
      tidy(() => {
        // no bias, and an input that is a view at an odd element offset (the transpose's scalar loads)
        const n = 2 * 24 * 9 * 11;
        const view = (v: Tensor): Tensor => ops.slice(v, 0, 1, n + 1).reshape([2, 24, 9, 11]);
        routedBoth('conv2d offset view, no bias', dtype, CONV, [pair([n + 1], 14, dtype), pair([40, 24, 3, 3], 15, dtype, 0.07)], (a, ww) =>
          ops.conv2d(view(a), ww, null, { padding: 1 }),
        );
      });
    });

    it(`groupNorm (+SiLU) ${dtype}: decoder sizes and odd groups`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number[], number, boolean][] = [
        [[1, 512, 128, 128], 32, true],
        [[1, 512, 128, 128], 32, false],
        [[1, 256, 64, 96], 32, true],
        [[2, 77, 9, 13], 7, true], // spatial not a multiple of the 16-byte vector
        [[1, 12, 1, 20001], 3, true], // several chunks per group, ragged tail
        [[3, 6, 1, 1], 2, true],
      ];
      if (full) cases.push([[1, 128, 512, 512], 32, true]); // 32M values: 64 chunks per group
      for (const [shape, groups, silu] of cases) {
        tidy(() => {
          const x = bigPair(shape, shape[1] + 5, dtype, 2);
          const w = pair([shape[1]], 21, 'float32');
          const b = pair([shape[1]], 22, 'float32');
          both(`groupNorm${silu ? '+silu' : ''} [${shape}] G=${groups}`, dtype, [x, w, b], (a, ww, bb) =>
            ops.groupNorm(a, groups, ww, bb, 1e-6, { silu }),
          );
        });
      }
    });

    it(`conv2d of its input's groupNorm (+SiLU) ${dtype}: the norm fused, bit for bit the two ops`, (t) => {
      if (!gpuOrSkip(t)) return;
      // [x shape, cout, kernel, groups, silu, upsample]
      const cases: [number[], number, number, number, boolean, boolean][] = [
        [[1, 512, 32, 32], 512, 3, 32, true, false], // a resnet's norm1 → SiLU → conv1
        [[1, 256, 64, 64], 128, 3, 32, true, false], // up_blocks.3 resnets.0 (256 → 128 channels)
        [[1, 128, 64, 64], 3, 3, 32, true, false], // conv_norm_out → SiLU → conv_out (the narrow tile)
        [[2, 77, 13, 11], 40, 3, 7, true, false], // odd channels and groups, batch 2
        [[1, 24, 7, 9], 36, 3, 6, false, true], // no SiLU, upsample
      ];
      if (full) cases.push([[1, 8, 2100, 2052], 16, 3, 4, true, false]); // two bands, each normalised on the way
      for (const [xs, cout, k, groups, silu, up] of cases) {
        tidy(() => {
          const label = `conv2d(groupNorm${silu ? '+silu' : ''} G=${groups} of x[${xs}]) -> ${cout}, k${k}${up ? ' up2x' : ''}`;
          const x = bigPair(xs, 31, dtype, 2);
          const w = bigPair([cout, xs[1], k, k], 32, dtype, 1 / Math.sqrt(xs[1] * k * k));
          const b = pair([cout], 33, dtype);
          const normWeight = pair([xs[1]], 34, 'float32');
          const normBias = pair([xs[1]], 35, 'float32');
          const upsample = up ? ('nearest2x' as const) : undefined;
          const fused = (a: Tensor, ww: Tensor, bb: Tensor, nw: Tensor, nb: Tensor): Tensor =>
            ops.conv2d(a, ww, bb, { padding: k >> 1, upsample, norm: { groups, weight: nw, bias: nb, eps: 1e-6, silu } });
          routedBoth(label, dtype, CONV, [x, w, b, normWeight, normBias], fused);
          const unfused = ops.conv2d(ops.groupNorm(x[1], groups, normWeight[1], normBias[1], 1e-6, { silu }), w[1], b[1], {
            padding: k >> 1,
            upsample,
          });
          const { out, route } = routed(CONV, label, () => fused(x[1], w[1], b[1], normWeight[1], normBias[1]));
          check(`${label} = groupNorm then conv2d (GPU)`, dtype, unfused, out, 0, route);
        });
      }
    });

    it(`sdpa head_dim 64 with bias / masks ${dtype} (T5, CLIP)`, (t) => {
      if (!gpuOrSkip(t)) return;
      tidy(() => {
        // T5-XXL: 64 heads, 512 tokens, relative position bias [1,H,L,L], scale 1 (bias in float32 and in the dtype)
        const [H, L] = [64, 512];
        const q = bigPair([1, H, L, 64], 31, dtype, 0.5);
        const k = bigPair([1, H, L, 64], 32, dtype, 0.5);
        const v = bigPair([1, H, L, 64], 33, dtype);
        const bias = bigPair([1, H, L, L], 34, 'float32', 3);
        routedBoth('sdpa T5 [1,64,512,64] + bias f32, scale 1', dtype, D64, [q, k, v, bias], (a, b, c, bb) =>
          ops.sdpa(a, b, c, { bias: bb, scale: 1 }),
        );
        routedBoth(`sdpa T5 + bias ${dtype}`, dtype, D64, [q, k, v, bigPair([1, H, L, L], 35, dtype, 3)], (a, b, c, bb) =>
          ops.sdpa(a, b, c, { bias: bb, scale: 1 }),
        );
        const keep = Tensor.fromArray(Array.from({ length: L }, (_, i) => (i < 300 ? 1 : 0)), [1, L], { dtype: 'uint8' });
        routedBoth('sdpa T5 + bias + key padding mask', dtype, D64, [q, k, v, bias, host(keep)], (a, b, c, bb, m) =>
          ops.sdpa(a, b, c, { bias: bb, mask: m, scale: 1 }),
        );
      });
      tidy(() => {
        // BLHD operands (the projections' layout), batch 2, broadcast bias
        const [q, k, v] = [36, 37, 38].map((seed) => pair([2, 77, 12, 64], seed, dtype));
        routedBoth('sdpa BLHD [2,77,12,64] + bias', dtype, D64, [q, k, v, pair([1, 12, 77, 77], 39, 'float32')], (a, b, c, bb) =>
          ops.sdpa(a, b, c, { bias: bb, layout: 'BLHD' }),
        );
        // CLIP-like: mask as int64 [1,1,Lq,Lk], Lq != Lk tails, row 0 keeps no key (zeros)
        const [Lq, Lk] = [77, 33];
        const mask = Tensor.fromArray(
          Array.from({ length: Lq * Lk }, (_, i) => (i % Lk <= Math.floor(i / Lk) - 1 ? 1 : 0)),
          [1, 1, Lq, Lk],
          { dtype: 'int64' },
        );
        const qc = pair([3, 5, Lq, 64], 40, dtype);
        const [kc, vc] = [41, 42].map((seed) => pair([3, 5, Lk, 64], seed, dtype));
        routedBoth('sdpa int64 mask, Lq 77 Lk 33, row 0 fully masked', dtype, D64, [qc, kc, vc, host(mask)], (a, b, c, m) =>
          ops.sdpa(a, b, c, { mask: m }),
        );
      });
    });

    it(`sdpa wide heads ${dtype} (the VAE mid block)`, (t) => {
      if (!gpuOrSkip(t)) return;
      const cases: [number, number, number, number, number][] = [
        [1, 1, 4096, 4096, 512], // the mid block at 512² (1024² below, bfloat16)
        [1, 1, 1000, 777, 512], // tails: Lk not a multiple of 8 (padded), query chunk tail
        [2, 3, 130, 65, 264], // batch and heads, head dim 264
        [1, 2, 33, 65, 256],
      ];
      if (full) cases.unshift([1, 1, 16384, 16384, 512]); // the mid block at 1024²: 550 GFLOP
      for (const [B, H, Lq, Lk, D] of cases) {
        tidy(() => {
          const q = bigPair([B, H, Lq, D], 51, dtype);
          const [k, v] = [52, 53].map((seed) => bigPair([B, H, Lk, D], seed, dtype));
          routedBoth(`sdpa wide B${B} H${H} Lq${Lq} Lk${Lk} D${D}`, dtype, WIDE, [q, k, v], (a, b, c) => ops.sdpa(a, b, c));
        });
      }
      tidy(() => {
        const q = pair([1, 2, 70, 256], 54, dtype);
        const [k, v] = [55, 56].map((seed) => pair([1, 2, 90, 256], seed, dtype));
        const keep = Tensor.fromArray(Array.from({ length: 90 }, (_, i) => (i % 7 === 3 ? 0 : 1)), [1, 90], { dtype: 'uint8' });
        routedBoth('sdpa wide + bias + mask, scale 0.3', dtype, WIDE, [q, k, v, pair([1, 2, 70, 90], 57, 'float32'), host(keep)], (a, b, c, bb, m) =>
          ops.sdpa(a, b, c, { bias: bb, mask: m, scale: 0.3 }),
        );
      });
    });
  }
});
