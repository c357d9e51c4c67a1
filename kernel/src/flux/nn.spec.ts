import { Tensor, ops, tidy } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint';
import { CheckpointWeights, WeightLoader, isSkippedModule } from './nn';
import { RandomWeights, parameterSeed } from './random-weights';
import { writeSafetensors } from './safetensors';

describe('isSkippedModule (bitsandbytes replace_with_bnb_linear)', () => {
  it('skips a listed name, a listed path and everything under a listed parent', () => {
    assert.ok(isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wo', ['wo']));
    assert.ok(!isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wi_0', ['wo']));
    assert.ok(isSkippedModule('proj_out', ['proj_out']));
    assert.ok(isSkippedModule('transformer_blocks.0.attn.to_q', ['transformer_blocks.0']));
    assert.ok(!isSkippedModule('transformer_blocks.10.attn.to_q', ['transformer_blocks.1']));
  });
});

describe('RandomWeights', () => {
  it('draws each parameter from its own seed, scaled by its init, whatever the order', () => {
    const a = new RandomWeights({ seed: 7 });
    const b = new RandomWeights({ seed: 7 });
    const x1 = a.float('transformer', 'x.weight', [64, 256], 'float32', 'cpu', { normal: 0.5 });
    const y2 = b.float('transformer', 'y.weight', [8], 'float32', 'cpu', { normal: 1 });
    const x2 = b.float('transformer', 'x.weight', [64, 256], 'float32', 'cpu', { normal: 0.5 });
    assert.deepEqual(x1.toArray(), x2.toArray());
    const values = x1.toArray() as Float32Array;
    const std = Math.sqrt(values.reduce((s, v) => s + v * v, 0) / values.length);
    assert.ok(Math.abs(std - 0.5) < 0.02, `std ${std}`);
    const other = new RandomWeights({ seed: 8 }).float('transformer', 'x.weight', [64, 256], 'float32', 'cpu', { normal: 0.5 });
    assert.notDeepEqual(other.toArray(), values);
    assert.deepEqual([...(a.float('vae', 'n.weight', [3], 'bfloat16', 'cpu', 'ones').toArray() as Float32Array)], [1, 1, 1]);
    assert.deepEqual(a.names(), ['x.weight', 'n.weight']);
    for (const t of [x1, y2, x2, other]) t.dispose();
  });

  it('has every parameter and no checkpoint-only entry', () => {
    const source = new RandomWeights();
    assert.ok(source.has('transformer_blocks.0.attn.to_q.weight'));
    assert.ok(source.has('proj_out.bias'));
    assert.ok(!source.has('proj_out.weight.quant_state.bitsandbytes__nf4'));
    assert.ok(!source.has('proj_out.weight.absmax'));
    assert.match(source.description, /RANDOM WEIGHTS \(seed 0\)/);
  });

  it('derives stable 53-bit parameter seeds', () => {
    assert.equal(parameterSeed(0, 'a'), parameterSeed(0, 'a'));
    assert.notEqual(parameterSeed(0, 'a'), parameterSeed(1, 'a'));
    assert.ok(Number.isSafeInteger(parameterSeed(123456789, 'single_transformer_blocks.37.proj_out.weight')));
  });
});

describe('Linear.forward epilogues', () => {
  it('fuses residual and gate in x\'s dtype, and promotes to float32 beside a float32 residual (T5 under bitsandbytes)', () => {
    const source = new RandomWeights({ seed: 9 });
    const loader = new WeightLoader('test', source, { device: 'cpu', dtype: 'bfloat16' });
    try {
      const layer = loader.linear('o', 64, 32);
      tidy(() => {
        const x = Tensor.randn([2, 3, 64], { seed: 1, dtype: 'bfloat16' });
        const residual32 = Tensor.randn([2, 3, 32], { seed: 2 });
        const gate = Tensor.randn([2, 1, 32], { seed: 3, dtype: 'bfloat16' });
        const fused = layer.forward(x, { residual: residual32.to({ dtype: 'bfloat16' }), gate });
        assert.equal(fused.dtype, 'bfloat16');
        const promoted = layer.forward(x, { residual: residual32 });
        assert.equal(promoted.dtype, 'float32');
        const expected = ops.add(residual32, ops.linear(x, layer.weight, layer.bias));
        assert.deepEqual(promoted.toArray(), expected.toArray());
      });
    } finally {
      loader.dispose();
    }
  });
});

describe('WeightLoader.linear: float32 layers over bf16 checkpoint tensors', () => {
  it('keeps a bf16-stored weight as bf16 with computeDtype float32 (same outputs), float32-stored ones as float32', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-nn-'));
    try {
      const bf16 = new Uint16Array(4 * 8).map((_, i) => 0x3f80 + ((i * 37) % 97) - 48); // bf16 bit patterns near 1
      const f32 = new Float32Array(4 * 8).map((_, i) => Math.fround(1 / (i + 3)));
      writeSafetensors(join(dir, 'model.safetensors'), [
        ['stored_bf16.weight', { dtype: 'BF16', shape: [4, 8], data: bf16 }],
        ['stored_f32.weight', { dtype: 'F32', shape: [4, 8], data: f32 }],
      ]);
      const source = new CheckpointWeights(Checkpoint.open(dir, 'model'));
      assert.equal(source.storedDtype('stored_bf16.weight'), 'bfloat16');
      assert.equal(source.storedDtype('stored_f32.weight'), 'float32');
      assert.equal(source.storedDtype('absent.weight'), undefined);
      for (const dtype of ['float32', 'bfloat16'] as const) {
        const loader = new WeightLoader('test', source, { device: 'cpu', dtype });
        try {
          const a = loader.linear('stored_bf16', 8, 4, { bias: false, dtype: 'float32' });
          const b = loader.linear('stored_f32', 8, 4, { bias: false, dtype: 'float32' });
          assert.deepEqual([a.weight.dtype, a.computeDtype, a.dtype], ['bfloat16', 'float32', 'float32']);
          assert.deepEqual([b.weight.dtype, b.computeDtype, b.dtype], ['float32', undefined, 'float32']);
          const c = loader.linear('stored_bf16', 8, 4, { bias: false });
          assert.equal(c.dtype, dtype, 'the model dtype when none is asked for');
          tidy(() => {
            const x = Tensor.randn([3, 8], { seed: 5 });
            const y = a.forward(x);
            assert.equal(y.dtype, 'float32');
            assert.deepEqual(y.toArray(), ops.linear(x, a.weight.to({ dtype: 'float32' })).toArray());
          });
        } finally {
          loader.dispose();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('random weights draw such layers in bf16', () => {
    const loader = new WeightLoader('test', new RandomWeights({ seed: 6 }), { device: 'cpu', dtype: 'bfloat16' });
    try {
      const wo = loader.linear('wo', 64, 32, { bias: false, dtype: 'float32' });
      assert.deepEqual([wo.weight.dtype, wo.dtype], ['bfloat16', 'float32']);
      const drawn = new RandomWeights({ seed: 6 }).float('test', 'wo.weight', [32, 64], 'bfloat16', 'cpu', { normal: 1 / 8 });
      assert.deepEqual(wo.weight.toArray(), drawn.toArray());
      drawn.dispose();
    } finally {
      loader.dispose();
    }
  });
});
