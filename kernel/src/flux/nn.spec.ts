import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSkippedModule } from './nn';

describe('isSkippedModule (bitsandbytes replace_with_bnb_linear)', () => {
  it('skips a listed name, a listed path and everything under a listed parent', () => {
    assert.ok(isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wo', ['wo']));
    assert.ok(!isSkippedModule('encoder.block.0.layer.1.DenseReluDense.wi_0', ['wo']));
    assert.ok(isSkippedModule('proj_out', ['proj_out']));
    assert.ok(isSkippedModule('transformer_blocks.0.attn.to_q', ['transformer_blocks.0']));
    assert.ok(!isSkippedModule('transformer_blocks.10.attn.to_q', ['transformer_blocks.1']));
  });
});
