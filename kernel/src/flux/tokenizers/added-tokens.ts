// Added (mostly special) tokens, as tokenizers' AddedVocabulary handles them: before normalisation the raw text is
// cut around every occurrence of a non-normalized added token (leftmost match, longest on ties, like its
// Aho-Corasick LeftmostLongest automaton), each occurrence becoming that token's id directly; normalized added tokens
// are then matched the same way in each normalised segment. `<|endoftext|>` typed in a CLIP prompt and `</s>` in a
// T5 prompt are therefore single ids, exactly as in transformers.
import type { AddedTokenJson } from './tokenizer-json';
import { isWhiteSpace } from './unicode';

export interface AddedToken {
  readonly id: number;
  readonly content: string;
  readonly special: boolean;
  readonly normalized: boolean;
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  readonly singleWord: boolean;
}

export function addedTokenFromJson(json: AddedTokenJson): AddedToken {
  const special = json.special ?? false;
  return {
    id: json.id,
    content: json.content,
    special,
    // tokenizers' AddedToken default: special tokens are matched on raw text, others on normalised text.
    normalized: json.normalized ?? !special,
    lstrip: json.lstrip ?? false,
    rstrip: json.rstrip ?? false,
    singleWord: json.single_word ?? false,
  };
}

/** A stretch of text still to be tokenised, or an added token's id. `start` is its offset in the split text. */
export type Segment = { readonly text: string; readonly start: number } | { readonly id: number; readonly start: number };

/** tokenizers' is_word_character for single_word tokens: alphanumeric or '_'. */
const WORD_CHARACTER = /[\p{Alphabetic}\p{Nd}\p{Nl}\p{No}_]/u;

class Matcher {
  private readonly byFirstUnit = new Map<number, AddedToken[]>();

  constructor(tokens: readonly AddedToken[]) {
    for (const token of tokens) {
      if (token.content.length === 0) continue;
      const unit = token.content.charCodeAt(0);
      const list = this.byFirstUnit.get(unit) ?? [];
      list.push(token);
      this.byFirstUnit.set(unit, list);
    }
    for (const list of this.byFirstUnit.values()) list.sort((a, b) => b.content.length - a.content.length);
  }

  get empty(): boolean {
    return this.byFirstUnit.size === 0;
  }

  split(text: string, offset: number): Segment[] {
    const out: Segment[] = [];
    let textStart = 0;
    for (let i = 0; i < text.length; ) {
      const match = this.matchAt(text, i);
      if (match === null) {
        i++;
        continue;
      }
      let start = i;
      let end = i + match.content.length;
      if (match.lstrip) while (start > textStart && isWhiteSpace(text.charCodeAt(start - 1))) start--;
      if (match.rstrip) while (end < text.length && isWhiteSpace(text.charCodeAt(end))) end++;
      if (start > textStart) out.push({ text: text.slice(textStart, start), start: offset + textStart });
      out.push({ id: match.id, start: offset + start });
      textStart = end;
      i = end;
    }
    if (textStart < text.length) out.push({ text: text.slice(textStart), start: offset + textStart });
    return out;
  }

  private matchAt(text: string, i: number): AddedToken | null {
    const candidates = this.byFirstUnit.get(text.charCodeAt(i));
    if (candidates === undefined) return null;
    for (const token of candidates) {
      if (!text.startsWith(token.content, i)) continue;
      if (token.singleWord) {
        const before = i > 0 ? String.fromCodePoint(text.codePointAt(i - 1)!) : '';
        const after = text.slice(i + token.content.length, i + token.content.length + 1);
        if ((before !== '' && WORD_CHARACTER.test(before)) || (after !== '' && WORD_CHARACTER.test(after))) continue;
      }
      return token;
    }
    return null;
  }
}

export class AddedVocabulary {
  private readonly byId = new Map<number, AddedToken>();
  private readonly byContent = new Map<string, AddedToken>();
  private readonly raw: Matcher;
  private readonly normalizedMatcher: Matcher;

  constructor(readonly tokens: readonly AddedToken[]) {
    for (const token of tokens) {
      this.byId.set(token.id, token);
      this.byContent.set(token.content, token);
    }
    this.raw = new Matcher(tokens.filter((t) => !t.normalized));
    this.normalizedMatcher = new Matcher(tokens.filter((t) => t.normalized));
  }

  tokenToId(content: string): number | undefined {
    return this.byContent.get(content)?.id;
  }

  idToToken(id: number): string | undefined {
    return this.byId.get(id)?.content;
  }

  isSpecial(id: number): boolean {
    return this.byId.get(id)?.special ?? false;
  }

  /** Splits raw text on non-normalized added tokens, normalises the rest, then splits on normalized ones. */
  extractAndNormalize(text: string, normalize: ((s: string) => string) | null): Segment[] {
    const out: Segment[] = [];
    for (const segment of this.raw.split(text, 0)) {
      if ('id' in segment) {
        out.push(segment);
        continue;
      }
      const normalized = normalize === null ? segment.text : normalize(segment.text);
      if (this.normalizedMatcher.empty) out.push({ text: normalized, start: segment.start });
      else out.push(...this.normalizedMatcher.split(normalized, segment.start));
    }
    return out;
  }
}
