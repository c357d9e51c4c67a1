// The Flux library's public surface (re-exported by the package entry, src/index.ts). docs/flux.md describes it.
export { FluxPipeline, FluxGenerationResult, EMBEDDED_MODEL_DIR } from './pipeline';
export type {
  EncodePromptOptions,
  EncodedPrompt,
  FluxPipelineLoadOptions,
  FluxPipelineRandomOptions,
  FluxProgress,
  GenerateOptions,
  GenerationMemory,
  GenerationTimings,
  OffloadOptions,
  PipelineOffloadInfo,
  PipelineOffloadMode,
} from './pipeline';
export { CudaTransport, Offloader, applyGroupOffloading, planOffload } from './offload';
export type {
  GroupOffloadHandle,
  GroupOffloadOptions,
  GroupOffloadType,
  OffloadComponentInfo,
  OffloadEvent,
  OffloadInfo,
  OffloadPolicy,
  OffloadTransport,
} from './offload';
export { CLIPTextModel } from './clip';
export type { CLIPTextOutput } from './clip';
export { T5EncoderModel } from './t5';
export { FluxTransformer2DModel } from './transformer';
export type { FluxTransformerInputs, RotaryEmbedding } from './transformer';
export type { GraphInfo } from './graphs';
export { RandomWeights } from './random-weights';
export { FLUX1_DEV_CONFIGS, RANDOM_PRESETS, presetConfigs } from './presets';
export type { PipelineConfigs, RandomPreset } from './presets';
export { BENCH_GROUP_OFFLOAD, applyOffload, benchPipeline, benchT5, benchTransformerStep, benchVaeDecode } from './benchmark';
export type { BenchConfig, BenchRow, ComponentResult, PipelineBenchOptions } from './benchmark';
export { AutoencoderKL } from './vae';
export { FlowMatchEulerDiscreteScheduler, calculateShift } from './scheduler';
export { latentImageIds, latentSize, packLatents, unpackLatents } from './latents';
export type { QuantizationOptions, QuantizationBackend } from './quantization';
export type { FloatDType, ComponentLoadOptions, LinearEpilogue, WeightSource } from './nn';
export { Linear, CheckpointWeights } from './nn';
export { FluxImage, imagesToUint8 } from './image';
export { encodePng, decodePng } from './png';
export { SafetensorsFile, SafetensorsError, writeSafetensors } from './safetensors';
export type { SafetensorsEntry, SafetensorsDType, TensorToWrite } from './safetensors';
export { Checkpoint } from './checkpoint';
export { resolveModelDir, huggingFaceCacheDir } from './hub';
export { ClipTokenizer, T5Tokenizer, loadClipTokenizer, loadT5Tokenizer } from './tokenizers';
