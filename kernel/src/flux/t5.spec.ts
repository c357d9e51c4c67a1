import { Tensor, tidy } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Nf4Plan } from './nn';
import { Bf16ValuedWeights } from './bf16-values.testing';
import { RandomWeights } from './random-weights';
import { T5EncoderModel, relativePositionBucket, relativePositionBuckets } from './t5';

describe('T5 relative position buckets (bidirectional, 32 buckets, max distance 128)', () => {
  it('matches transformers computed in float32 (reference table from numpy float32)', () => {
    const positions = [-1, 0, 1, 7, 8, 9, 11, 12, 15, 16, 22, 23, 31, 32, 45, 46, 63, 64, 90, 91, 127, 128, 129, 500, -8, -12, -16, -32, -64, -128, -500];
    const expected = [1, 0, 17, 23, 24, 24, 24, 25, 25, 26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 31, 31, 31, 31, 31, 8, 9, 10, 12, 14, 15, 15];
    assert.deepEqual(positions.map((p) => relativePositionBucket(p, true, 32, 128)), expected);
    const sweep = [];
    for (let r = -140; r <= 140; r += 7) sweep.push(relativePositionBucket(r, true, 32, 128));
    assert.deepEqual(sweep, [15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 14, 13, 13, 13, 12, 12, 11, 10, 9, 7, 0, 23, 25, 26, 27, 28, 28, 29, 29, 29, 30, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31]);
  });

  it('lays the table out as [query, key] with key − query', () => {
    const table = relativePositionBuckets(3, 32, 128);
    assert.deepEqual([...table], [0, 17, 18, 1, 0, 17, 2, 1, 0]);
  });
});

describe('T5 wo: a float32 layer over bf16 values (bitsandbytes keeps wo float32; FLUX.1-dev stores it in bf16)', () => {
  // the tiny fixture's text_encoder_2 config (T5 v1.1 layout: gated-gelu, no biases)
  const config = {
    d_ff: 64, d_kv: 8, d_model: 32, dense_act_fn: 'gelu_new', feed_forward_proj: 'gated-gelu', is_gated_act: true,
    layer_norm_epsilon: 1e-6, model_type: 't5', num_heads: 4, num_layers: 2, relative_attention_max_distance: 128,
    relative_attention_num_buckets: 32, vocab_size: 388, tie_word_embeddings: true,
  };
  const nf4: Nf4Plan = { quantizeOnLoad: true, doubleQuant: false, computeDtype: 'bfloat16', skipModules: ['wo'] };
  const WO = 'encoder.block.1.layer.1.DenseReluDense.wo';

  it('with nf4 quantization on random weights: wo holds bf16 computed in float32, the same outputs as float32 storage', () => {
    const bf16Stored = T5EncoderModel.fromWeights(config, new RandomWeights({ seed: 21 }), { device: 'cpu', dtype: 'bfloat16', nf4 });
    const f32Stored = T5EncoderModel.fromWeights(config, new Bf16ValuedWeights(21, 'float32'), { device: 'cpu', dtype: 'bfloat16', nf4 });
    try {
      const wo = bf16Stored.linearLayers().get(WO)!;
      assert.equal(wo.weight.dtype, 'bfloat16');
      assert.equal(wo.computeDtype, 'float32');
      assert.equal(wo.dtype, 'float32');
      assert.equal(wo.quantized, false);
      const wi = bf16Stored.linearLayers().get('encoder.block.1.layer.1.DenseReluDense.wi_0')!;
      assert.equal(wi.quantized, true);
      const reference = f32Stored.linearLayers().get(WO)!;
      assert.equal(reference.weight.dtype, 'float32');
      assert.equal(reference.computeDtype, undefined);
      assert.deepEqual(wo.weight.toArray(), reference.weight.toArray(), 'the same values');
      tidy(() => {
        const ids = Tensor.fromArray([5, 17, 300, 1, 0, 0, 9, 42], [2, 4], { dtype: 'int32' });
        const a = bf16Stored.forward(ids);
        const b = f32Stored.forward(ids);
        assert.equal(a.dtype, 'bfloat16');
        assert.deepEqual(a.toArray(), b.toArray(), 'bit for bit');
      });
    } finally {
      bf16Stored.dispose();
      f32Stored.dispose();
    }
  });

  it('float32 and float16 models keep float32 layers over bf16 storage; a float32 checkpoint keeps float32', () => {
    for (const dtype of ['float32', 'float16'] as const) {
      const model = T5EncoderModel.fromWeights(config, new RandomWeights({ seed: 22 }), { device: 'cpu', dtype });
      try {
        const wo = model.linearLayers().get(WO)!;
        assert.deepEqual([wo.weight.dtype, wo.dtype], ['bfloat16', 'float32'], dtype);
        const q = model.linearLayers().get('encoder.block.0.layer.0.SelfAttention.q')!;
        assert.deepEqual([q.weight.dtype, q.dtype], dtype === 'float32' ? ['bfloat16', 'float32'] : ['float16', 'float16'], dtype);
        tidy(() => assert.equal(model.forward(Tensor.fromArray([3, 4, 5], [1, 3], { dtype: 'int32' })).dtype, dtype));
      } finally {
        model.dispose();
      }
    }
    const stored32 = T5EncoderModel.fromWeights(config, new Bf16ValuedWeights(21, 'float32'), { device: 'cpu', dtype: 'float32' });
    try {
      assert.equal(stored32.linearLayers().get(WO)!.weight.dtype, 'float32');
    } finally {
      stored32.dispose();
    }
  });
});
