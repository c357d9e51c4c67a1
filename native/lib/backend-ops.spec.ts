// The backend-ops test (after llama.cpp's test-backend-ops): every CUDA op against the CPU op on the same random
// inputs, over many shapes (odd ones, Flux's own) and dtypes, judged by the normalised mean squared error
// ‖gpu−cpu‖²/‖cpu‖² against a limit per dtype; layout ops, gathers and NF4 quantization must match exactly.
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
import { gpuOrSkip, nmse, product, randn } from './testing/helpers';

const LIMIT: Record<string, number> = { float32: 1e-9, bfloat16: 5e-4, float16: 1e-5 };
const FLOATS: DType[] = ['float32', 'bfloat16', 'float16'];

interface Row {
  op: string;
  dtype: string;
  err: number;
  limit: number;
  ok: boolean;
}
const rows: Row[] = [];

after(() => {
  if (rows.length === 0) return;
  const failed = rows.filter((r) => !r.ok);
  const lines = rows.map(
    (r) => `${r.ok ? 'OK  ' : 'FAIL'} ${r.op.padEnd(58)} ${r.dtype.padEnd(9)} err ${r.err.toExponential(2)} (limit ${r.limit.toExponential(0)})`,
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

function check(op: string, dtype: string, cpu: Tensor, gpu: Tensor, limit = LIMIT[dtype] ?? 0): void {
  assert.equal(gpu.device.startsWith('cuda'), true, `${op}: result not on the GPU`);
  assert.deepEqual(gpu.shape, cpu.shape, `${op}: shapes differ`);
  assert.equal(gpu.dtype, cpu.dtype, `${op}: dtypes differ`);
  const g = gpu.toArray();
  const c = cpu.toArray();
  let err: number;
  if (g instanceof BigInt64Array || c instanceof BigInt64Array) {
    err = g.every((v, i) => v === c[i]) ? 0 : Infinity;
  } else {
    err = limit === 0 ? (g.every((v, i) => Object.is(v, c[i]) || v === c[i]) ? 0 : Infinity) : nmse(g as ArrayLike<number>, c as ArrayLike<number>);
  }
  const ok = err <= limit;
  rows.push({ op, dtype, err, limit, ok });
  assert.ok(ok, `${op} ${dtype}: error ${err} exceeds ${limit}`);
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
      for (const C of [1, 3, 77, 3072, 4096]) {
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
