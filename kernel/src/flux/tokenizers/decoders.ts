// Decoders of tokenizer.json (tokenizers/src/decoders): token strings back to text. The pipeline decodes only to
// print diffusers' truncation warning, which must show exactly what transformers' batch_decode shows.
import { byteLevelDecode } from './byte-level';
import { patternRegExp } from './normalizers';
import { type ComponentJson, fieldOf, isArray, isBoolean, isInteger, isString } from './tokenizer-json';

/** decode_chain: tokens in, tokens out; Decoder::decode joins the final list with no separator. */
export type Decoder = (tokens: string[]) => string[];

export function buildDecoder(spec: ComponentJson | null): Decoder | null {
  if (spec === null) return null;
  switch (spec.type) {
    case 'ByteLevel':
      return (tokens) => [byteLevelDecode(tokens)];
    case 'Metaspace': {
      const replacement = fieldOf(spec, 'replacement', isString);
      const scheme = spec.prepend_scheme ?? (fieldOf(spec, 'add_prefix_space', isBoolean, true) ? 'always' : 'never');
      // Every replacement character of the first token is dropped (not only a leading one), as in metaspace.rs.
      const dropInFirst = scheme !== 'never';
      return (tokens) =>
        tokens.map((token, i) => {
          let out = '';
          for (const ch of token) out += ch === replacement ? (i === 0 && dropInFirst ? '' : ' ') : ch;
          return out;
        });
    }
    case 'Sequence': {
      const steps = fieldOf(spec, 'decoders', isArray)
        .map((d) => buildDecoder(d as ComponentJson))
        .filter((d): d is Decoder => d !== null);
      return (tokens) => steps.reduce((acc, step) => step(acc), tokens);
    }
    case 'Replace': {
      const regex = patternRegExp(spec);
      const content = fieldOf(spec, 'content', isString);
      return (tokens) => tokens.map((t) => t.replace(regex, () => content));
    }
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Strip': {
      const content = fieldOf(spec, 'content', isString);
      const start = fieldOf(spec, 'start', isInteger);
      const stop = fieldOf(spec, 'stop', isInteger);
      return (tokens) =>
        tokens.map((token) => {
          const chars = [...token];
          let begin = 0;
          while (begin < start && begin < chars.length && chars[begin] === content) begin++;
          let end = chars.length;
          while (chars.length - end < stop && end > begin && chars[end - 1] === content) end--;
          return chars.slice(begin, end).join('');
        });
    }
    case 'ByteFallback':
      return (tokens) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = (): void => {
          if (bytes.length === 0) return;
          // Undecodable byte runs become one U+FFFD per byte in tokenizers' ByteFallback.
          try {
            out.push(new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes)));
          } catch {
            out.push(...bytes.map(() => '\ufffd'));
          }
          bytes = [];
        };
        for (const token of tokens) {
          const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
          if (m !== null) bytes.push(parseInt(m[1], 16));
          else {
            flush();
            out.push(token);
          }
        }
        flush();
        return out;
      };
    default:
      throw new Error(`tokenizer decoder "${spec.type}" is not supported (CLIP and T5 tokenizers do not use it)`);
  }
}
