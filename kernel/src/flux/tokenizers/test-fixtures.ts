// Where the tokenizer specs find their fixtures: test/fixtures/ of the repository (copies of the shared diffusers
// fixtures, so a fresh clone tests alone), falling back to /work/shared/fixtures on a development machine.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { TokenizerJson } from './tokenizer-json';

function repositoryRoot(): string {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'test', 'fixtures')) && existsSync(join(dir, 'kernel'))) return dir;
  }
  throw new Error(`no repository with test/fixtures above ${__dirname}`);
}

const SHARED_FIXTURES = '/work/shared/fixtures';

/** Absolute path of a fixture file or directory, e.g. fixturePath('tiny-flux', 'tokenizer'). */
export function fixturePath(...parts: string[]): string {
  const local = join(repositoryRoot(), 'test', 'fixtures', ...parts);
  if (existsSync(local)) return local;
  const shared = join(SHARED_FIXTURES, ...parts);
  if (existsSync(shared)) return shared;
  throw new Error(`fixture ${parts.join('/')} is in neither test/fixtures nor ${SHARED_FIXTURES}`);
}

export function readFixtureJson<T>(...parts: string[]): T {
  return JSON.parse(readFileSync(fixturePath(...parts), 'utf8')) as T;
}

/** A padded row as the reference stores it: ids without the trailing padding, and the padding count. */
export interface ReferenceRow {
  readonly ids: number[];
  readonly pad: number;
}

/** test/fixtures/tokenizer-reference/reference.json.gz, made by make_reference.py (see its README). */
export interface TokenizerReference {
  readonly environment: Record<string, unknown>;
  readonly t5_lengths: number[];
  readonly strings: string[];
  readonly batches: string[][];
  readonly pipelines: Record<
    string,
    {
      readonly clip?: { flux: ReferenceRow; warning: string | null; untruncated: number[]; decode: string }[];
      readonly clip_batches?: { flux: ReferenceRow[]; warning: string | null; removed_text: string[] | null }[];
      readonly t5?: { flux: Record<string, ReferenceRow>; warning: Record<string, string | null>; untruncated: number[]; decode: string }[];
      readonly t5_batches?: { max_sequence_length: number; flux: ReferenceRow[]; warning: string | null; removed_text: string[] | null }[];
    }
  >;
}

let reference: TokenizerReference | undefined;

export function readTokenizerReference(): TokenizerReference {
  reference ??= JSON.parse(gunzipSync(readFileSync(fixturePath('tokenizer-reference', 'reference.json.gz'))).toString('utf8')) as TokenizerReference;
  return reference;
}

/** A padded row in the reference's form. */
export function trimRow(ids: Int32Array, mask: Int32Array): ReferenceRow {
  const n = mask.reduce((a, b) => a + b, 0);
  return { ids: Array.from(ids.subarray(0, n)), pad: ids.length - n };
}

/** The tokenizer directories each reference entry was made from. */
export function referenceDirectories(entry: string): { clip: string | null; t5: string | null } {
  if (entry === 'variant:clip-added-tokens-decoder') return { clip: fixturePath('tokenizer-reference', 'variants', 'clip-added-tokens-decoder'), t5: null };
  if (entry === 'variant:t5-legacy-json') return { clip: null, t5: fixturePath('tokenizer-reference', 'variants', 't5-legacy-json') };
  return { clip: fixturePath(entry, 'tokenizer'), t5: fixturePath(entry, 'tokenizer_2') };
}

/** A small T5-shaped tokenizer: Unigram pieces, WhitespaceSplit + Metaspace, </s> appended. */
export function smallT5(): TokenizerJson {
  return {
    added_tokens: [
      { id: 0, content: '<pad>', special: true, normalized: false },
      { id: 1, content: '</s>', special: true, normalized: false },
      { id: 2, content: '<unk>', special: true, normalized: false },
    ],
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }] },
    model: {
      type: 'Unigram',
      unk_id: 2,
      vocab: [['<pad>', 0], ['</s>', 0], ['<unk>', 0], ['▁a', -1], ['▁b', -1], ['▁', -2], ['c', -3]],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
  };
}
