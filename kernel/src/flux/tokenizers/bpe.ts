// Byte-pair-encoding model, as tokenizers' BPE (tokenizers/src/models/bpe) runs it: a word starts as one symbol per
// character (the end-of-word suffix glued to the last, unknown characters as the unk token), then merges are applied
// lowest rank first, leftmost first on ties, through a priority queue whose stale entries are skipped unless the
// current pair at that position yields the same token — the queue's exact behaviour is kept, not a simplification.
import { type ComponentJson, fieldOf, isBoolean, isObject } from './tokenizer-json';

export interface BpeOptions {
  readonly unkToken: string | null;
  readonly continuingSubwordPrefix: string | null;
  readonly endOfWordSuffix: string | null;
  readonly fuseUnk: boolean;
  readonly byteFallback: boolean;
  readonly ignoreMerges: boolean;
}

/** Ids stay below 2^22 in every real vocabulary. */
const ID_LIMIT = 1 << 22;

class MinHeap {
  private readonly ranks: number[] = [];
  private readonly positions: number[] = [];
  private readonly newIds: number[] = [];

  get size(): number {
    return this.ranks.length;
  }

  private less(a: number, b: number): boolean {
    return this.ranks[a] < this.ranks[b] || (this.ranks[a] === this.ranks[b] && this.positions[a] < this.positions[b]);
  }

  private swap(a: number, b: number): void {
    for (const arr of [this.ranks, this.positions, this.newIds]) [arr[a], arr[b]] = [arr[b], arr[a]];
  }

  push(rank: number, position: number, newId: number): void {
    this.ranks.push(rank);
    this.positions.push(position);
    this.newIds.push(newId);
    let i = this.ranks.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { rank: number; position: number; newId: number } {
    const top = { rank: this.ranks[0], position: this.positions[0], newId: this.newIds[0] };
    const last = this.ranks.length - 1;
    this.swap(0, last);
    this.ranks.pop();
    this.positions.pop();
    this.newIds.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.ranks.length && this.less(l, m)) m = l;
      if (r < this.ranks.length && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}

export class BpeModel {
  private readonly idToTokenTable: string[] = [];
  /** Merge rank by left id, then right id (small-integer keys keep V8's maps fast); the merged id by rank. */
  private readonly rankByPair: (Map<number, number> | undefined)[] = [];
  private readonly mergedIdByRank: Int32Array;
  private readonly cache = new Map<string, number[]>();

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    mergeList: readonly (readonly [string, string])[],
    readonly options: BpeOptions,
  ) {
    for (const [token, id] of vocab) {
      if (!Number.isInteger(id) || id < 0 || id >= ID_LIMIT) throw new Error(`BPE vocabulary id ${id} of ${JSON.stringify(token)} is out of range`);
      this.idToTokenTable[id] = token;
    }
    const prefixLength = options.continuingSubwordPrefix?.length ?? 0;
    this.mergedIdByRank = new Int32Array(mergeList.length);
    mergeList.forEach(([a, b], rank) => {
      const aId = vocab.get(a);
      const bId = vocab.get(b);
      if (aId === undefined || bId === undefined) {
        throw new Error(`BPE merge ${rank} (${JSON.stringify(a)} ${JSON.stringify(b)}) uses a token missing from the vocabulary`);
      }
      const merged = prefixLength > 0 && b.startsWith(options.continuingSubwordPrefix!) ? a + b.slice(prefixLength) : a + b;
      const newId = vocab.get(merged);
      if (newId === undefined) throw new Error(`BPE merge ${rank} makes ${JSON.stringify(merged)}, which is not in the vocabulary`);
      // A repeated pair keeps its last rank, as collecting tokenizers' merge map into a HashMap does.
      (this.rankByPair[aId] ??= new Map()).set(bId, rank);
      this.mergedIdByRank[rank] = newId;
    });
    if (options.unkToken !== null && !vocab.has(options.unkToken)) {
      throw new Error(`BPE unk token ${JSON.stringify(options.unkToken)} is not in the vocabulary`);
    }
  }

  /** Builds the model from a tokenizer.json `"model": {"type": "BPE", ...}` section. */
  static fromJson(spec: ComponentJson): BpeModel {
    const vocabObject = fieldOf(spec, 'vocab', isObject);
    const vocab = new Map<string, number>();
    for (const token in vocabObject) vocab.set(token, vocabObject[token] as number);
    const rawMerges = spec.merges ?? [];
    if (!Array.isArray(rawMerges)) throw new Error('tokenizer BPE: "merges" must be an array');
    const merges = rawMerges.map((m: unknown, i): [string, string] => {
      if (typeof m === 'string') {
        const parts = m.split(' ');
        if (parts.length === 2) return [parts[0], parts[1]];
      } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
        return [m[0], m[1]];
      }
      throw new Error(`tokenizer BPE: merges[${i}] is neither "a b" nor ["a", "b"]`);
    });
    const dropout = spec.dropout;
    if (dropout !== null && dropout !== undefined && dropout !== 0) {
      throw new Error('tokenizer BPE: dropout makes tokenisation random and is not supported');
    }
    const optionalString = (field: string): string | null => {
      const v = spec[field];
      if (v === null || v === undefined) return null;
      if (typeof v !== 'string') throw new Error(`tokenizer BPE: "${field}" must be a string or null`);
      return v;
    };
    return new BpeModel(vocab, merges, {
      unkToken: optionalString('unk_token'),
      continuingSubwordPrefix: optionalString('continuing_subword_prefix'),
      endOfWordSuffix: optionalString('end_of_word_suffix'),
      fuseUnk: fieldOf(spec, 'fuse_unk', isBoolean, false),
      byteFallback: fieldOf(spec, 'byte_fallback', isBoolean, false),
      ignoreMerges: fieldOf(spec, 'ignore_merges', isBoolean, false),
    });
  }

  get vocabSize(): number {
    return this.vocab.size;
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.idToTokenTable[id];
  }

  tokenize(word: string): number[] {
    if (word.length === 0) return [];
    const cached = this.cache.get(word);
    if (cached !== undefined) return cached;
    const ids = this.mergeWord(word);
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }

  private mergeWord(word: string): number[] {
    const { options, vocab } = this;
    if (options.ignoreMerges) {
      const whole = vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const chars = [...word];
    const symbols: number[] = [];
    let pendingUnk: { id: number; count: number } | null = null;
    const flushUnk = (): void => {
      if (pendingUnk !== null) symbols.push(pendingUnk.id);
      pendingUnk = null;
    };
    chars.forEach((ch, i) => {
      let s = ch;
      if (i > 0 && options.continuingSubwordPrefix !== null) s = options.continuingSubwordPrefix + s;
      if (i === chars.length - 1 && options.endOfWordSuffix !== null) s += options.endOfWordSuffix;
      const id = vocab.get(s);
      if (id !== undefined) {
        flushUnk();
        symbols.push(id);
        return;
      }
      if (options.byteFallback) {
        // As in merge_word: the bytes of the decorated symbol, pushed without flushing a pending unk first.
        const byteIds = [...Buffer.from(s, 'utf8')].map((b) => vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
        if (byteIds.every((b) => b !== undefined)) {
          symbols.push(...(byteIds as number[]));
          return;
        }
      }
      if (options.unkToken !== null) {
        const unkId = vocab.get(options.unkToken)!;
        if (pendingUnk !== null && options.fuseUnk) pendingUnk.count++;
        else {
          flushUnk();
          pendingUnk = { id: unkId, count: 1 };
        }
      }
    });
    flushUnk();
    return this.mergeAll(symbols);
  }

  /** Word::merge_all with its linked symbol list; a removed symbol is marked by `alive[i] = false`. */
  private mergeAll(ids: number[]): number[] {
    const n = ids.length;
    if (n < 2) return ids;
    const c = Int32Array.from(ids);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new MinHeap();
    const pushPair = (pos: number, right: number): void => {
      const rank = this.rankByPair[c[pos]]?.get(c[right]);
      if (rank !== undefined) heap.push(rank, pos, this.mergedIdByRank[rank]);
    };
    for (let i = 0; i + 1 < n; i++) pushPair(i, i + 1);
    while (heap.size > 0) {
      const top = heap.pop();
      if (!alive[top.position] || next[top.position] === -1) continue;
      const right = next[top.position];
      const current = this.rankByPair[c[top.position]]?.get(c[right]);
      if (current === undefined || this.mergedIdByRank[current] !== top.newId) continue;
      c[top.position] = top.newId;
      alive[right] = 0;
      next[top.position] = next[right];
      if (next[right] !== -1) prev[next[right]] = top.position;
      if (prev[top.position] >= 0) pushPair(prev[top.position], top.position);
      if (next[top.position] !== -1) pushPair(top.position, next[top.position]);
    }
    const out: number[] = [];
    for (let i = 0; i < n; i++) if (alive[i]) out.push(c[i]);
    return out;
  }
}
