// The GPT-2 byte-to-unicode table that byte-level BPE (CLIP's tokenizer) works in: every UTF-8 byte becomes one
// visible character, so the BPE vocabulary never holds raw control bytes or spaces. Printable Latin-1 bytes map to
// themselves; the other 68 bytes map, in byte order, to U+0100 onwards.

function buildTable(): string[] {
  const table = new Array<string>(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

export const BYTE_TO_CHAR: readonly string[] = buildTable();

export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((ch, b) => [ch, b]));

const utf8 = new TextEncoder();
const lossyUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** The byte-level form of a string: its UTF-8 bytes, each as its table character. */
export function byteLevelEncode(text: string): string {
  let ascii = true;
  for (let i = 0; i < text.length && ascii; i++) ascii = text.charCodeAt(i) < 0x80;
  const bytes = ascii ? null : utf8.encode(text);
  let out = '';
  if (bytes === null) for (let i = 0; i < text.length; i++) out += BYTE_TO_CHAR[text.charCodeAt(i)];
  else for (const b of bytes) out += BYTE_TO_CHAR[b];
  return out;
}

/**
 * tokenizers' ByteLevel decoder: all tokens' characters mapped back to bytes (a token holding a character outside
 * the table contributes its own UTF-8 bytes instead), then one lossy UTF-8 decode of the whole, so a multi-byte
 * character split across tokens is rejoined and a cut one becomes U+FFFD (Rust's from_utf8_lossy, which replaces
 * maximal invalid subparts exactly as the WHATWG decoder does).
 */
export function byteLevelDecode(tokens: readonly string[]): string {
  const bytes: number[] = [];
  for (const token of tokens) {
    const mapped: number[] = [];
    let ok = true;
    for (const ch of token) {
      const b = CHAR_TO_BYTE.get(ch);
      if (b === undefined) {
        ok = false;
        break;
      }
      mapped.push(b);
    }
    if (ok) bytes.push(...mapped);
    else bytes.push(...utf8.encode(token));
  }
  return lossyUtf8.decode(Uint8Array.from(bytes));
}
