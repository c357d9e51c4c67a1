import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SafetensorsFile } from '../safetensors';
import { T5Tokenizer, loadT5Tokenizer } from './t5-tokenizer';
import { fixturePath, readFixtureJson, readTokenizerReference, referenceDirectories, trimRow } from './test-fixtures';

interface Manifest {
  pipelines: Record<string, { name: string; prompt: string | string[]; max_sequence_length: number }[]>;
}

describe('T5Tokenizer', () => {
  describe('golden cases (diffusers FluxPipeline, transformers 5.17)', () => {
    for (const file of ['manifest.json', 'manifest-nf4.json']) {
      for (const [pipeline, cases] of Object.entries(readFixtureJson<Manifest>(file).pipelines)) {
        for (const c of cases) {
          it(`${pipeline}/${c.name}: t5_input_ids exact`, () => {
            const prompts = Array.isArray(c.prompt) ? c.prompt : [c.prompt];
            const length = c.max_sequence_length;
            const golden = SafetensorsFile.open(fixturePath(`${pipeline}-golden`, `${c.name}.safetensors`));
            assert.deepEqual(golden.get('t5_input_ids').shape, [prompts.length, length]);
            const expected = golden.readArray('t5_input_ids') as Int32Array;
            const { inputIds } = loadT5Tokenizer(fixturePath(pipeline, 'tokenizer_2')).tokenize(prompts, length);
            inputIds.forEach((row, i) => assert.deepEqual(Array.from(row), Array.from(expected.subarray(length * i, length * (i + 1)))));
          });
        }
      }
    }
  });

  describe('reference strings (make_reference.py on transformers 5.17)', () => {
    const reference = readTokenizerReference();
    for (const [entry, data] of Object.entries(reference.pipelines)) {
      if (data.t5 === undefined) continue;
      it(`${entry}: ${data.t5.length} strings at max_sequence_length ${reference.t5_lengths.join('/')} — ids, masks, decode, warnings`, () => {
        const t5 = loadT5Tokenizer(referenceDirectories(entry).t5!);
        data.t5!.forEach((row, i) => {
          const text = reference.strings[i];
          const where = `string ${i} ${JSON.stringify(text).slice(0, 60)}`;
          assert.deepEqual(t5.encode(text), row.untruncated, where);
          assert.equal(t5.decode(row.untruncated), row.decode, where);
          for (const length of reference.t5_lengths) {
            const got = t5.tokenize([text], length);
            assert.deepEqual(trimRow(got.inputIds[0], got.attentionMask[0]), row.flux[String(length)], `${where} at ${length}`);
            assert.equal(got.warning, row.warning[String(length)], `${where} at ${length}`);
          }
        });
      });
      it(`${entry}: batches — rows and the batch warning`, () => {
        const t5 = loadT5Tokenizer(referenceDirectories(entry).t5!);
        data.t5_batches!.forEach((batch, i) => {
          const prompts = reference.batches[Math.floor(i / 3)];
          const got = t5.tokenize(prompts, batch.max_sequence_length);
          assert.deepEqual(got.inputIds.map((ids, j) => trimRow(ids, got.attentionMask[j])), batch.flux, `batch ${i}`);
          assert.equal(got.warning, batch.warning, `batch ${i}`);
          assert.deepEqual(got.removedText, batch.removed_text, `batch ${i}`);
        });
      });
    }
  });

  it('reproduces diffusers\' warning, which slices the removed text at CLIP\'s length (76), not at max_sequence_length', () => {
    const t5 = loadT5Tokenizer(fixturePath('tiny-flux', 'tokenizer_2'));
    const short = t5.tokenize([Array(40).fill('a').join(' ')], 32);
    assert.equal(short.warning, "The following part of your input was truncated because `max_sequence_length` is set to  32 tokens: ['']");
    const long = t5.tokenize([Array(100).fill('a').join(' ')], 32);
    assert.deepEqual(long.removedText, [Array(24).fill('a').join(' ')]);
  });

  it('refuses max_sequence_length above 512 with diffusers\' message', () => {
    const t5 = loadT5Tokenizer(fixturePath('tiny-flux', 'tokenizer_2'));
    assert.throws(() => t5.tokenize(['a'], 513), { message: '`max_sequence_length` cannot be greater than 512 but is 513' });
    assert.throws(() => t5.tokenize(['a'], 0), /positive integer/);
  });

  it('needs tokenizer.json and names the directory otherwise', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-t5-'));
    try {
      copyFileSync(fixturePath('tiny-flux', 'tokenizer_2', 'spiece.model'), join(dir, 'spiece.model'));
      assert.throws(() => T5Tokenizer.fromDirectory(dir), (err: Error) => err.message.includes(dir) && err.message.includes('spiece.model alone'));
      writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
      assert.throws(() => T5Tokenizer.fromDirectory(dir), /tokenizer\.json: not valid JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tokenizes a 512-token prompt in well under 10 ms after load', () => {
    const t5 = loadT5Tokenizer(fixturePath('mini-flux', 'tokenizer_2'));
    const prompt = 'A detailed matte painting of an ancient city at dusk, with lanterns, rivers and bridges; '.repeat(40);
    assert.ok(t5.encode(prompt).length > 512);
    t5.tokenize([prompt], 512);
    const times = [1, 2, 3, 4, 5].map((i) => {
      const t0 = performance.now();
      t5.tokenize([`${prompt} ${i}`], 512);
      return performance.now() - t0;
    });
    times.sort((a, b) => a - b);
    assert.ok(times[2] < 10, `median ${times[2].toFixed(2)} ms`);
  });

  it('loads a T5-XXL-sized tokenizer.json (32k pieces) quickly', () => {
    const spec = JSON.parse(readFileSync(fixturePath('tiny-flux', 'tokenizer_2', 'tokenizer.json'), 'utf8'));
    const pieces: [string, number][] = spec.model.vocab;
    const seen = new Set(pieces.map(([p]) => p));
    let n = 0;
    while (pieces.length < 32100) {
      const piece = `\u2581${(n++).toString(36)}x`;
      if (!seen.has(piece)) pieces.push([piece, -10 - (n % 997) / 100]);
    }
    const dir = mkdtempSync(join(tmpdir(), 'fluxlab-t5-'));
    try {
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(spec));
      copyFileSync(fixturePath('tiny-flux', 'tokenizer_2', 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
      const t0 = performance.now();
      const t5 = loadT5Tokenizer(dir);
      const ms = performance.now() - t0;
      assert.ok(ms < 1000, `${ms.toFixed(0)} ms`);
      assert.deepEqual(t5.encode('hello'), loadT5Tokenizer(fixturePath('tiny-flux', 'tokenizer_2')).encode('hello'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
