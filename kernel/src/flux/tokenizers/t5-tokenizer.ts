// T5's tokenizer as FluxPipeline loads it (transformers' T5Tokenizer, tokenizers-backed in transformers 5): a Unigram
// model read from tokenizer.json with the pipeline that file describes — for T5 v1.1 / FLUX.1-dev: the Precompiled
// nmt_nfkc normalizer, WhitespaceSplit + Metaspace("▁", prepend always), and a template appending </s>.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CLIP_DEFAULT_MAX_LENGTH } from './clip-tokenizer';
import { type PromptTokens, tokenizePrompts } from './prompt-tokens';
import { Tokenizer } from './tokenizer';
import { appliesCleanUp, cleanUpTokenization, readTokenizerConfig, specialTokensOf } from './tokenizer-config';
import { TokenizerFileError, readTokenizerJson } from './tokenizer-json';

/** FluxPipeline.check_inputs refuses longer T5 sequences. */
export const T5_MAX_SEQUENCE_LENGTH = 512;

export class T5Tokenizer {
  private constructor(
    readonly tokenizer: Tokenizer,
    readonly eosTokenId: number,
    readonly padTokenId: number,
    /** tokenizer_2.model_max_length (512 for T5 v1.1); FluxPipeline does not read it. */
    readonly modelMaxLength: number | null,
    private readonly cleanUpSpaces: boolean,
  ) {}

  /** Loads `dir` (a pipeline's tokenizer_2/), which must hold tokenizer.json. */
  static fromDirectory(dir: string): T5Tokenizer {
    const jsonFile = join(dir, 'tokenizer.json');
    if (!existsSync(jsonFile)) {
      const spm = existsSync(join(dir, 'spiece.model')) ? ' (spiece.model alone is not read: it needs the SentencePiece converter)' : '';
      throw new TokenizerFileError(dir, `no tokenizer.json for the T5 tokenizer${spm}`);
    }
    const config = readTokenizerConfig(dir);
    const description = readTokenizerJson(jsonFile);
    if (description.model.type !== 'Unigram') throw new TokenizerFileError(jsonFile, `a T5 tokenizer is Unigram, this one is ${description.model.type}`);
    const tokenizer = Tokenizer.fromJson(description, {
      configAddedTokens: config.addedTokensDecoder,
      specialTokens: specialTokensOf({ ...config, eosToken: config.eosToken ?? '</s>', padToken: config.padToken ?? '<pad>', unkToken: config.unkToken ?? '<unk>' }),
    });
    const id = (token: string): number => {
      const value = tokenizer.tokenToId(token);
      if (value === undefined) throw new TokenizerFileError(dir, `special token ${JSON.stringify(token)} has no id`);
      return value;
    };
    return new T5Tokenizer(
      tokenizer,
      id(config.eosToken ?? '</s>'),
      id(config.padToken ?? '<pad>'),
      config.modelMaxLength,
      appliesCleanUp(config, description.model.type),
    );
  }

  /** Token ids of one text with the trailing </s>, untruncated. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text);
  }

  /** transformers' decode(ids) with skip_special_tokens=False (Metaspace decoding, then the config's clean-up). */
  decode(ids: Iterable<number>): string {
    const text = this.tokenizer.decode(ids);
    return this.cleanUpSpaces ? cleanUpTokenization(text) : text;
  }

  /**
   * FluxPipeline._get_t5_prompt_embeds' tokenization: ids padded/truncated to `maxSequenceLength`, and diffusers'
   * warning text when a prompt was longer. `clipMaxLength` is the CLIP tokenizer's model_max_length, which diffusers
   * uses to slice the removed text (see prompt-tokens.ts).
   */
  tokenize(prompts: readonly string[], maxSequenceLength: number, clipMaxLength = CLIP_DEFAULT_MAX_LENGTH): PromptTokens {
    if (maxSequenceLength > T5_MAX_SEQUENCE_LENGTH) {
      throw new Error(`\`max_sequence_length\` cannot be greater than ${T5_MAX_SEQUENCE_LENGTH} but is ${maxSequenceLength}`);
    }
    return tokenizePrompts(
      { tokenizer: this.tokenizer, padTokenId: this.padTokenId, decode: (ids) => this.decode(ids) },
      prompts,
      maxSequenceLength,
      clipMaxLength - 1,
      (removed) =>
        'The following part of your input was truncated because `max_sequence_length` is set to ' +
        ` ${maxSequenceLength} tokens: ${removed}`,
    );
  }
}

export function loadT5Tokenizer(dir: string): T5Tokenizer {
  return T5Tokenizer.fromDirectory(dir);
}
