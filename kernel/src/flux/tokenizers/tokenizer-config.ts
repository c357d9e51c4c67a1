// The transformers-level settings of a tokenizer directory: tokenizer_config.json (special tokens, model_max_length,
// clean_up_tokenization_spaces, added_tokens_decoder) with special_tokens_map.json as the older fallback, and the
// decode clean-up transformers applies on top of the tokenizers library.
import { join } from 'node:path';
import type { AddedToken } from './added-tokens';
import { TokenizerFileError, readJsonIfPresent } from './tokenizer-json';

export interface TokenizerConfig {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly unkToken: string | null;
  readonly padToken: string | null;
  /** additional_special_tokens / extra_special_tokens (T5's <extra_id_N>). */
  readonly extraSpecialTokens: readonly string[];
  /** Added tokens listed by id in tokenizer_config.json, with their flags. */
  readonly addedTokensDecoder: readonly AddedToken[];
  readonly modelMaxLength: number | null;
  readonly cleanUpTokenizationSpaces: boolean;
}

function tokenContent(file: string, field: string, value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  throw new TokenizerFileError(file, `"${field}" is neither a string nor an AddedToken object`);
}

/** transformers' "no limit" sentinel (VERY_LARGE_INTEGER = int(1e30)) means the same as no value. */
const NO_LIMIT = 1e29;

export function readTokenizerConfig(dir: string): TokenizerConfig {
  const configFile = join(dir, 'tokenizer_config.json');
  const mapFile = join(dir, 'special_tokens_map.json');
  const config = readJsonIfPresent(configFile) ?? {};
  const map = readJsonIfPresent(mapFile) ?? {};
  const special = (field: string): string | null =>
    tokenContent(configFile, field, config[field]) ?? tokenContent(mapFile, field, map[field]);
  const extraField = config.extra_special_tokens ?? config.additional_special_tokens ?? map.additional_special_tokens ?? [];
  const extra = Array.isArray(extraField) ? extraField : Object.values(extraField as object);
  const extraSpecialTokens = extra.map((t, i) => tokenContent(configFile, `extra_special_tokens[${i}]`, t)!);
  const decoder = config.added_tokens_decoder ?? {};
  if (typeof decoder !== 'object' || Array.isArray(decoder)) throw new TokenizerFileError(configFile, '"added_tokens_decoder" is not an object');
  const addedTokensDecoder = Object.entries(decoder as Record<string, Record<string, unknown>>).map(([id, t]): AddedToken => {
    if (!/^\d+$/.test(id) || typeof t?.content !== 'string') throw new TokenizerFileError(configFile, `added_tokens_decoder["${id}"] is malformed`);
    const specialToken = t.special === true;
    return {
      id: Number(id),
      content: t.content,
      special: specialToken,
      normalized: typeof t.normalized === 'boolean' ? t.normalized : !specialToken,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
      singleWord: t.single_word === true,
    };
  });
  addedTokensDecoder.sort((a, b) => a.id - b.id);
  const maxLength = config.model_max_length;
  if (maxLength !== undefined && maxLength !== null && typeof maxLength !== 'number') {
    throw new TokenizerFileError(configFile, '"model_max_length" is not a number');
  }
  return {
    bosToken: special('bos_token'),
    eosToken: special('eos_token'),
    unkToken: special('unk_token'),
    padToken: special('pad_token'),
    extraSpecialTokens,
    addedTokensDecoder,
    modelMaxLength: typeof maxLength === 'number' && maxLength < NO_LIMIT ? maxLength : null,
    cleanUpTokenizationSpaces: config.clean_up_tokenization_spaces === true,
  };
}

/**
 * Whether transformers 5 applies clean_up_tokenization when decoding: only when the config asks for it and the model
 * is not BPE — for BPE tokenizers (CLIP's) it ignores the flag ("Ignoring clean_up_tokenization_spaces=True for BPE
 * tokenizer CLIPTokenizer", seen with transformers 5.17 on the fixtures).
 */
export function appliesCleanUp(config: TokenizerConfig, modelType: string): boolean {
  return config.cleanUpTokenizationSpaces && modelType !== 'BPE';
}

/** transformers' clean_up_tokenization: removes the spaces decoding leaves before punctuation and contractions. */
export function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

/** The special tokens transformers makes sure the backend knows, in the order it adds them. */
export function specialTokensOf(config: TokenizerConfig): string[] {
  const all = [config.bosToken, config.eosToken, config.unkToken, config.padToken, ...config.extraSpecialTokens];
  return [...new Set(all.filter((t): t is string => t !== null))];
}
