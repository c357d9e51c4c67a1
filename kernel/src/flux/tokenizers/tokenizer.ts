// A tokenizer assembled from a tokenizer.json description, running the pipeline of tokenizers' TokenizerImpl:
// added-token extraction → normalizer → pre-tokenizer → model (BPE or Unigram) → truncation (room kept for the
// post-processor's special tokens) → post-processor → padding. Both Flux tokenizers are instances of this class; the
// CLIP one may be described by vocab.json + merges.txt instead, converted to the same description first.
import { AddedVocabulary, addedTokenFromJson, type AddedToken } from './added-tokens';
import { BpeModel } from './bpe';
import { buildDecoder, type Decoder } from './decoders';
import { buildNormalizer, type Normalizer } from './normalizers';
import { buildPostProcessor, type PostProcessor } from './post-processors';
import { buildPreTokenizer, type Piece, type PreTokenizer } from './pre-tokenizers';
import type { TokenizerJson } from './tokenizer-json';
import { UnigramModel } from './unigram';

export type TokenizerModel = BpeModel | UnigramModel;

export interface PaddedBatch {
  /** One row per text, all of the same length. */
  readonly inputIds: Int32Array[];
  /** 1 where inputIds holds a token, 0 where it holds padding. */
  readonly attentionMask: Int32Array[];
}

export class Tokenizer {
  private constructor(
    readonly model: TokenizerModel,
    readonly addedVocabulary: AddedVocabulary,
    private readonly normalizer: Normalizer | null,
    private readonly preTokenizer: PreTokenizer | null,
    private readonly postProcessor: PostProcessor | null,
    private readonly decoder: Decoder | null,
  ) {}

  /**
   * Builds the tokenizer a tokenizer.json describes. transformers also registers the added tokens of
   * tokenizer_config.json (`configAddedTokens`, which take precedence: its model classes rebuild the backend from the
   * vocabulary and re-add them) and the named special tokens (`specialTokens`), each at its vocabulary id or the next
   * free one; a content already registered keeps its first entry, as tokenizers' add_tokens ignores repeats.
   */
  static fromJson(
    json: TokenizerJson,
    options: { readonly configAddedTokens?: readonly AddedToken[]; readonly specialTokens?: readonly string[] } = {},
  ): Tokenizer {
    const model = buildModel(json);
    const added: AddedToken[] = [];
    const seen = new Set<string>();
    const register = (token: AddedToken): void => {
      if (seen.has(token.content) || token.content.length === 0) return;
      seen.add(token.content);
      added.push(token);
    };
    (options.configAddedTokens ?? []).forEach(register);
    json.added_tokens.map(addedTokenFromJson).forEach(register);
    let nextId = Math.max(model.vocabSize, ...added.map((t) => t.id + 1));
    for (const content of options.specialTokens ?? []) {
      if (seen.has(content)) continue;
      const id = model.tokenToId(content) ?? nextId++;
      register({ id, content, special: true, normalized: false, lstrip: false, rstrip: false, singleWord: false });
    }
    return new Tokenizer(
      model,
      new AddedVocabulary(added),
      buildNormalizer(json.normalizer),
      buildPreTokenizer(json.pre_tokenizer),
      buildPostProcessor(json.post_processor),
      buildDecoder(json.decoder),
    );
  }

  /** Number of special tokens the post-processor adds to one sequence. */
  get specialTokenCount(): number {
    return this.postProcessor?.addedCount ?? 0;
  }

  tokenToId(token: string): number | undefined {
    return this.addedVocabulary.tokenToId(token) ?? this.model.tokenToId(token);
  }

  idToToken(id: number): string | undefined {
    return this.addedVocabulary.idToToken(id) ?? this.model.idToToken(id);
  }

  /** The model's ids for `text`, before truncation and special tokens. */
  encodeContent(text: string): number[] {
    const ids: number[] = [];
    for (const segment of this.addedVocabulary.extractAndNormalize(text, this.normalizer)) {
      if ('id' in segment) {
        ids.push(segment.id);
        continue;
      }
      let pieces: Piece[] = [{ text: segment.text, first: segment.start === 0 }];
      if (this.preTokenizer !== null) pieces = this.preTokenizer(pieces);
      for (const piece of pieces) {
        if (piece.text.length > 0) for (const id of this.model.tokenize(piece.text)) ids.push(id);
      }
    }
    return ids;
  }

  /**
   * One sequence as transformers' __call__ gives it with add_special_tokens=True: truncated to `maxLength` (the
   * special tokens' room reserved first, tokens kept from the start) when given, then wrapped in special tokens.
   */
  encode(text: string, maxLength?: number): number[] {
    let content = this.encodeContent(text);
    if (maxLength !== undefined) {
      const room = maxLength - this.specialTokenCount;
      if (room < 0) throw new Error(`max_length ${maxLength} leaves no room for the ${this.specialTokenCount} special tokens`);
      if (content.length > room) content = content.slice(0, room);
    }
    return this.postProcessor === null ? content : this.postProcessor.process(content);
  }

  /**
   * A batch as transformers returns it: `padding: 'max_length'` pads (right) every row to `maxLength`,
   * `'longest'` to the longest row; `truncate` cuts rows to `maxLength` first.
   */
  encodeBatch(
    texts: readonly string[],
    options: { readonly padding: 'max_length' | 'longest'; readonly maxLength?: number; readonly truncate: boolean; readonly padId: number },
  ): PaddedBatch {
    if ((options.padding === 'max_length' || options.truncate) && options.maxLength === undefined) {
      throw new Error('encodeBatch: padding to max_length or truncating needs maxLength');
    }
    const rows = texts.map((t) => this.encode(t, options.truncate ? options.maxLength : undefined));
    const longest = rows.reduce((m, r) => Math.max(m, r.length), 0);
    const width = options.padding === 'max_length' ? Math.max(options.maxLength!, longest) : longest;
    const inputIds = rows.map((row) => {
      const ids = new Int32Array(width).fill(options.padId);
      ids.set(row);
      return ids;
    });
    const attentionMask = rows.map((row) => {
      const mask = new Int32Array(width);
      mask.fill(1, 0, row.length);
      return mask;
    });
    return { inputIds, attentionMask };
  }

  /** tokenizers' Tokenizer::decode: ids to tokens (added vocabulary first), then the decoder. */
  decode(ids: Iterable<number>, skipSpecialTokens = false): string {
    const tokens: string[] = [];
    for (const id of ids) {
      if (skipSpecialTokens && this.addedVocabulary.isSpecial(id)) continue;
      const token = this.idToToken(id);
      if (token !== undefined) tokens.push(token);
    }
    return this.decoder === null ? tokens.join(' ') : this.decoder(tokens).join('');
  }
}

function buildModel(json: TokenizerJson): TokenizerModel {
  switch (json.model.type) {
    case 'BPE':
      return BpeModel.fromJson(json.model);
    case 'Unigram':
      return UnigramModel.fromJson(json.model);
    default:
      throw new Error(`tokenizer model "${json.model.type}" is not supported (CLIP uses BPE, T5 Unigram)`);
  }
}
