// Unigram language-model tokenizer (T5's), as tokenizers' Unigram::encode_optimized runs it: a Viterbi pass over
// character positions where every vocabulary piece starting at a position is an edge weighted by its log
// probability; a character no single-character piece covers gets an unk edge scored min_score - 10. Ties keep the
// first candidate seen (pieces in increasing length). Consecutive unk pieces are fused into one (fuse_unk is always
// on for Unigram), then looked up again: byte fallback (<0xXX> pieces) applies to what has no id.
import { type ComponentJson, fieldOf, isArray, isBoolean } from './tokenizer-json';

/** K_UNK_PENALTY in tokenizers/src/models/unigram/model.rs. */
const UNK_PENALTY = 10.0;

interface TrieNode {
  readonly children: Map<number, TrieNode>;
  id: number;
}

export class UnigramModel {
  private readonly tokenIds = new Map<string, number>();
  private readonly pieces: string[];
  private readonly scores: Float64Array;
  private readonly root: TrieNode = { children: new Map(), id: -1 };
  private readonly unkScore: number;
  private readonly cache = new Map<string, number[]>();

  constructor(
    vocab: readonly (readonly [string, number])[],
    readonly unkId: number | null,
    readonly byteFallback: boolean,
  ) {
    if (vocab.length === 0) throw new Error('Unigram vocabulary is empty');
    if (unkId !== null && (unkId < 0 || unkId >= vocab.length)) throw new Error(`Unigram unk_id ${unkId} is outside the ${vocab.length}-piece vocabulary`);
    this.pieces = vocab.map(([piece]) => piece);
    this.scores = Float64Array.from(vocab.map(([, score]) => score));
    let minScore = Infinity;
    vocab.forEach(([piece, score], id) => {
      this.tokenIds.set(piece, id);
      if (score < minScore) minScore = score;
    });
    this.unkScore = minScore - UNK_PENALTY;
    // Trie nodes hold the id the token map gives the piece (the last duplicate wins, as in token_to_ids).
    for (const piece of new Set(this.pieces)) {
      let node = this.root;
      for (let i = 0; i < piece.length; i++) {
        const unit = piece.charCodeAt(i);
        let child = node.children.get(unit);
        if (child === undefined) {
          child = { children: new Map(), id: -1 };
          node.children.set(unit, child);
        }
        node = child;
      }
      node.id = this.tokenIds.get(piece)!;
    }
  }

  /** Builds the model from a tokenizer.json `"model": {"type": "Unigram", ...}` section. */
  static fromJson(spec: ComponentJson): UnigramModel {
    const vocab = fieldOf(spec, 'vocab', isArray).map((entry, i): [string, number] => {
      if (Array.isArray(entry) && typeof entry[0] === 'string' && typeof entry[1] === 'number') return [entry[0], entry[1]];
      throw new Error(`tokenizer Unigram: vocab[${i}] is not a [piece, score] pair`);
    });
    const unk = spec.unk_id;
    if (unk !== null && unk !== undefined && !Number.isInteger(unk)) throw new Error('tokenizer Unigram: "unk_id" must be an integer or null');
    return new UnigramModel(vocab, (unk as number | null | undefined) ?? null, fieldOf(spec, 'byte_fallback', isBoolean, false));
  }

  get vocabSize(): number {
    return this.pieces.length;
  }

  tokenToId(token: string): number | undefined {
    return this.tokenIds.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.pieces[id];
  }

  /** The best segmentation of `text` as strings, unk runs fused (Unigram::encode). */
  segment(text: string): string[] {
    const n = text.length;
    if (n === 0) return [];
    const best = new Float64Array(n + 1);
    const startsAt = new Int32Array(n + 1).fill(-1);
    const nodeIds = new Int32Array(n + 1).fill(-1);
    const unkId = this.unkId;
    for (let start = 0; start < n; ) {
      const base = best[start];
      const c = text.charCodeAt(start);
      const charLength = (c & 0xfc00) === 0xd800 && start + 1 < n && (text.charCodeAt(start + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
      let hasSingleCharPiece = false;
      let node: TrieNode | undefined = this.root;
      for (let j = start; j < n; j++) {
        node = node.children.get(text.charCodeAt(j));
        if (node === undefined) break;
        if (node.id < 0) continue;
        const end = j + 1;
        const candidate = this.scores[node.id] + base;
        if (startsAt[end] < 0 || candidate > best[end]) {
          best[end] = candidate;
          startsAt[end] = start;
          nodeIds[end] = node.id;
        }
        if (end - start === charLength) hasSingleCharPiece = true;
      }
      if (!hasSingleCharPiece) {
        if (unkId === null) throw new Error(`Unigram: no piece covers ${JSON.stringify(text.slice(start, start + charLength))} and the model has no unk_id`);
        const end = start + charLength;
        const candidate = this.unkScore + base;
        if (startsAt[end] < 0 || candidate > best[end]) {
          best[end] = candidate;
          startsAt[end] = start;
          nodeIds[end] = unkId;
        }
      }
      start += charLength;
    }
    const results: string[] = [];
    let fused: string[] = [];
    for (let end = n; end > 0; ) {
      const start = startsAt[end];
      const piece = text.slice(start, end);
      if (nodeIds[end] === unkId) fused.push(piece);
      else {
        if (fused.length > 0) {
          results.push(fused.reverse().join(''));
          fused = [];
        }
        results.push(piece);
      }
      end = start;
    }
    if (fused.length > 0) results.push(fused.reverse().join(''));
    return results.reverse();
  }

  tokenize(text: string): number[] {
    const cached = this.cache.get(text);
    if (cached !== undefined) return cached;
    const ids: number[] = [];
    for (const piece of this.segment(text)) {
      const id = this.tokenIds.get(piece);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      if (this.byteFallback) {
        const byteIds = [...Buffer.from(piece, 'utf8')].map((b) => this.tokenIds.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
        if (byteIds.every((b) => b !== undefined)) {
          ids.push(...(byteIds as number[]));
          continue;
        }
      }
      if (this.unkId === null) throw new Error(`Unigram: ${JSON.stringify(piece)} has no id and the model has no unk_id`);
      ids.push(this.unkId);
    }
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(text, ids);
    return ids;
  }
}
