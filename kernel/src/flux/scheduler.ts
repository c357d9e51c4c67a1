// FlowMatchEulerDiscreteScheduler as diffusers computes it, rounding where numpy/torch round. FluxPipeline passes
// sigmas = np.linspace(1, 1/steps, steps) (float64), which set_timesteps casts to float32 *before* the time shift,
// so the shift runs in numpy float32 arithmetic (python scalars are cast to float32 per NEP 50); without given
// sigmas the schedule stays float64 until torch.from_numpy(...).to(float32). timesteps = sigmas * 1000 in float32,
// a terminal sigma 0 is appended, and the Euler step is x + (sigma_next - sigma) * v in float32.
import { FlowMatchSchedulerConfig, flowMatchSchedulerConfig } from './config';

const f32 = Math.fround;
const f64 = (x: number): number => x;

/** diffusers' calculate_shift (python floats): mu grows linearly with the image sequence length. */
export function calculateShift(
  imageSeqLen: number,
  baseSeqLen = 256,
  maxSeqLen = 4096,
  baseShift = 0.5,
  maxShift = 1.15,
): number {
  const m = (maxShift - baseShift) / (maxSeqLen - baseSeqLen);
  const b = baseShift - m * baseSeqLen;
  return imageSeqLen * m + b;
}

/** numpy.linspace(start, stop, num) in float64, including its exact endpoint. */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = start + i * step;
  out[num - 1] = stop;
  return out;
}

export interface SetTimestepsOptions {
  /** Custom sigmas (FluxPipeline passes linspace(1, 1/steps, steps)). */
  sigmas?: ArrayLike<number>;
  /** Dynamic-shift parameter, required when the config enables use_dynamic_shifting. */
  mu?: number;
}

export class FlowMatchEulerDiscreteScheduler {
  readonly config: FlowMatchSchedulerConfig;
  /** sigmas of the current schedule, with the terminal value appended (length steps + 1). */
  sigmas: Float32Array = new Float32Array(0);
  /** timesteps (sigma * num_train_timesteps, float32), length steps. */
  timesteps: Float32Array = new Float32Array(0);
  private readonly sigmaMin: number;
  private readonly sigmaMax: number;

  constructor(config: Record<string, unknown> | FlowMatchSchedulerConfig = {}) {
    this.config = flowMatchSchedulerConfig(config as Record<string, unknown>);
    // __init__: timesteps = linspace(1, T, T, float32) reversed; sigmas = timesteps / T (float32 tensor), shifted
    // statically unless dynamic shifting is on; sigma_min/max are their float32 end values.
    const T = this.config.num_train_timesteps;
    const shift = this.config.shift;
    const initial = (t: number): number => {
      const sigma = f32(f32(t) / T);
      return this.config.use_dynamic_shifting ? sigma : f32(f32(shift * sigma) / f32(1 + f32((shift - 1) * sigma)));
    };
    this.sigmaMax = initial(T);
    this.sigmaMin = initial(1);
  }

  get numInferenceSteps(): number {
    return this.timesteps.length;
  }

  private timeShift(mu: number, sigma: number, t: number, round: (x: number) => number): number {
    const base = this.config.time_shift_type === 'exponential' ? round(Math.exp(mu)) : round(mu);
    const ratio = round(round(round(1 / t) - 1) ** sigma);
    return round(base / round(base + ratio));
  }

  setTimesteps(numInferenceSteps: number | undefined, options: SetTimestepsOptions = {}): void {
    const { config } = this;
    if (config.use_dynamic_shifting && options.mu === undefined) {
      throw new Error('FlowMatchEulerDiscreteScheduler: mu is required when use_dynamic_shifting is set');
    }
    let sigmas: number[];
    let round: (x: number) => number;
    if (options.sigmas !== undefined) {
      sigmas = Array.from(options.sigmas, (s) => f32(s));
      round = f32;
    } else {
      if (numInferenceSteps === undefined || !Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
        throw new Error(`FlowMatchEulerDiscreteScheduler: numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
      }
      const T = config.num_train_timesteps;
      sigmas = Array.from(linspace(this.sigmaMax * T, this.sigmaMin * T, numInferenceSteps), (t) => t / T);
      round = f64;
    }
    if (sigmas.length === 0) throw new Error('FlowMatchEulerDiscreteScheduler: empty sigma schedule');
    if (config.use_dynamic_shifting) {
      sigmas = sigmas.map((s) => this.timeShift(options.mu as number, 1.0, s, round));
    } else {
      const shift = config.shift;
      sigmas = sigmas.map((s) => round(round(shift * s) / round(1 + round((shift - 1) * s))));
    }
    if (config.shift_terminal) {
      const oneMinus = sigmas.map((s) => round(1 - s));
      const scale = round(oneMinus[oneMinus.length - 1] / round(1 - config.shift_terminal));
      sigmas = oneMinus.map((z) => round(1 - round(z / scale)));
    }
    const T = config.num_train_timesteps;
    let s32 = Float32Array.from(sigmas);
    if (config.invert_sigmas) s32 = s32.map((s) => f32(1 - s));
    this.timesteps = s32.map((s) => f32(s * T));
    this.sigmas = new Float32Array(s32.length + 1);
    this.sigmas.set(s32);
    this.sigmas[s32.length] = config.invert_sigmas ? 1 : 0;
  }

  /** The Euler step's float32 `sigma_next - sigma` for step index i. */
  stepDelta(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.timesteps.length) {
      throw new Error(`FlowMatchEulerDiscreteScheduler: step index ${index} outside 0..${this.timesteps.length - 1}`);
    }
    return f32(this.sigmas[index + 1] - this.sigmas[index]);
  }
}

/**
 * FluxPipeline's schedule for an image of `imageSeqLen` packed tokens: the dynamic shift mu and its sigmas
 * (default linspace(1, 1/steps, steps); custom `sigmas` as diffusers' `sigmas` argument).
 */
export function fluxSchedule(
  scheduler: FlowMatchEulerDiscreteScheduler,
  numInferenceSteps: number,
  imageSeqLen: number,
  customSigmas?: ArrayLike<number>,
): { mu: number; sigmas: ArrayLike<number> } {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new Error(`numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
  }
  const { config } = scheduler;
  const mu = calculateShift(imageSeqLen, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift);
  const sigmas = customSigmas ?? linspace(1.0, 1 / numInferenceSteps, numInferenceSteps);
  scheduler.setTimesteps(numInferenceSteps, { sigmas, mu });
  return { mu, sigmas };
}
