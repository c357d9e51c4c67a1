// The tokenizer calls of diffusers' FluxPipeline (_get_clip_prompt_embeds, _get_t5_prompt_embeds), including the
// truncation check and warning they log:
//
//   text_input_ids = tokenizer(prompt, padding="max_length", max_length=L, truncation=True, ...).input_ids
//   untruncated_ids = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
//   if untruncated_ids.shape[-1] >= text_input_ids.shape[-1] and not torch.equal(text_input_ids, untruncated_ids):
//       removed_text = tokenizer.batch_decode(untruncated_ids[:, self.tokenizer_max_length - 1 : -1])
//       logger.warning(... f"{removed_text}")
//
// The slice start is the CLIP tokenizer's model_max_length - 1 (76) in both methods — also for T5, whatever its
// max_sequence_length — so the T5 warning may show text that was kept, or an empty string; this is reproduced as is.
import { pythonListRepr } from './python-repr';
import type { Tokenizer } from './tokenizer';

export interface PromptTokens {
  /** Token ids per prompt, each exactly `maxLength` long (truncated, then padded with the pad id). */
  readonly inputIds: Int32Array[];
  /** Per prompt: 1 for tokens, 0 for padding. */
  readonly attentionMask: Int32Array[];
  /** diffusers' `removed_text`, one decoded string per prompt, when some prompt was truncated; else null. */
  readonly removedText: string[] | null;
  /** The exact message diffusers logs with logger.warning when some prompt was truncated; else null. */
  readonly warning: string | null;
}

export interface PromptTokenizer {
  readonly tokenizer: Tokenizer;
  readonly padTokenId: number;
  /** transformers' decode(ids) with skip_special_tokens=False, as batch_decode applies it to each row. */
  decode(ids: Iterable<number>): string;
}

function sameRows(a: readonly Int32Array[], b: readonly Int32Array[]): boolean {
  return a.length === b.length && a.every((row, i) => row.length === b[i].length && row.every((v, j) => v === b[i][j]));
}

/**
 * Tokenizes `prompts` as FluxPipeline does; `sliceStart` is tokenizer_max_length - 1 and `message(removed)` builds
 * the warning text from the Python repr of removed_text.
 */
export function tokenizePrompts(
  tok: PromptTokenizer,
  prompts: readonly string[],
  maxLength: number,
  sliceStart: number,
  message: (removedTextRepr: string) => string,
): PromptTokens {
  if (!Array.isArray(prompts) || prompts.length === 0) throw new Error('tokenize: at least one prompt is needed');
  prompts.forEach((p, i) => {
    if (typeof p !== 'string') throw new Error(`tokenize: prompt ${i} is a ${typeof p}, not a string`);
  });
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new Error(`tokenize: max length must be a positive integer, got ${maxLength}`);
  const padId = tok.padTokenId;
  const padded = tok.tokenizer.encodeBatch(prompts, { padding: 'max_length', maxLength, truncate: true, padId });
  const untruncated = tok.tokenizer.encodeBatch(prompts, { padding: 'longest', truncate: false, padId });
  const width = untruncated.inputIds[0].length;
  if (width < maxLength || (width === maxLength && sameRows(padded.inputIds, untruncated.inputIds))) {
    return { ...padded, removedText: null, warning: null };
  }
  const removedText = untruncated.inputIds.map((row) => tok.decode(row.subarray(sliceStart, Math.max(sliceStart, width - 1))));
  return { ...padded, removedText, warning: message(pythonListRepr(removedText)) };
}
