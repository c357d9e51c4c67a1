import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseTokenizerJson, readJsonIfPresent, readTokenizerJson } from './tokenizer-json';
import { fixturePath } from './test-fixtures';

describe('tokenizer.json reader', () => {
  it('reads the components of a real file', () => {
    const json = readTokenizerJson(fixturePath('mini-flux', 'tokenizer_2', 'tokenizer.json'));
    assert.equal(json.model.type, 'Unigram');
    assert.equal(json.normalizer?.type, 'Precompiled');
    assert.equal(json.pre_tokenizer?.type, 'Sequence');
    assert.equal(json.post_processor?.type, 'TemplateProcessing');
    assert.ok(json.added_tokens.some((t) => t.content === '</s>' && t.id === 1));
  });

  it('infers the model type of files written without one', () => {
    assert.equal(parseTokenizerJson('{"model": {"vocab": {"a": 0}, "merges": []}}', 'x').model.type, 'BPE');
    assert.equal(parseTokenizerJson('{"model": {"vocab": [["a", 0.0]], "unk_id": 0}}', 'x').model.type, 'Unigram');
    assert.throws(() => parseTokenizerJson('{"model": {"vocab": {}}}', 'f.json'), /f\.json: the "model" section has no "type"/);
  });

  it('names the file in every error', () => {
    assert.throws(() => parseTokenizerJson('[1]', 'a.json'), /a\.json: not a JSON object/);
    assert.throws(() => parseTokenizerJson('{', 'a.json'), /a\.json: not valid JSON/);
    assert.throws(() => parseTokenizerJson('{"normalizer": null}', 'a.json'), /a\.json: "model" is missing/);
    assert.throws(() => parseTokenizerJson('{"model": {"type": "BPE"}, "added_tokens": [{"id": "x"}]}', 'a.json'), /added_tokens\[0\]/);
    assert.throws(() => readTokenizerJson('/nonexistent/tokenizer.json'), /\/nonexistent\/tokenizer\.json: cannot read \(ENOENT\)/);
  });

  it('reads optional config files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-json-'));
    try {
      assert.equal(readJsonIfPresent(join(dir, 'missing.json')), null);
      writeFileSync(join(dir, 'bad.json'), '[]');
      assert.throws(() => readJsonIfPresent(join(dir, 'bad.json')), /bad\.json: not a JSON object/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
