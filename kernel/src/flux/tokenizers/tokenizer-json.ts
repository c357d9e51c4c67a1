// Reader for Hugging Face `tokenizer.json` (the tokenizers library's serialisation): the file is parsed once and its
// top-level shape checked here; each component's fields are checked by the module that builds it, so an error names
// the file and the component. Both the CLIP and the T5 tokenizer load through this reader.
import { readFileSync } from 'node:fs';

/** One component spec (normalizer, pre-tokenizer, model, post-processor, decoder): `type` plus its fields. */
export interface ComponentJson {
  readonly type: string;
  readonly [field: string]: unknown;
}

export interface AddedTokenJson {
  readonly id: number;
  readonly content: string;
  readonly single_word?: boolean;
  readonly lstrip?: boolean;
  readonly rstrip?: boolean;
  readonly normalized?: boolean;
  readonly special?: boolean;
}

export interface TokenizerJson {
  readonly added_tokens: readonly AddedTokenJson[];
  readonly normalizer: ComponentJson | null;
  readonly pre_tokenizer: ComponentJson | null;
  readonly model: ComponentJson;
  readonly post_processor: ComponentJson | null;
  readonly decoder: ComponentJson | null;
}

export class TokenizerFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'TokenizerFileError';
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function component(file: string, name: string, value: unknown, nullable: boolean): ComponentJson | null {
  if (value === null || value === undefined) {
    if (nullable) return null;
    throw new TokenizerFileError(file, `"${name}" is missing`);
  }
  if (!isRecord(value)) throw new TokenizerFileError(file, `"${name}" is not an object`);
  return value as unknown as ComponentJson;
}

/** Infers the model type of files written before tokenizers stored `"type"` in the model section. */
function modelWithType(file: string, model: ComponentJson): ComponentJson {
  if (typeof model.type === 'string') return model;
  if ('merges' in model) return { ...model, type: 'BPE' };
  if (Array.isArray(model.vocab) && Array.isArray(model.vocab[0])) return { ...model, type: 'Unigram' };
  throw new TokenizerFileError(file, 'the "model" section has no "type" and is neither BPE nor Unigram');
}

export function parseTokenizerJson(text: string, file: string): TokenizerJson {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TokenizerFileError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (!isRecord(raw)) throw new TokenizerFileError(file, 'not a JSON object');
  const added = raw.added_tokens ?? [];
  if (!Array.isArray(added)) throw new TokenizerFileError(file, '"added_tokens" is not an array');
  const addedTokens = added.map((token: unknown, index): AddedTokenJson => {
    if (!isRecord(token) || typeof token.content !== 'string' || !Number.isInteger(token.id)) {
      throw new TokenizerFileError(file, `added_tokens[${index}] needs an integer "id" and a string "content"`);
    }
    return token as unknown as AddedTokenJson;
  });
  return {
    added_tokens: addedTokens,
    normalizer: component(file, 'normalizer', raw.normalizer, true),
    pre_tokenizer: component(file, 'pre_tokenizer', raw.pre_tokenizer, true),
    model: modelWithType(file, component(file, 'model', raw.model, false)!),
    post_processor: component(file, 'post_processor', raw.post_processor, true),
    decoder: component(file, 'decoder', raw.decoder, true),
  };
}

export function readTokenizerJson(file: string): TokenizerJson {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TokenizerFileError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseTokenizerJson(text, file);
}

/** Reads a JSON config file (tokenizer_config.json, special_tokens_map.json) if it exists. */
export function readJsonIfPresent(file: string): Record<string, unknown> | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TokenizerFileError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new TokenizerFileError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (!isRecord(value)) throw new TokenizerFileError(file, 'not a JSON object');
  return value;
}

/** Field readers for component specs: each throws naming the component and field when the value is malformed. */
export function fieldOf<T>(spec: ComponentJson, field: string, check: (v: unknown) => v is T, fallback?: T): T {
  const value = spec[field];
  if (value === undefined && fallback !== undefined) return fallback;
  if (!check(value)) throw new Error(`tokenizer ${spec.type}: field "${field}" is missing or malformed (${JSON.stringify(value)?.slice(0, 80)})`);
  return value;
}

export const isString = (v: unknown): v is string => typeof v === 'string';
export const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
export const isInteger = (v: unknown): v is number => Number.isInteger(v);
export const isArray = (v: unknown): v is unknown[] => Array.isArray(v);
export const isObject = (v: unknown): v is Record<string, unknown> => isRecord(v);
