// Character classes and string operations with the exact semantics of the reference stack (HF tokenizers in
// Rust with Oniguruma regexes, and CPython for the few steps transformers does in Python). JavaScript's own
// \s, \w, toLowerCase() and trim() differ from those in small but token-changing ways, noted where used.

/**
 * The Unicode White_Space property, as a regex class body. Oniguruma's \s (tokenizers' Regex patterns) and Rust's
 * char::is_whitespace (WhitespaceSplit, Strip) both mean exactly this set; JavaScript's \s adds U+FEFF and lacks
 * U+0085, so it is never used for tokenization.
 */
export const WHITE_SPACE_CLASS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Oniguruma's Unicode \w: Letter, Mark, Decimal_Number, Connector_Punctuation (JavaScript's \w is ASCII-only). */
const WORD_CLASS = '\\p{L}\\p{M}\\p{Nd}\\p{Pc}';

export function isWhiteSpace(cp: number): boolean {
  return (
    (cp >= 0x09 && cp <= 0x0d) ||
    cp === 0x20 ||
    cp === 0x85 ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** CPython's str.isspace set (what str.strip() removes): White_Space plus the separators U+001C..U+001F. */
function isPythonSpace(cp: number): boolean {
  return isWhiteSpace(cp) || (cp >= 0x1c && cp <= 0x1f);
}

/** CPython's `str.strip()` with no argument. */
export function pythonStrip(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isPythonSpace(text.charCodeAt(start))) start++;
  while (end > start && isPythonSpace(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

/** Strips Rust-whitespace (White_Space) from either end, as tokenizers' Strip normalizer does. */
export function stripWhiteSpace(text: string, left: boolean, right: boolean): string {
  let start = 0;
  let end = text.length;
  if (left) while (start < end && isWhiteSpace(text.charCodeAt(start))) start++;
  if (right) while (end > start && isWhiteSpace(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

const ASCII_ONLY = /^[\x00-\x7f]*$/;

/**
 * Lower-cases character by character, as tokenizers' Lowercase normalizer (Rust char::to_lowercase) does. The
 * difference from String.prototype.toLowerCase() is the context rule for final sigma: JavaScript turns a word-final
 * 'Σ' into 'ς', Rust always into 'σ'. Every other mapping is context-free, so only strings holding 'Σ' need the
 * per-character path.
 */
export function lowercaseCharwise(text: string): string {
  if (ASCII_ONLY.test(text) || !text.includes('\u03a3')) return text.toLowerCase();
  let out = '';
  for (const ch of text) out += ch === '\u03a3' ? '\u03c3' : ch.toLowerCase();
  return out;
}

/** JavaScript's regex syntax characters: the only ones that may be escaped outside a class under the u flag. */
const SYNTAX_CHARACTERS = new Set('^$\\.*+?()[]{}|/'.split(''));

/**
 * Compiles an Oniguruma pattern (as tokenizers' `{"Regex": ...}` patterns are written) into an equivalent global
 * Unicode JavaScript RegExp: \s, \S, \w, \W, \d, \D get their Unicode meanings, and identity escapes of
 * punctuation that the u flag rejects (\', \<) become plain characters. Constructs with no faithful translation
 * (nested classes, \S or \W inside a class) are refused rather than approximated.
 */
export function compileTokenizerRegex(pattern: string): RegExp {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === '\\') {
      const next = pattern[++i];
      if (next === undefined) throw new Error(`tokenizer regex ${JSON.stringify(pattern)} ends with a lone backslash`);
      const refuse = (): never => {
        throw new Error(`tokenizer regex ${JSON.stringify(pattern)}: \\${next} inside a character class is not supported`);
      };
      switch (next) {
        case 's':
          out += inClass ? WHITE_SPACE_CLASS : `[${WHITE_SPACE_CLASS}]`;
          break;
        case 'S':
          if (inClass) refuse();
          out += `[^${WHITE_SPACE_CLASS}]`;
          break;
        case 'w':
          out += inClass ? WORD_CLASS : `[${WORD_CLASS}]`;
          break;
        case 'W':
          if (inClass) refuse();
          out += `[^${WORD_CLASS}]`;
          break;
        case 'd':
          out += '\\p{Nd}';
          break;
        case 'D':
          if (inClass) refuse();
          out += '\\P{Nd}';
          break;
        default:
          if (/[0-9A-Za-z]/.test(next) || SYNTAX_CHARACTERS.has(next) || (inClass && next === '-')) out += `\\${next}`;
          else out += next;
      }
      continue;
    }
    if (ch === '[') {
      if (inClass) throw new Error(`tokenizer regex ${JSON.stringify(pattern)}: nested character classes are not supported`);
      inClass = true;
      out += ch;
      if (pattern[i + 1] === '^') out += pattern[++i];
      continue;
    }
    if (ch === ']' && inClass) inClass = false;
    out += ch;
  }
  try {
    return new RegExp(out, 'gu');
  } catch (err) {
    throw new Error(`tokenizer regex ${JSON.stringify(pattern)} cannot be compiled: ${(err as Error).message}`);
  }
}

/** Escapes a literal string for use inside a RegExp. */
export function escapeRegExp(literal: string): string {
  return literal.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

export function utf8ByteLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
