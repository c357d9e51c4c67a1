// Pre-tokenizers of tokenizer.json (tokenizers/src/pre_tokenizers): each splits every piece into smaller pieces,
// which the model then tokenises one by one. Empty pieces are dropped after every split, as PreTokenizedString does.
import { byteLevelEncode } from './byte-level';
import { patternRegExp } from './normalizers';
import { type ComponentJson, fieldOf, isArray, isBoolean, isString } from './tokenizer-json';
import { WHITE_SPACE_CLASS, compileTokenizerRegex, escapeRegExp } from './unicode';

export interface Piece {
  readonly text: string;
  /**
   * Whether the piece starts the whole input (original offset 0); Metaspace's prepend_scheme "first" reads it. It is
   * tracked through splits in normalised offsets, which equal original ones unless a normalizer deleted or inserted
   * characters at the very start.
   */
  readonly first: boolean;
}

export type PreTokenizer = (pieces: Piece[]) => Piece[];

export type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';

interface Span {
  start: number;
  end: number;
  isMatch: boolean;
}

/** Cuts `text` into alternating non-match/match spans covering it (tokenizers' Pattern::find_matches). */
function findMatches(text: string, regex: RegExp): Span[] {
  const spans: Span[] = [];
  let previous = 0;
  regex.lastIndex = 0;
  for (const m of text.matchAll(regex)) {
    const start = m.index!;
    const end = start + m[0].length;
    if (start > previous) spans.push({ start: previous, end: start, isMatch: false });
    spans.push({ start, end, isMatch: true });
    previous = end;
  }
  if (previous < text.length) spans.push({ start: previous, end: text.length, isMatch: false });
  return spans;
}

/** NormalizedString::split: spans become pieces according to the delimiter behaviour; matches are "delimiters". */
export function splitPiece(piece: Piece, regex: RegExp, behavior: SplitBehavior, invert = false): Piece[] {
  let spans = findMatches(piece.text, regex);
  if (invert) spans = spans.map((s) => ({ ...s, isMatch: !s.isMatch }));
  let kept: { start: number; end: number }[];
  switch (behavior) {
    case 'Removed':
      kept = spans.filter((s) => !s.isMatch);
      break;
    case 'Isolated':
      kept = spans;
      break;
    case 'MergedWithPrevious': {
      kept = [];
      let previousMatch = false;
      for (const s of spans) {
        if (s.isMatch && !previousMatch && kept.length > 0) kept[kept.length - 1].end = s.end;
        else kept.push({ start: s.start, end: s.end });
        previousMatch = s.isMatch;
      }
      break;
    }
    case 'MergedWithNext': {
      kept = [];
      let previousMatch = false;
      for (let i = spans.length - 1; i >= 0; i--) {
        const s = spans[i];
        if (s.isMatch && !previousMatch && kept.length > 0) kept[kept.length - 1].start = s.start;
        else kept.push({ start: s.start, end: s.end });
        previousMatch = s.isMatch;
      }
      kept.reverse();
      break;
    }
    case 'Contiguous': {
      kept = [];
      let previousMatch = false;
      for (const s of spans) {
        if (s.isMatch === previousMatch && kept.length > 0) kept[kept.length - 1].end = s.end;
        else kept.push({ start: s.start, end: s.end });
        previousMatch = s.isMatch;
      }
      break;
    }
  }
  const out: Piece[] = [];
  for (const { start, end } of kept) {
    if (end > start) out.push({ text: piece.text.slice(start, end), first: piece.first && start === 0 });
  }
  return out;
}

function splitAll(pieces: Piece[], split: (piece: Piece) => Piece[]): Piece[] {
  const out: Piece[] = [];
  for (const piece of pieces) for (const p of split(piece)) if (p.text.length > 0) out.push(p);
  return out;
}

const WHITE_SPACE = new RegExp(`[${WHITE_SPACE_CLASS}]`, 'gu');

/** tokenizers' Whitespace pre-tokenizer pattern `\w+|[^\w\s]+`, with Oniguruma's Unicode \w and \s. */
const WORDS_OR_PUNCTUATION = compileTokenizerRegex('\\w+|[^\\w\\s]+');

/** GPT-2's pattern, which tokenizers' ByteLevel pre-tokenizer splits with when use_regex is on. */
const GPT2_PATTERN = compileTokenizerRegex("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");

const BEHAVIORS: readonly SplitBehavior[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

function behaviorOf(spec: ComponentJson): SplitBehavior {
  const value = fieldOf(spec, 'behavior', isString);
  // Serialised behaviours are PascalCase; Python callers may have written the lower-case spelling.
  const match = BEHAVIORS.find((b) => b.toLowerCase() === value.toLowerCase().replace(/_/g, ''));
  if (match === undefined) throw new Error(`tokenizer Split: unknown behavior ${JSON.stringify(value)}`);
  return match;
}

/** Metaspace's prepend scheme; files written before tokenizers 0.19 carry `add_prefix_space` instead. */
function prependSchemeOf(spec: ComponentJson): 'always' | 'never' | 'first' {
  const scheme = spec.prepend_scheme;
  if (scheme === 'always' || scheme === 'never' || scheme === 'first') return scheme;
  if (scheme !== undefined) throw new Error(`tokenizer Metaspace: unknown prepend_scheme ${JSON.stringify(scheme)}`);
  return fieldOf(spec, 'add_prefix_space', isBoolean, true) ? 'always' : 'never';
}

export function buildPreTokenizer(spec: ComponentJson | null): PreTokenizer | null {
  if (spec === null) return null;
  switch (spec.type) {
    case 'Sequence': {
      const steps = fieldOf(spec, 'pretokenizers', isArray)
        .map((part) => buildPreTokenizer(part as ComponentJson))
        .filter((p): p is PreTokenizer => p !== null);
      return (pieces) => steps.reduce((acc, step) => step(acc), pieces);
    }
    case 'Split': {
      const regex = patternRegExp(spec);
      const behavior = behaviorOf(spec);
      const invert = fieldOf(spec, 'invert', isBoolean, false);
      return (pieces) => splitAll(pieces, (p) => splitPiece(p, regex, behavior, invert));
    }
    case 'WhitespaceSplit':
      return (pieces) => splitAll(pieces, (p) => splitPiece(p, WHITE_SPACE, 'Removed'));
    case 'Whitespace':
      return (pieces) => splitAll(pieces, (p) => splitPiece(p, WORDS_OR_PUNCTUATION, 'Removed', true));
    case 'ByteLevel': {
      const addPrefixSpace = fieldOf(spec, 'add_prefix_space', isBoolean, true);
      const useRegex = fieldOf(spec, 'use_regex', isBoolean, true);
      return (pieces) =>
        splitAll(pieces, (piece) => {
          const spaced = addPrefixSpace && !piece.text.startsWith(' ') ? { ...piece, text: ` ${piece.text}` } : piece;
          const parts = useRegex ? splitPiece(spaced, GPT2_PATTERN, 'Isolated') : [spaced];
          return parts.map((p) => ({ text: byteLevelEncode(p.text), first: p.first }));
        });
    }
    case 'Metaspace': {
      const replacement = fieldOf(spec, 'replacement', isString);
      if ([...replacement].length !== 1) throw new Error('tokenizer Metaspace: "replacement" must be one character');
      const scheme = prependSchemeOf(spec);
      const split = fieldOf(spec, 'split', isBoolean, true);
      const replacementRegex = new RegExp(escapeRegExp(replacement), 'gu');
      return (pieces) =>
        splitAll(pieces, (piece) => {
          let text = piece.text.replaceAll(' ', replacement);
          if ((scheme === 'always' || (scheme === 'first' && piece.first)) && !text.startsWith(replacement)) {
            text = replacement + text;
          }
          const replaced = { text, first: piece.first };
          return split ? splitPiece(replaced, replacementRegex, 'MergedWithNext') : [replaced];
        });
    }
    default:
      throw new Error(`tokenizer pre-tokenizer "${spec.type}" is not supported (CLIP and T5 tokenizers do not use it)`);
  }
}
