// The Flux tokenizers: what diffusers' FluxPipeline gets from transformers 5's CLIPTokenizer (tokenizer/) and
// T5Tokenizer (tokenizer_2/), in TypeScript with no native code. API (see docs/flux.md, "Tokenizers"):
//
//   const clip = loadClipTokenizer(`${pipelineDir}/tokenizer`);     // tokenizer.json, or vocab.json + merges.txt
//   const t5 = loadT5Tokenizer(`${pipelineDir}/tokenizer_2`);        // tokenizer.json
//   const a = clip.tokenize(prompts);                                 // rows of clip.modelMaxLength (77) ids
//   const b = t5.tokenize(prompts2, maxSequenceLength, clip.modelMaxLength);   // rows of maxSequenceLength ids
//   a.inputIds[i], a.attentionMask[i]: Int32Array per prompt; a.warning: diffusers' logger.warning text or null
//   (a.removedText: the decoded strings in it).
//
// The caller logs `warning` itself (console.warn in the CLI), exactly where diffusers logs it.
export { ClipTokenizer, loadClipTokenizer, CLIP_DEFAULT_MAX_LENGTH } from './clip-tokenizer';
export { T5Tokenizer, loadT5Tokenizer, T5_MAX_SEQUENCE_LENGTH } from './t5-tokenizer';
export type { PromptTokens } from './prompt-tokens';
export { Tokenizer } from './tokenizer';
export { readTokenizerJson, parseTokenizerJson, TokenizerFileError } from './tokenizer-json';
export type { TokenizerJson } from './tokenizer-json';
