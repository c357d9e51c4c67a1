import { NF4Tensor, Tensor, ops, tidy } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Checkpoint } from './checkpoint';
import { fixturesDir } from './golden';
import { latentImageIds } from './latents';
import { CheckpointWeights, Nf4Plan } from './nn';
import { FluxTransformer2DModel, fluxRope } from './transformer';

/** The embedding as FluxTransformer2DModel computes it (ops.timestepEmbedding, dim 256, cosines first). */
function timestepEmbedding(timesteps: number[], dim: number): Float32Array {
  return tidy(() => ops.timestepEmbedding(Tensor.fromArray(timesteps, [timesteps.length]), dim, { flipSinToCos: true, downscaleFreqShift: 0 }).toArray() as Float32Array);
}

describe('timestep embedding (diffusers get_timestep_embedding, flip_sin_to_cos)', () => {
  it('puts cos first, sin second', () => {
    const zero = timestepEmbedding([0], 256);
    assert.deepEqual([...zero.subarray(0, 128)], new Array(128).fill(1));
    assert.deepEqual([...zero.subarray(128)], new Array(128).fill(0));
  });

  it('matches numpy float32 at large timesteps', () => {
    // numpy's float32 exp is not correctly rounded (ours and torch's Sleef exp are, to within an ulp); an ulp of a
    // frequency times t ~ 1000 moves the argument by ~5e-5, hence the tolerance.
    // numpy: f = exp(float32(-ln 1e4) * arange(128, float32) / 128); a = float32(t) * f; concat(cos(a), sin(a)).
    const expected: Record<number, number[]> = {
      500: [-0.8838492631912231, 0.9459457397460938, -0.9803577065467834, 0.43052127957344055, 0.9985568523406982,
        -0.4677717983722687, 0.32432493567466736, -0.1972275972366333, 0.9025804400444031, 0.05370452627539635],
      827.22864: [-0.5488823056221008, -0.9944255948066711, 0.7055436372756958, -0.7888628840446472, 0.9960514903068542,
        -0.8358996510505676, -0.10544091463088989, -0.7086665034294128, -0.6145692467689514, 0.0887775793671608],
    };
    const columns = [0, 1, 5, 50, 127, 128, 129, 133, 178, 255];
    for (const [t, values] of Object.entries(expected)) {
      const emb = timestepEmbedding([Number(t)], 256);
      columns.forEach((c, i) => assert.ok(Math.abs(emb[c] - values[i]) < 1e-4, `t=${t} column ${c}: ${emb[c]} vs ${values[i]}`));
    }
  });
});

describe('fluxRope (FluxPosEmbed)', () => {
  it('concatenates the axes, each frequency repeated for its pair', () => {
    const ids = Float32Array.from([0, 3, 5, 0, 0, 0]);
    const { cos, sin } = fluxRope(ids, [4, 4, 8]);
    assert.equal(cos.length, 2 * 16);
    // Axis 1 (dim 4) of token 0 at position 3: freqs 1 and 1/100.
    assert.equal(cos[4], Math.fround(Math.cos(3)));
    assert.equal(cos[5], Math.fround(Math.cos(3)));
    assert.equal(sin[6], Math.fround(Math.sin(3 / 100)));
    // Axis 2 (dim 8) at position 5: freqs 10000^(-j/4).
    assert.equal(sin[8 + 2 * 3 + 1], Math.fround(Math.sin(5 * 10000 ** (-6 / 8))));
    // Token 1 sits at the origin.
    assert.deepEqual([...cos.subarray(16)], new Array(16).fill(1));
    assert.deepEqual([...sin.subarray(16)], new Array(16).fill(0));
  });
});

describe('fused QKV projections (WeightLoader.stackRows)', () => {
  const plan = (doubleQuant: boolean): Nf4Plan => ({ quantizeOnLoad: true, doubleQuant, computeDtype: 'float32', skipModules: [] });
  const streams = [
    ['transformer_blocks.0.attn.', ['to_q', 'to_k', 'to_v']],
    ['transformer_blocks.0.attn.', ['add_q_proj', 'add_k_proj', 'add_v_proj']],
    ['single_transformer_blocks.0.attn.', ['to_q', 'to_k', 'to_v']],
  ] as const;

  for (const [pipeline, nf4] of [
    ['mini-flux', undefined],
    ['mini-flux', plan(false)],
    ['mini-flux', plan(true)],
    ['tiny-flux', undefined],
  ] as const) {
    it(`${pipeline}${nf4 ? ` NF4${nf4.doubleQuant ? ' double quant' : ''}` : ''}: one Linear per stream holding the checkpoint's q, k, v rows exactly`, () => {
      const dir = join(fixturesDir(), pipeline, 'transformer');
      const model = FluxTransformer2DModel.fromPretrained(dir, { device: 'cpu', dtype: 'float32', nf4 });
      const source = new CheckpointWeights(Checkpoint.open(dir, 'diffusion_pytorch_model'));
      try {
        assert.deepEqual(model.unusedWeights(), []);
        const layers = model.linearLayers();
        assert.ok(![...layers.keys()].some((k) => /\.(to_[qkv]|add_[qkv]_proj)$/.test(k)), 'no separate q/k/v layers remain');
        const dim = model.innerDim;
        for (const [prefix, names] of streams) {
          const stacked = layers.get(`${prefix}{${names.join(',')}}`);
          assert.ok(stacked, `${prefix}{${names.join(',')}} is listed`);
          assert.deepEqual(stacked.weight.shape, [3 * dim, dim]);
          assert.equal(stacked.quantized, nf4 !== undefined);
          tidy(() => {
            const read = (key: string, shape: number[]) => source.float('transformer', `${prefix}${key}`, shape, 'float32', 'cpu');
            const weights = names.map((n) => read(`${n}.weight`, [dim, dim]));
            // NF4: each checkpoint weight quantized alone (as bitsandbytes stores it), then dequantized.
            const expected = weights.map((w) => (nf4 ? ops.nf4Dequantize(ops.nf4Quantize(w, { doubleQuant: nf4.doubleQuant }), 'float32') : w));
            const got = stacked.weight instanceof NF4Tensor ? ops.nf4Dequantize(stacked.weight, 'float32') : stacked.weight;
            assert.deepEqual([...(got.toArray() as Float32Array)], [...(ops.concat(expected, 0).toArray() as Float32Array)]);
            const bias = ops.concat(names.map((n) => read(`${n}.bias`, [dim])), 0);
            assert.deepEqual([...(stacked.bias!.toArray() as Float32Array)], [...(bias.toArray() as Float32Array)]);
          });
        }
      } finally {
        model.dispose();
      }
    });
  }

  it('tiny-flux NF4 (K = 32, not a multiple of the blocksize): the layers stay separate, as bitsandbytes stores them', () => {
    const model = FluxTransformer2DModel.fromPretrained(join(fixturesDir(), 'tiny-flux', 'transformer'), { device: 'cpu', dtype: 'float32', nf4: plan(true) });
    try {
      const layers = model.linearLayers();
      for (const name of ['to_q', 'to_k', 'to_v', 'add_q_proj', 'add_k_proj', 'add_v_proj']) assert.ok(layers.get(`transformer_blocks.0.attn.${name}`)?.quantized, name);
      assert.deepEqual(model.unusedWeights(), []);
    } finally {
      model.dispose();
    }
  });
});

describe('modulationTable: every step\'s adaptive-norm projections at once', () => {
  it('mini-flux: a step given its row predicts what the step projecting silu(temb) itself predicts', () => {
    const model = FluxTransformer2DModel.fromPretrained(join(fixturesDir(), 'mini-flux', 'transformer'), { device: 'cpu', dtype: 'float32' });
    try {
      tidy(() => {
        const seq = 16;
        const textLength = 5;
        const random = (shape: number[], seed: number) =>
          Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7919 + i * 0.37)), shape);
        const hiddenStates = random([1, seq, 64], 1);
        const encoderHiddenStates = random([1, textLength, 64], 2);
        const pooledProjections = random([1, 32], 3);
        const guidance = Tensor.fromArray([3.5], [1]);
        const steps = [1, 0.75, 0.2];
        const timestep = Tensor.fromArray(steps, [steps.length, 1]);
        const rotary = model.posEmbed(new Float32Array(textLength * 3), latentImageIds(4, 4));
        const table = model.modulationTable({ timestep, guidance, pooledProjections });
        assert.deepEqual(table.shape, [steps.length, 1, model.modulationWidth]);
        // 1 double block (2 x 6D) + 2 single blocks (3D each) + norm_out (2D), D = 128
        assert.equal(model.modulationWidth, 12 * 128 + 2 * 3 * 128 + 2 * 128);
        steps.forEach((t, i) => {
          const inputs = { hiddenStates, encoderHiddenStates, pooledProjections, timestep: [t], guidance, rotary };
          const projected = model.forward(inputs).toArray() as Float32Array;
          const fromTable = model.forward({ ...inputs, modulation: ops.slice(table, 0, i, i + 1).reshape([1, model.modulationWidth]) }).toArray() as Float32Array;
          const scale = projected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          const worst = projected.reduce((m, v, j) => Math.max(m, Math.abs(v - fromTable[j])), 0);
          assert.ok(worst <= 1e-6 * scale, `step ${i}: max difference ${worst} (scale ${scale})`);
          // Streamed weights (group offload): each block projects its own, the same bits as the row made in one op.
          model.setWeightsStreamed(true);
          const blockByBlock = model.forward(inputs).toArray() as Float32Array;
          model.setWeightsStreamed(false);
          assert.ok(blockByBlock.every((v, j) => Object.is(v, projected[j])), `step ${i}: streamed weights differ`);
        });
        assert.throws(
          () => model.forward({ hiddenStates, encoderHiddenStates, pooledProjections, timestep: [1], guidance, rotary, modulation: ops.slice(table, 0, 0, 2).reshape([2, model.modulationWidth]) }),
          /modulation must be float32 \[1, 2560\]/,
        );
        assert.throws(() => model.modulationTable({ timestep: Tensor.fromArray(steps, [3]), guidance, pooledProjections }), /timesteps must be float32 \[T, B\]/);
        rotary.dispose();
      });
    } finally {
      model.dispose();
    }
  });
});
