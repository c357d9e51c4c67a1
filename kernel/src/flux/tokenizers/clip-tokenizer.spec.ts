import assert from 'node:assert/strict';
import { mkdtempSync, copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SafetensorsFile } from '../safetensors';
import { ClipTokenizer, loadClipTokenizer } from './clip-tokenizer';
import { fixturePath, readFixtureJson, readTokenizerReference, referenceDirectories, trimRow } from './test-fixtures';

interface Manifest {
  pipelines: Record<string, { name: string; prompt: string | string[] }[]>;
}

function goldenCases(): { pipeline: string; name: string; prompts: string[] }[] {
  return ['manifest.json', 'manifest-nf4.json'].flatMap((file) =>
    Object.entries(readFixtureJson<Manifest>(file).pipelines).flatMap(([pipeline, cases]) =>
      cases.map((c) => ({ pipeline, name: c.name, prompts: Array.isArray(c.prompt) ? c.prompt : [c.prompt] })),
    ),
  );
}

describe('ClipTokenizer', () => {
  describe('golden cases (diffusers FluxPipeline, transformers 5.17)', () => {
    for (const c of goldenCases()) {
      it(`${c.pipeline}/${c.name}: clip_input_ids exact`, () => {
        const golden = SafetensorsFile.open(fixturePath(`${c.pipeline}-golden`, `${c.name}.safetensors`));
        assert.deepEqual(golden.get('clip_input_ids').shape, [c.prompts.length, 77]);
        const expected = golden.readArray('clip_input_ids') as Int32Array;
        const clip = loadClipTokenizer(fixturePath(c.pipeline, 'tokenizer'));
        const { inputIds, warning } = clip.tokenize(c.prompts);
        assert.equal(warning, null);
        inputIds.forEach((row, i) => assert.deepEqual(Array.from(row), Array.from(expected.subarray(77 * i, 77 * (i + 1)))));
      });
    }
  });

  describe('reference strings (make_reference.py on transformers 5.17)', () => {
    const reference = readTokenizerReference();
    for (const [entry, data] of Object.entries(reference.pipelines)) {
      if (data.clip === undefined) continue;
      it(`${entry}: ${data.clip.length} strings — ids, masks, untruncated ids, decode and warning text`, () => {
        const clip = loadClipTokenizer(referenceDirectories(entry).clip!);
        data.clip!.forEach((row, i) => {
          const text = reference.strings[i];
          const got = clip.tokenize([text]);
          const where = `string ${i} ${JSON.stringify(text).slice(0, 60)}`;
          assert.deepEqual(trimRow(got.inputIds[0], got.attentionMask[0]), row.flux, where);
          assert.equal(got.warning, row.warning, where);
          assert.deepEqual(clip.encode(text), row.untruncated, where);
          assert.equal(clip.decode(row.untruncated), row.decode, where);
        });
      });
      it(`${entry}: batches — rows and the batch warning`, () => {
        const clip = loadClipTokenizer(referenceDirectories(entry).clip!);
        data.clip_batches!.forEach((batch, i) => {
          const got = clip.tokenize(reference.batches[i]);
          assert.deepEqual(got.inputIds.map((ids, j) => trimRow(ids, got.attentionMask[j])), batch.flux, `batch ${i}`);
          assert.equal(got.warning, batch.warning, `batch ${i}`);
          assert.deepEqual(got.removedText, batch.removed_text, `batch ${i}`);
        });
      });
    }
  });

  it('gives the same tokenizer from vocab.json + merges.txt as from tokenizer.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-clip-'));
    try {
      for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json']) copyFileSync(fixturePath('mini-flux', 'tokenizer', f), join(dir, f));
      const fromVocab = loadClipTokenizer(dir);
      const fromJson = loadClipTokenizer(fixturePath('mini-flux', 'tokenizer'));
      for (const text of readTokenizerReference().strings) assert.deepEqual(fromVocab.encode(text), fromJson.encode(text));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads model_max_length and the special tokens from the config', () => {
    const clip = loadClipTokenizer(fixturePath('tiny-flux', 'tokenizer'));
    assert.equal(clip.modelMaxLength, 77);
    assert.equal(clip.bosTokenId, 812);
    assert.equal(clip.eosTokenId, 813);
    assert.equal(clip.padTokenId, 813);
  });

  it('pads with the configured pad token and truncates keeping <|endoftext|> last', () => {
    const clip = loadClipTokenizer(fixturePath('tiny-flux', 'tokenizer'));
    const { inputIds, attentionMask, warning, removedText } = clip.tokenize(['a', Array(100).fill('a').join(' ')]);
    assert.deepEqual(Array.from(inputIds[0].subarray(0, 4)), [812, clip.encode('a')[1], 813, 813]);
    assert.deepEqual(Array.from(attentionMask[0].subarray(0, 4)), [1, 1, 1, 0]);
    assert.equal(inputIds[1][76], 813);
    assert.equal(attentionMask[1].reduce((a, b) => a + b, 0), 77);
    assert.ok(warning?.startsWith('The following part of your input was truncated because CLIP can only handle sequences up to 77 tokens: ['));
    assert.equal(removedText?.[1], Array(25).fill('a').join(' '));
  });

  it('names the directory when no tokenizer files are there', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-clip-'));
    try {
      assert.throws(() => ClipTokenizer.fromDirectory(dir), (err: Error) => err.message.includes(dir) && err.message.includes('vocab.json and merges.txt'));
      writeFileSync(join(dir, 'vocab.json'), '{"a": 0}');
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b c\n');
      assert.throws(() => ClipTokenizer.fromDirectory(dir), /merges\.txt: line 2 is not a merge/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses empty batches and non-string prompts', () => {
    const clip = loadClipTokenizer(fixturePath('tiny-flux', 'tokenizer'));
    assert.throws(() => clip.tokenize([]), /at least one prompt/);
    assert.throws(() => clip.tokenize([42 as unknown as string]), /prompt 0 is a number/);
  });

  it('tokenizes a 77-token prompt batch in well under 10 ms after load', () => {
    const clip = loadClipTokenizer(fixturePath('mini-flux', 'tokenizer'));
    const prompt = 'a cinematic photo of a red fox in a snowy forest, golden hour, 35mm, highly detailed, '.repeat(12);
    clip.tokenize([prompt]);
    const times = [1, 2, 3, 4, 5].map((i) => {
      const t0 = performance.now();
      clip.tokenize([`${prompt} ${i}`]);
      return performance.now() - t0;
    });
    times.sort((a, b) => a - b);
    assert.ok(times[2] < 10, `median ${times[2].toFixed(2)} ms`);
  });
});
