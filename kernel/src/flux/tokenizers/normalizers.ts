// Normalizers of tokenizer.json (tokenizers/src/normalizers): each turns a string into its normalised form. Offsets
// are not tracked: the Flux pipeline needs ids, and decoding works from the vocabulary, not from the input.
import { PrecompiledCharsmap } from './precompiled';
import { type ComponentJson, fieldOf, isArray, isBoolean, isObject, isString } from './tokenizer-json';
import { compileTokenizerRegex, escapeRegExp, lowercaseCharwise, stripWhiteSpace } from './unicode';

export type Normalizer = (text: string) => string;

/** A `{"String": s}` or `{"Regex": r}` pattern (Replace normalizer, Split pre-tokenizer) as a global RegExp. */
export function patternRegExp(spec: ComponentJson, field = 'pattern'): RegExp {
  const pattern = fieldOf(spec, field, isObject);
  if (typeof pattern.String === 'string') return new RegExp(escapeRegExp(pattern.String), 'gu');
  if (typeof pattern.Regex === 'string') return compileTokenizerRegex(pattern.Regex);
  throw new Error(`tokenizer ${spec.type}: "${field}" must be {"String": ...} or {"Regex": ...}`);
}

/** tokenizers' StripAccents: drops combining marks (general category M), whatever came before. */
const COMBINING_MARKS = /\p{M}/gu;

export function buildNormalizer(spec: ComponentJson | null): Normalizer | null {
  if (spec === null) return null;
  switch (spec.type) {
    case 'Sequence': {
      const parts = fieldOf(spec, 'normalizers', isArray).map((part) => buildNormalizer(part as ComponentJson));
      const steps = parts.filter((p): p is Normalizer => p !== null);
      return (text) => steps.reduce((acc, step) => step(acc), text);
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = spec.type;
      return (text) => text.normalize(form);
    }
    case 'Lowercase':
      return lowercaseCharwise;
    case 'Replace': {
      const regex = patternRegExp(spec);
      const content = fieldOf(spec, 'content', isString);
      return (text) => text.replace(regex, () => content);
    }
    case 'Strip': {
      const left = fieldOf(spec, 'strip_left', isBoolean, true);
      const right = fieldOf(spec, 'strip_right', isBoolean, true);
      return (text) => stripWhiteSpace(text, left, right);
    }
    case 'StripAccents':
      return (text) => text.replace(COMBINING_MARKS, '');
    case 'Prepend': {
      const prepend = fieldOf(spec, 'prepend', isString);
      return (text) => (text.length > 0 ? prepend + text : text);
    }
    case 'Precompiled': {
      const charsmap = spec.precompiled_charsmap;
      // transformers treats an empty charsmap as "no normalisation" (SentencePieceExtractor: b'' becomes None).
      if (charsmap === null || charsmap === '' || charsmap === undefined) return null;
      if (!isString(charsmap)) throw new Error('tokenizer Precompiled: "precompiled_charsmap" must be a base64 string');
      const map = PrecompiledCharsmap.fromBase64(charsmap);
      return (text) => map.normalize(text);
    }
    default:
      throw new Error(`tokenizer normalizer "${spec.type}" is not supported (CLIP and T5 tokenizers do not use it)`);
  }
}
