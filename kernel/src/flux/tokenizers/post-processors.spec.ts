import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildPostProcessor } from './post-processors';

describe('post-processors', () => {
  it("appends T5's </s> with TemplateProcessing", () => {
    const t5 = buildPostProcessor({
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } },
    })!;
    assert.equal(t5.addedCount, 1);
    assert.deepEqual(t5.process([5, 6]), [5, 6, 1]);
  });

  it("wraps CLIP's ids with RobertaProcessing", () => {
    const clip = buildPostProcessor({ type: 'RobertaProcessing', sep: ['<|endoftext|>', 49407], cls: ['<|startoftext|>', 49406] })!;
    assert.equal(clip.addedCount, 2);
    assert.deepEqual(clip.process([7]), [49406, 7, 49407]);
  });

  it('chains processors and counts all added tokens', () => {
    const seq = buildPostProcessor({
      type: 'Sequence',
      processors: [{ type: 'ByteLevel' }, { type: 'BertProcessing', sep: ['[SEP]', 2], cls: ['[CLS]', 1] }],
    })!;
    assert.equal(seq.addedCount, 2);
    assert.deepEqual(seq.process([9]), [1, 9, 2]);
  });

  it('refuses malformed templates', () => {
    assert.throws(
      () => buildPostProcessor({ type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<x>' } }], special_tokens: {} }),
      /special token "<x>" has no "ids"/,
    );
    assert.throws(() => buildPostProcessor({ type: 'TemplateProcessing', single: [{ Sequence: { id: 'B' } }], special_tokens: {} }), /sequence A/);
    assert.throws(() => buildPostProcessor({ type: 'RobertaProcessing', sep: ['x'], cls: ['y', 1] }), /"sep" must be/);
  });
});
