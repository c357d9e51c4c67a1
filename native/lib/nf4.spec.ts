// NF4 against bitsandbytes itself: quantizing the float32 weights of test/fixtures/tiny-flux must give the
// packed bytes and absmax bitsandbytes stored in tiny-flux-nf4, and the double-quant fields of tiny-flux-nf4dq
// (codes, nested absmax, nested quant map, offset, quant_state JSON), byte for byte.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dynamicMap, nf4CodeValues, ops } from './ops';
import { tidy } from './scope';
import { NF4Tensor, Tensor } from './tensor';
import { assertClose, fixturePath, haveFixtures, randTensor, SafetensorsFile, toF64 } from './testing/helpers';

const components = [
  ['transformer', 'diffusion_pytorch_model.safetensors'],
  ['text_encoder_2', 'model.safetensors'],
] as const;

function fixtureOrSkip(t: { skip(msg: string): void }): boolean {
  if (haveFixtures()) return true;
  const msg = `fixtures missing at ${fixturePath()} (copied from ../shared/fixtures)`;
  if (process.env.CI === 'true') assert.fail(msg);
  t.skip(msg);
  return false;
}

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.toBytes());
}

describe('NF4 byte-exactness against bitsandbytes', () => {
  for (const [component, file] of components) {
    it(`${component}: packed weights and absmax equal tiny-flux-nf4`, (t) => {
      if (!fixtureOrSkip(t)) return;
      const f32 = new SafetensorsFile(fixturePath('tiny-flux', component, file));
      const nf4 = new SafetensorsFile(fixturePath('tiny-flux-nf4', component, file));
      const quantized = nf4.names().filter((n) => n.endsWith('.weight') && nf4.header[n].dtype === 'U8');
      assert.ok(quantized.length > 5, 'fixture holds quantized weights');
      for (const name of quantized) {
        tidy(() => {
          const w = f32.tensor(name);
          const q = ops.nf4Quantize(w);
          const parts = q.toBitsandbytes();
          assert.ok(bytesOf(parts['weight']).equals(Buffer.from(nf4.bytes(name))), `${name}: packed bytes differ`);
          assert.ok(bytesOf(parts['weight.absmax']).equals(Buffer.from(nf4.bytes(`${name}.absmax`))), `${name}: absmax`);
          assert.ok(bytesOf(parts['weight.quant_map']).equals(Buffer.from(nf4.bytes(`${name}.quant_map`))), `${name}: map`);
          const json = Buffer.from(nf4.bytes(`${name}.quant_state.bitsandbytes__nf4`)).toString('utf8');
          assert.equal(q.quantStateJson(), json, `${name}: quant_state`);
          assert.deepEqual(parts['weight'].shape, nf4.header[name].shape);
          for (const p of Object.values(parts)) p.dispose();
          q.dispose();
        });
      }
    });

    it(`${component}: double quant equals tiny-flux-nf4dq`, (t) => {
      if (!fixtureOrSkip(t)) return;
      const f32 = new SafetensorsFile(fixturePath('tiny-flux', component, file));
      const dq = new SafetensorsFile(fixturePath('tiny-flux-nf4dq', component, file));
      const quantized = dq.names().filter((n) => n.endsWith('.weight') && dq.header[n].dtype === 'U8');
      for (const name of quantized) {
        tidy(() => {
          const q = ops.nf4Quantize(f32.tensor(name), { doubleQuant: true });
          const parts = q.toBitsandbytes();
          const json = Buffer.from(dq.bytes(`${name}.quant_state.bitsandbytes__nf4`)).toString('utf8');
          assert.equal(q.quantStateJson(), json, `${name}: quant_state (nested_offset)`);
          for (const suffix of ['', '.absmax', '.nested_absmax', '.nested_quant_map', '.quant_map']) {
            const key = `weight${suffix}`;
            assert.ok(bytesOf(parts[key]).equals(Buffer.from(dq.bytes(`${name}${suffix}`))), `${name}${suffix} differs`);
          }
          for (const p of Object.values(parts)) p.dispose();
        });
      }
    });
  }

  it('the NF4 code values and the signed dynamic map equal the stored quant maps', (t) => {
    if (!fixtureOrSkip(t)) return;
    const dq = new SafetensorsFile(fixturePath('tiny-flux-nf4dq', 'transformer', 'diffusion_pytorch_model.safetensors'));
    const name = 'proj_out.weight';
    assert.ok(Buffer.from(nf4CodeValues().buffer).equals(Buffer.from(dq.bytes(`${name}.quant_map`))));
    assert.ok(Buffer.from(dynamicMap().buffer).equals(Buffer.from(dq.bytes(`${name}.nested_quant_map`))));
  });

  it('pre-quantized checkpoints load and dequantize like their source weights', (t) => {
    if (!fixtureOrSkip(t)) return;
    for (const variant of ['tiny-flux-nf4', 'tiny-flux-nf4dq']) {
      const f32 = new SafetensorsFile(fixturePath('tiny-flux', 'transformer', 'diffusion_pytorch_model.safetensors'));
      const st = new SafetensorsFile(fixturePath(variant, 'transformer', 'diffusion_pytorch_model.safetensors'));
      const name = 'transformer_blocks.0.ff.net.0.proj.weight';
      tidy(() => {
        const opt = (k: string) => (st.has(k) ? st.tensor(k) : undefined);
        const q = NF4Tensor.fromBitsandbytes({
          weight: st.tensor(name),
          absmax: st.tensor(`${name}.absmax`),
          quantMap: st.tensor(`${name}.quant_map`),
          nestedAbsmax: opt(`${name}.nested_absmax`),
          nestedQuantMap: opt(`${name}.nested_quant_map`),
          quantState: st.tensor(`${name}.quant_state.bitsandbytes__nf4`),
        });
        const w = f32.tensor(name);
        assert.deepEqual(q.shape, w.shape);
        assert.equal(q.doubleQuant, variant.endsWith('dq'));
        const deq = toF64(ops.nf4Dequantize(q));
        const ref = toF64(w);
        // NF4 keeps 16 levels per block: the error is bounded by half the widest gap (0.304/2) times absmax
        let worst = 0;
        for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(deq[i] - ref[i]));
        const amax = ref.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
        assert.ok(worst <= 0.16 * amax * 1.01, `${variant}: dequantization error ${worst} too large`);
        // and equals dequantizing our own quantization of the same weight
        const ours = toF64(ops.nf4Dequantize(ops.nf4Quantize(w, { doubleQuant: q.doubleQuant })));
        assertClose(deq, ours, { atol: 0, rtol: 0 }, `${variant}: dequantized weights`);
      });
    }
  });
});

describe('NF4 ops', () => {
  it('round trip on odd sizes keeps every value within half a level', () => {
    for (const [N, K] of [
      [1, 2],
      [3, 77],
      [5, 33],
    ]) {
      tidy(() => {
        const w = randTensor([N, K], 200 + N);
        for (const doubleQuant of [false, true]) {
          const q = ops.nf4Quantize(w.t, { doubleQuant });
          assert.equal(q.dtype, 'nf4');
          assert.deepEqual(q.shape, [N, K]);
          const parts = q.parts();
          assert.equal(parts.packed.numel, Math.ceil((N * K) / 2));
          const deq = toF64(ops.nf4Dequantize(q));
          const blocks = Math.ceil((N * K) / 64);
          for (let b = 0; b < blocks; b++) {
            const seg = w.v.subarray(b * 64, Math.min(N * K, b * 64 + 64));
            const amax = seg.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
            for (let i = 0; i < seg.length; i++) {
              const err = Math.abs(deq[b * 64 + i] - seg[i]);
              // double quant also rounds absmax to 8 bits
              assert.ok(err <= amax * (doubleQuant ? 0.17 : 0.153), `[${N},${K}] dq=${doubleQuant}: error ${err}`);
            }
          }
        }
      });
    }
  });

  it('linear with an NF4 weight equals linear with its dequantized weight', () => {
    tidy(() => {
      const x = randTensor([7, 130], 210);
      const w = randTensor([33, 130], 211);
      const b = randTensor([33], 212);
      for (const doubleQuant of [false, true]) {
        const q = ops.nf4Quantize(w.t, { doubleQuant });
        const y = toF64(ops.linear(x.t, q, b.t));
        const ref = toF64(ops.linear(x.t, ops.nf4Dequantize(q), b.t));
        assertClose(y, ref, { atol: 1e-4, rtol: 1e-5 }, `nf4 linear dq=${doubleQuant}`);
        const ybf = ops.linear(x.t.to({ dtype: 'bfloat16' }), q);
        assert.equal(ybf.dtype, 'bfloat16');
      }
    });
  });

  it('toBitsandbytes / fromBitsandbytes round trip; nf4 tensors refuse dense-only ops', () => {
    tidy(() => {
      const w = randTensor([6, 64], 220);
      const q = ops.nf4Quantize(w.t, { doubleQuant: true });
      const parts = q.toBitsandbytes();
      assert.deepEqual(parts['weight'].shape, [192, 1]);
      const back = NF4Tensor.fromBitsandbytes({
        weight: parts['weight'],
        absmax: parts['weight.absmax'],
        quantMap: parts['weight.quant_map'],
        nestedAbsmax: parts['weight.nested_absmax'],
        nestedQuantMap: parts['weight.nested_quant_map'],
        quantState: parts['weight.quant_state.bitsandbytes__nf4'],
      });
      assert.equal(back.offset, q.offset);
      assertClose(toF64(ops.nf4Dequantize(back)), toF64(ops.nf4Dequantize(q)), { atol: 0, rtol: 0 }, 'round trip');
      assert.throws(() => ops.add(q, q), /only linear and nf4Dequantize take nf4/);
      assert.throws(() => q.reshape([64, 6]), /cannot be reshaped/);
      assert.throws(
        () => NF4Tensor.fromBitsandbytes({ ...{ weight: parts['weight'], absmax: parts['weight.absmax'] }, quantMap: parts['weight.quant_map'], quantState: '{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [6, 64]}' }),
        /quant_type 'fp4' is not nf4/,
      );
      const dense = q.to({ dtype: 'float32' });
      assert.deepEqual(dense.shape, [6, 64]);
      q.dispose();
      assert.throws(() => ops.nf4Dequantize(q), /used after dispose/);
    });
  });
});
