// bitsandbytes 4-bit NF4 as diffusers' PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit",
// components_to_quantize=[...]) applies it: every nn.Linear of the listed components becomes NF4 (blocksize 64,
// optional double quant), except the modules bitsandbytes leaves dense (llm_int8_skip_modules and the model's
// _keep_in_fp32_modules: T5's `wo`). Pre-quantized checkpoints carry a bitsandbytes quantization_config instead.
import type { BitsAndBytesConfig } from './config';
import { FloatDType, Nf4Plan, isFloatDTypeName } from './nn';

export type QuantizationBackend = 'bitsandbytes_4bit' | 'nf4';

export interface QuantizationOptions {
  /** 'bitsandbytes_4bit' (diffusers' name) or 'nf4'; both mean bitsandbytes NF4. */
  backend: QuantizationBackend;
  /** Components to quantize (diffusers' components_to_quantize); default ['transformer', 'text_encoder_2']. */
  components?: string[];
  /** bnb_4bit_compute_dtype; default: the pipeline's dtype. */
  computeDtype?: FloatDType;
  /** bnb_4bit_use_double_quant (absmax stored as 8-bit codes, blocks of 256, plus an offset). */
  doubleQuant?: boolean;
  /** bnb_4bit_quant_type: only 'nf4'. */
  quantType?: 'nf4';
  /** llm_int8_skip_modules: module names left dense. */
  skipModules?: string[];
}

export const QUANTIZABLE_COMPONENTS = ['transformer', 'text_encoder', 'text_encoder_2', 'vae'] as const;

/** The classes' _keep_in_fp32_modules, which bitsandbytes does not quantize. */
const KEEP_IN_FP32: Record<string, readonly string[]> = { text_encoder_2: ['wo'] };

/** Checks user options; returns them completed, or throws a message naming what is wrong. */
export function resolveQuantization(options: QuantizationOptions | undefined, dtype: FloatDType): Required<QuantizationOptions> | undefined {
  if (options === undefined || options === null) return undefined;
  if (typeof options !== 'object') throw new Error(`quantization must be an object such as { backend: 'bitsandbytes_4bit' }, got ${JSON.stringify(options)}`);
  const backend = (options as { backend?: unknown }).backend;
  if (backend !== 'bitsandbytes_4bit' && backend !== 'nf4') {
    throw new Error(`unknown quantization backend ${JSON.stringify(backend)}: supported are 'bitsandbytes_4bit' and 'nf4' (bitsandbytes NF4)`);
  }
  const quantType = options.quantType ?? 'nf4';
  if (quantType !== 'nf4') throw new Error(`quantization quantType '${String(quantType)}' is not supported (only 'nf4')`);
  const components = options.components ?? ['transformer', 'text_encoder_2'];
  if (!Array.isArray(components) || components.length === 0) throw new Error('quantization.components must list at least one component');
  for (const c of components) {
    if (!(QUANTIZABLE_COMPONENTS as readonly string[]).includes(c)) {
      throw new Error(`quantization: unknown component '${c}' (quantizable: ${QUANTIZABLE_COMPONENTS.join(', ')})`);
    }
  }
  const computeDtype = options.computeDtype ?? dtype;
  if (!isFloatDTypeName(computeDtype)) throw new Error(`quantization.computeDtype '${String(computeDtype)}' is not one of float32, bfloat16, float16`);
  return {
    backend,
    components: [...new Set(components)],
    computeDtype,
    doubleQuant: options.doubleQuant ?? false,
    quantType,
    skipModules: options.skipModules ?? [],
  };
}

function computeDtypeOf(config: BitsAndBytesConfig, where: string): FloatDType {
  const name = config.bnb_4bit_compute_dtype ?? 'float32';
  const dtype = name.replace(/^torch\./, '');
  if (!isFloatDTypeName(dtype)) throw new Error(`${where}: bnb_4bit_compute_dtype '${name}' is not supported`);
  return dtype;
}

/** The NF4 plan of a component whose config.json carries a quantization_config (pre-quantized checkpoint). */
export function prequantizedPlan(component: string, config: unknown, where: string): Nf4Plan | undefined {
  if (config === undefined || config === null) return undefined;
  const q = config as BitsAndBytesConfig;
  if (q.quant_method !== 'bitsandbytes') throw new Error(`${where}: quantization_config quant_method '${String(q.quant_method)}' is not supported (bitsandbytes NF4 only)`);
  if (q.load_in_8bit) throw new Error(`${where}: bitsandbytes 8-bit checkpoints are not supported (NF4 only)`);
  if (!q.load_in_4bit) throw new Error(`${where}: quantization_config is neither 4-bit nor 8-bit`);
  if ((q.bnb_4bit_quant_type ?? 'fp4') !== 'nf4') throw new Error(`${where}: bnb_4bit_quant_type '${String(q.bnb_4bit_quant_type)}' is not supported (nf4 only)`);
  if (q.bnb_4bit_quant_storage !== undefined && q.bnb_4bit_quant_storage !== 'uint8') {
    throw new Error(`${where}: bnb_4bit_quant_storage '${q.bnb_4bit_quant_storage}' is not supported (uint8 only)`);
  }
  return {
    quantizeOnLoad: false,
    doubleQuant: Boolean(q.bnb_4bit_use_double_quant),
    computeDtype: computeDtypeOf(q, where),
    skipModules: [...(q.llm_int8_skip_modules ?? []), ...(KEEP_IN_FP32[component] ?? [])],
  };
}

/** The plan for quantizing a dense component while loading it, or undefined when it stays dense. */
export function onLoadPlan(component: string, options: Required<QuantizationOptions> | undefined): Nf4Plan | undefined {
  if (options === undefined || !options.components.includes(component)) return undefined;
  return {
    quantizeOnLoad: true,
    doubleQuant: options.doubleQuant,
    computeDtype: options.computeDtype,
    skipModules: [...options.skipModules, ...(KEEP_IN_FP32[component] ?? [])],
  };
}
