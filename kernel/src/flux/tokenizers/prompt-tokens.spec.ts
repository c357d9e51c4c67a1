import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tokenizePrompts, type PromptTokenizer } from './prompt-tokens';
import { Tokenizer } from './tokenizer';
import { smallT5 } from './test-fixtures';

describe('tokenizePrompts (FluxPipeline tokenizer calls)', () => {
  const tokenizer = Tokenizer.fromJson(smallT5());
  const tok: PromptTokenizer = { tokenizer, padTokenId: 0, decode: (ids) => tokenizer.decode(ids) };
  const message = (removed: string): string => `cut: ${removed}`;

  it('pads to max length and stays silent when nothing is cut', () => {
    const out = tokenizePrompts(tok, ['a b', 'a'], 3, 1, message);
    assert.deepEqual(out.inputIds.map((r) => Array.from(r)), [[3, 4, 1], [3, 1, 0]]);
    assert.equal(out.warning, null);
    assert.equal(out.removedText, null);
  });

  it('decodes untruncated columns [sliceStart, width - 1) of every row, padding included', () => {
    const out = tokenizePrompts(tok, ['a b a b', 'b'], 3, 1, message);
    assert.deepEqual(out.inputIds.map((r) => Array.from(r)), [[3, 4, 1], [4, 1, 0]]);
    assert.deepEqual(out.removedText, ['b a b', '</s><pad><pad>']);
    assert.equal(out.warning, "cut: ['b a b', '</s><pad><pad>']");
  });

  it('gives empty strings when the slice starts past the untruncated width', () => {
    const out = tokenizePrompts(tok, ['a b a b'], 3, 76, message);
    assert.deepEqual(out.removedText, ['']);
  });

  it('checks its arguments', () => {
    assert.throws(() => tokenizePrompts(tok, [], 3, 1, message), /at least one prompt/);
    assert.throws(() => tokenizePrompts(tok, ['a'], 2.5, 1, message), /positive integer/);
  });
});
