// CLIP's tokenizer as FluxPipeline loads it: transformers' CLIPTokenizer (in transformers 5 the tokenizers-backed
// class; CLIPTokenizerFast is the same class). Byte-level BPE with the "</w>" end-of-word suffix over text that is
// NFC-normalised, whitespace-collapsed and lower-cased, split by CLIP's pattern, then wrapped in
// <|startoftext|> … <|endoftext|> and padded with the pad token to model_max_length (77).
//
// FLUX.1-dev's tokenizer/ holds vocab.json + merges.txt only; they are turned into the same description the
// tokenizer.json of other snapshots holds (what CLIPTokenizer.__init__ builds), so both load through one path.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type PromptTokens, tokenizePrompts } from './prompt-tokens';
import { Tokenizer } from './tokenizer';
import { appliesCleanUp, cleanUpTokenization, readTokenizerConfig, specialTokensOf } from './tokenizer-config';
import { type ComponentJson, type TokenizerJson, TokenizerFileError, readTokenizerJson } from './tokenizer-json';
import { pythonStrip } from './unicode';

/** CLIP's pre-tokenization pattern (CLIPTokenizer and the original openai/CLIP simple_tokenizer). */
export const CLIP_PATTERN = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/** CLIP's text length (position embeddings), used when tokenizer_config.json gives no model_max_length. */
export const CLIP_DEFAULT_MAX_LENGTH = 77;

const DEFAULTS = { bos: '<|startoftext|>', eos: '<|endoftext|>', unk: '<|endoftext|>', pad: '<|endoftext|>' };

function readVocab(file: string): Record<string, number> {
  let vocab: unknown;
  try {
    vocab = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TokenizerFileError(file, `cannot read the vocabulary (${(err as Error).message})`);
  }
  // Ids are checked one by one when the BPE model is built.
  if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) throw new TokenizerFileError(file, 'not a {token: id} object');
  return vocab as Record<string, number>;
}

/** merges.txt as tokenizers' BPE::read_file reads it: "#version" lines skipped, every other line "a b". */
function readMerges(file: string): [string, string][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TokenizerFileError(file, `cannot read the merges (${(err as Error).message})`);
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const merges: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.startsWith('#version')) return;
    const parts = line.split(' ');
    if (parts.length !== 2) throw new TokenizerFileError(file, `line ${i + 1} is not a merge "a b": ${JSON.stringify(line)}`);
    merges.push([parts[0], parts[1]]);
  });
  return merges;
}

/** The tokenizer.json description transformers' CLIPTokenizer builds from vocab.json + merges.txt. */
export function clipDescription(vocab: Record<string, number>, merges: [string, string][], tokens: { bos: string; eos: string; unk: string }): TokenizerJson {
  const idOf = (token: string): number => {
    const id = vocab[token];
    if (id === undefined) throw new Error(`CLIP vocabulary lacks the special token ${JSON.stringify(token)}`);
    return id;
  };
  const c = (spec: ComponentJson): ComponentJson => spec;
  return {
    added_tokens: [],
    normalizer: c({
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    }),
    pre_tokenizer: c({
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: CLIP_PATTERN }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    }),
    model: c({
      type: 'BPE',
      vocab,
      merges,
      dropout: null,
      unk_token: tokens.unk,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
    }),
    post_processor: c({
      type: 'RobertaProcessing',
      sep: [tokens.eos, idOf(tokens.eos)],
      cls: [tokens.bos, idOf(tokens.bos)],
      trim_offsets: false,
      add_prefix_space: false,
    }),
    decoder: c({ type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }),
  };
}

export class ClipTokenizer {
  private constructor(
    readonly tokenizer: Tokenizer,
    /** tokenizer.model_max_length: FluxPipeline's tokenizer_max_length (77). */
    readonly modelMaxLength: number,
    readonly bosTokenId: number,
    readonly eosTokenId: number,
    readonly padTokenId: number,
    private readonly endOfWordSuffix: string,
    private readonly cleanUpSpaces: boolean,
  ) {}

  /** Loads `dir` (a pipeline's tokenizer/): tokenizer.json when present, else vocab.json + merges.txt. */
  static fromDirectory(dir: string): ClipTokenizer {
    const config = readTokenizerConfig(dir);
    const tokens = {
      bos: config.bosToken ?? DEFAULTS.bos,
      eos: config.eosToken ?? DEFAULTS.eos,
      unk: config.unkToken ?? DEFAULTS.unk,
      pad: config.padToken ?? DEFAULTS.pad,
    };
    const jsonFile = join(dir, 'tokenizer.json');
    let description: TokenizerJson;
    if (existsSync(jsonFile)) description = readTokenizerJson(jsonFile);
    else if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
      description = clipDescription(readVocab(join(dir, 'vocab.json')), readMerges(join(dir, 'merges.txt')), tokens);
    } else {
      throw new TokenizerFileError(dir, 'no CLIP tokenizer here: expected tokenizer.json, or vocab.json and merges.txt');
    }
    if (description.model.type !== 'BPE') throw new TokenizerFileError(jsonFile, `a CLIP tokenizer is BPE, this one is ${description.model.type}`);
    const tokenizer = Tokenizer.fromJson(description, {
      configAddedTokens: config.addedTokensDecoder,
      specialTokens: specialTokensOf({ ...config, bosToken: tokens.bos, eosToken: tokens.eos, unkToken: tokens.unk, padToken: tokens.pad }),
    });
    const id = (token: string): number => {
      const value = tokenizer.tokenToId(token);
      if (value === undefined) throw new TokenizerFileError(dir, `special token ${JSON.stringify(token)} has no id`);
      return value;
    };
    const suffix = description.model.end_of_word_suffix;
    return new ClipTokenizer(
      tokenizer,
      config.modelMaxLength ?? CLIP_DEFAULT_MAX_LENGTH,
      id(tokens.bos),
      id(tokens.eos),
      id(tokens.pad),
      typeof suffix === 'string' ? suffix : '',
      appliesCleanUp(config, description.model.type),
    );
  }

  /** Token ids of one text with <|startoftext|> and <|endoftext|>, untruncated. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text);
  }

  /**
   * transformers' CLIPTokenizer.decode(ids) (skip_special_tokens=False): byte-level decoding, each "</w>" turned into
   * a space and the result stripped (CLIPTokenizer's wrapper around the backend decoder); transformers 5 skips
   * clean_up_tokenization for BPE whatever the config says.
   */
  decode(ids: Iterable<number>): string {
    let text = this.tokenizer.decode(ids);
    if (this.endOfWordSuffix !== '') text = pythonStrip(text.replaceAll(this.endOfWordSuffix, ' '));
    return this.cleanUpSpaces ? cleanUpTokenization(text) : text;
  }

  /**
   * FluxPipeline._get_clip_prompt_embeds' tokenization: ids padded/truncated to model_max_length, and diffusers'
   * warning text when a prompt was longer.
   */
  tokenize(prompts: readonly string[]): PromptTokens {
    return tokenizePrompts(
      { tokenizer: this.tokenizer, padTokenId: this.padTokenId, decode: (ids) => this.decode(ids) },
      prompts,
      this.modelMaxLength,
      this.modelMaxLength - 1,
      (removed) =>
        'The following part of your input was truncated because CLIP can only handle sequences up to' +
        ` ${this.modelMaxLength} tokens: ${removed}`,
    );
  }
}

export function loadClipTokenizer(dir: string): ClipTokenizer {
  return ClipTokenizer.fromDirectory(dir);
}
