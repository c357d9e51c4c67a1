import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSkippedModule, roundToDType } from './nn';

describe('roundToDType', () => {
  it('rounds to bfloat16 to nearest even', () => {
    assert.equal(roundToDType(1 + 2 ** -8, 'bfloat16'), 1); // tie → even mantissa
    assert.equal(roundToDType(1 + 3 * 2 ** -8, 'bfloat16'), 1 + 2 ** -6); // tie → even (up)
    assert.equal(roundToDType(827.22864, 'bfloat16'), 828);
    assert.equal(roundToDType(0.82722867, 'bfloat16'), 0.828125);
    assert.equal(roundToDType(Infinity, 'bfloat16'), Infinity);
  });

  it('rounds to float16 including subnormals and overflow', () => {
    assert.equal(roundToDType(1 + 2 ** -11, 'float16'), 1);
    assert.equal(roundToDType(1 + 3 * 2 ** -11, 'float16'), 1 + 2 ** -9);
    assert.equal(roundToDType(2 ** -25 * 3, 'float16'), 2 ** -24 * 2);
    assert.equal(roundToDType(70000, 'float16'), Infinity);
    assert.equal(roundToDType(-0.1, 'float16'), -0.0999755859375);
  });

  it('is float32 rounding for float32', () => {
    assert.equal(roundToDType(0.1, 'float32'), Math.fround(0.1));
  });
});

describe('isSkippedModule (bitsandbytes replace_with_bnb_linear)', () => {
  it('skips a listed name, a listed path and everything under a listed parent', () => {
    assert.ok(isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wo', ['wo']));
    assert.ok(!isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wi_0', ['wo']));
    assert.ok(isSkippedModule('proj_out', ['proj_out']));
    assert.ok(isSkippedModule('transformer_blocks.0.attn.to_q', ['transformer_blocks.0']));
    assert.ok(!isSkippedModule('transformer_blocks.10.attn.to_q', ['transformer_blocks.1']));
  });
});
