// Post-processors of tokenizer.json (tokenizers/src/processors) for single sequences: they wrap the model's ids with
// special tokens (CLIP: <|startoftext|> … <|endoftext|>; T5: … </s>). `addedCount` is what truncation reserves for
// them, as TokenizerImpl::post_process does before truncating.
import { type ComponentJson, fieldOf, isArray, isObject } from './tokenizer-json';

export interface PostProcessor {
  readonly addedCount: number;
  process(ids: readonly number[]): number[];
}

function tokenIdPair(spec: ComponentJson, field: string): number {
  const pair = fieldOf(spec, field, isArray);
  if (pair.length !== 2 || typeof pair[0] !== 'string' || !Number.isInteger(pair[1])) {
    throw new Error(`tokenizer ${spec.type}: "${field}" must be [token, id]`);
  }
  return pair[1] as number;
}

function template(spec: ComponentJson): PostProcessor {
  const single = fieldOf(spec, 'single', isArray);
  const specialTokens = fieldOf(spec, 'special_tokens', isObject);
  const pieces: ({ sequence: true } | { ids: number[] })[] = single.map((item, i) => {
    if (isObject(item) && isObject(item.Sequence)) {
      if (item.Sequence.id !== 'A') throw new Error('tokenizer TemplateProcessing: a single-sequence template may only use sequence A');
      return { sequence: true };
    }
    if (isObject(item) && isObject(item.SpecialToken) && typeof item.SpecialToken.id === 'string') {
      const name = item.SpecialToken.id;
      const entry = specialTokens[name];
      if (!isObject(entry) || !Array.isArray(entry.ids) || !entry.ids.every((id) => Number.isInteger(id))) {
        throw new Error(`tokenizer TemplateProcessing: special token ${JSON.stringify(name)} has no "ids"`);
      }
      return { ids: entry.ids as number[] };
    }
    throw new Error(`tokenizer TemplateProcessing: single[${i}] is neither a Sequence nor a SpecialToken`);
  });
  const addedCount = pieces.reduce((n, p) => n + ('ids' in p ? p.ids.length : 0), 0);
  return {
    addedCount,
    process: (ids) => pieces.flatMap((p) => ('ids' in p ? p.ids : ids)),
  };
}

export function buildPostProcessor(spec: ComponentJson | null): PostProcessor | null {
  if (spec === null) return null;
  switch (spec.type) {
    case 'TemplateProcessing':
      return template(spec);
    case 'RobertaProcessing':
    case 'BertProcessing': {
      const cls = tokenIdPair(spec, 'cls');
      const sep = tokenIdPair(spec, 'sep');
      return { addedCount: 2, process: (ids) => [cls, ...ids, sep] };
    }
    case 'ByteLevel':
      return { addedCount: 0, process: (ids) => [...ids] };
    case 'Sequence': {
      const steps = fieldOf(spec, 'processors', isArray)
        .map((p) => buildPostProcessor(p as ComponentJson))
        .filter((p): p is PostProcessor => p !== null);
      return {
        addedCount: steps.reduce((n, s) => n + s.addedCount, 0),
        process: (ids) => steps.reduce<number[]>((acc, s) => s.process(acc), [...ids]),
      };
    }
    default:
      throw new Error(`tokenizer post-processor "${spec.type}" is not supported (CLIP and T5 tokenizers do not use it)`);
  }
}
