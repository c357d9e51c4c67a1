import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { appliesCleanUp, cleanUpTokenization, readTokenizerConfig, specialTokensOf } from './tokenizer-config';
import { fixturePath } from './test-fixtures';

describe('tokenizer config', () => {
  it("reads CLIP's special tokens and length", () => {
    const config = readTokenizerConfig(fixturePath('tiny-flux', 'tokenizer'));
    assert.equal(config.bosToken, '<|startoftext|>');
    assert.equal(config.padToken, '<|endoftext|>');
    assert.equal(config.modelMaxLength, 77);
    assert.equal(config.cleanUpTokenizationSpaces, true);
    assert.deepEqual(specialTokensOf(config), ['<|startoftext|>', '<|endoftext|>']);
  });

  it("reads T5's extra ids and an added_tokens_decoder with its flags", () => {
    const config = readTokenizerConfig(fixturePath('tokenizer-reference', 'variants', 't5-legacy-json'));
    assert.equal(config.extraSpecialTokens.length, 100);
    assert.deepEqual(config.addedTokensDecoder[0], { id: 0, content: '<pad>', special: true, normalized: false, lstrip: false, rstrip: false, singleWord: false });
    const clip = readTokenizerConfig(fixturePath('tokenizer-reference', 'variants', 'clip-added-tokens-decoder'));
    assert.equal(clip.addedTokensDecoder.find((t) => t.content === '<|startoftext|>')?.normalized, true);
  });

  it('falls back to special_tokens_map.json and treats the "no limit" length as none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-config-'));
    try {
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1e30 }));
      writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ eos_token: { content: '</s>', normalized: false } }));
      const config = readTokenizerConfig(dir);
      assert.equal(config.modelMaxLength, null);
      assert.equal(config.eosToken, '</s>');
      assert.equal(config.cleanUpTokenizationSpaces, false);
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ added_tokens_decoder: { x: {} } }));
      assert.throws(() => readTokenizerConfig(dir), /added_tokens_decoder\["x"\] is malformed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('cleans up decoded spaces as transformers does, never for BPE', () => {
    assert.equal(cleanUpTokenization("hello , world . is n't it ? i 'm, don 't"), "hello, world. isn't it? i'm, don 't");
    const config = readTokenizerConfig(fixturePath('tiny-flux', 'tokenizer'));
    assert.equal(appliesCleanUp(config, 'BPE'), false);
    assert.equal(appliesCleanUp(config, 'Unigram'), true);
  });
});
