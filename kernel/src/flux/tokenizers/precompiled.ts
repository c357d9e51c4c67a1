// SentencePiece's precompiled normalisation rules (nmt_nfkc for T5), as HF tokenizers' `Precompiled` normalizer
// applies them (spm_precompiled crate + tokenizers/src/normalizers/precompiled.rs).
//
// The charsmap is [u32 LE: trie byte size][trie: u32 LE units][replacement strings, each NUL-terminated]. The trie is
// a darts-clone double array over UTF-8 bytes whose leaf values are byte offsets of replacements. tokenizers walks
// the text by extended grapheme cluster: a cluster shorter than 6 bytes is first looked up whole, and if any prefix
// of it is a key, the whole cluster becomes the replacement of the *shortest* matching prefix (results[0] of a
// common-prefix search, with no check that it spans the cluster — a quirk kept deliberately, see the comment in
// precompiled.rs); otherwise each character is looked up on its own.

import { utf8ByteLength } from './unicode';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export class PrecompiledCharsmap {
  private readonly cache = new Map<string, string | null>();
  private readonly segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

  private constructor(
    private readonly units: Uint32Array,
    private readonly replacements: Uint8Array,
  ) {}

  static fromBytes(bytes: Uint8Array): PrecompiledCharsmap {
    if (bytes.length < 4) throw new Error(`precompiled charsmap of ${bytes.length} bytes has no header`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const trieBytes = view.getUint32(0, true);
    if (trieBytes % 4 !== 0 || 4 + trieBytes > bytes.length || trieBytes === 0) {
      throw new Error(`precompiled charsmap: trie size ${trieBytes} does not fit the ${bytes.length}-byte blob`);
    }
    const units = new Uint32Array(trieBytes / 4);
    for (let i = 0; i < units.length; i++) units[i] = view.getUint32(4 + 4 * i, true);
    const replacements = bytes.slice(4 + trieBytes);
    try {
      utf8Decoder.decode(replacements);
    } catch {
      throw new Error('precompiled charsmap: the replacement strings are not valid UTF-8');
    }
    return new PrecompiledCharsmap(units, replacements);
  }

  static fromBase64(base64: string): PrecompiledCharsmap {
    return PrecompiledCharsmap.fromBytes(Buffer.from(base64, 'base64'));
  }

  /** Byte offset of the replacement for the shortest key that prefixes `key`, or -1 (darts-clone unit layout). */
  private shortestPrefixValue(key: Uint8Array): number {
    const units = this.units;
    let pos = 0;
    let unit = units[0];
    pos ^= (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
    for (const c of key) {
      if (c === 0) break;
      pos ^= c;
      unit = units[pos];
      // label(): the low byte plus bit 31, which is set on value units so they never match a byte label.
      if (unit === undefined || (unit & 0x800000ff) >>> 0 !== c) return -1;
      pos ^= (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
      if ((unit >>> 8) & 1) return units[pos] & 0x7fffffff;
    }
    return -1;
  }

  /** The replacement for `chunk` (see the header for the prefix rule), or null when no key prefixes it. */
  transform(chunk: string): string | null {
    const cached = this.cache.get(chunk);
    if (cached !== undefined) return cached;
    const offset = this.shortestPrefixValue(utf8.encode(chunk));
    let result: string | null = null;
    if (offset >= 0) {
      let end = offset;
      while (end < this.replacements.length && this.replacements[end] !== 0) end++;
      result = utf8Decoder.decode(this.replacements.subarray(offset, end));
    }
    this.cache.set(chunk, result);
    return result;
  }

  private normalizeGrapheme(grapheme: string): string {
    if (utf8ByteLength(grapheme) < 6) {
      const whole = this.transform(grapheme);
      if (whole !== null) return whole;
    }
    if (grapheme.length === 1) return this.transform(grapheme) ?? grapheme;
    let out = '';
    for (const ch of grapheme) out += this.transform(ch) ?? ch;
    return out;
  }

  normalize(text: string): string {
    let out = '';
    if (/^[\x00-\x7f]*$/.test(text)) {
      // In ASCII text every character is its own grapheme cluster except CR LF (rule GB3).
      for (let i = 0; i < text.length; i++) {
        if (text.charCodeAt(i) === 0x0d && text.charCodeAt(i + 1) === 0x0a) {
          out += this.normalizeGrapheme('\r\n');
          i++;
        } else out += this.normalizeGrapheme(text[i]);
      }
      return out;
    }
    for (const { segment } of this.segmenter.segment(text)) out += this.normalizeGrapheme(segment);
    return out;
  }
}
