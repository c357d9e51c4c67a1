// The fused ops of issue 5 the networks are written against (docs/native.md): linear epilogues (GELU-tanh,
// gate and residual), layerNormModulate, qkNormRope, attention on [B, L, H, D] tensors, and the sinusoidal
// timestep embedding computed on the device. Each function calls the addon's op when the loaded addon has it, and
// otherwise the same math composed from the basic ops (more kernels and more roundings in reduced precision; the
// fused ops' CPU references compute exactly this composition in float32). Only the models call these.
import { Tensor, ops, tidy } from '@fluxlab/native';

const f32 = Math.fround;

/** What a Linear may fuse into its GEMM: out = residual + gate ⊙ act(x·Wᵀ + b). */
export interface LinearEpilogue {
  activation?: 'gelu_tanh';
  /** [B, 1, N] or [B, N]: one row of gates per batch element. */
  gate?: Tensor;
  /** Same shape as the output. */
  residual?: Tensor;
}

interface TimestepEmbeddingOptions {
  flipSinToCos?: boolean;
  downscaleFreqShift?: number;
  scale?: number;
  maxPeriod?: number;
}

/** The signatures of the plan (docs/native.md); `ops` has them once the addon implements them. */
interface FusedOps {
  linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts?: LinearEpilogue): Tensor;
  layerNormModulate(x: Tensor, shift: Tensor, scale: Tensor, eps: number): Tensor;
  qkNormRope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: number): Tensor;
  sdpa(q: Tensor, k: Tensor, v: Tensor, opts: { layout: 'BLHD' }): Tensor;
  timestepEmbedding(t: Tensor, dim: number, opts?: TimestepEmbeddingOptions): Tensor;
}

const native = ops as unknown as Partial<FusedOps>;

/** Which fused ops the loaded addon provides (the rest are composed). */
export function fusedOpsAvailable(): Record<'linearEpilogue' | 'layerNormModulate' | 'qkNormRope' | 'sdpaBLHD' | 'timestepEmbedding', boolean> {
  return {
    linearEpilogue: typeof native.layerNormModulate === 'function',
    layerNormModulate: typeof native.layerNormModulate === 'function',
    qkNormRope: typeof native.qkNormRope === 'function',
    // Attention on [B, L, H, D] arrived with qkNormRope in the plan; the option alone is not detectable.
    sdpaBLHD: typeof native.qkNormRope === 'function',
    timestepEmbedding: typeof native.timestepEmbedding === 'function',
  };
}

const available = fusedOpsAvailable();

/** x·Wᵀ + b with the epilogue applied (torch order: act, then gate ⊙ ·, then residual + ·). */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | undefined, epilogue?: LinearEpilogue): Tensor {
  if (epilogue === undefined || (!epilogue.activation && !epilogue.gate && !epilogue.residual)) return ops.linear(x, weight, bias);
  if (available.linearEpilogue) return (ops as unknown as FusedOps).linear(x, weight, bias, epilogue);
  return tidy(() => {
    let y = ops.linear(x, weight, bias);
    if (epilogue.activation === 'gelu_tanh') y = ops.gelu(y, 'tanh');
    if (epilogue.gate) y = ops.mul(epilogue.gate, y);
    if (epilogue.residual) y = ops.add(epilogue.residual, y);
    return y;
  });
}

/** Flux's AdaLayerNorm: layerNorm(x) without affine, then x·(1 + scale) + shift; shift/scale [B, 1, D]. */
export function layerNormModulate(x: Tensor, shift: Tensor, scale: Tensor, eps: number): Tensor {
  if (native.layerNormModulate) return native.layerNormModulate(x, shift, scale, eps);
  return tidy(() => ops.modulate(ops.layerNorm(x, null, null, eps), shift, scale));
}

/** RMS norm over D with `weight`, then Flux's RoPE (cos/sin [L, D]): x [B, L, H, D] → [B, L, H, D]. */
export function qkNormRope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: number): Tensor {
  if (native.qkNormRope) return native.qkNormRope(x, weight, cos, sin, eps);
  return tidy(() => ops.permute(ops.rope(ops.permute(ops.rmsNorm(x, weight, eps), [0, 2, 1, 3]), cos, sin), [0, 2, 1, 3]));
}

/** Non-causal attention with q, k, v as [B, L, H, D] → [B, Lq, H, D] (no head permutes around the kernel). */
export function attention(q: Tensor, k: Tensor, v: Tensor): Tensor {
  if (available.sdpaBLHD) return (ops as unknown as FusedOps).sdpa(q, k, v, { layout: 'BLHD' });
  return tidy(() => {
    const heads = (t: Tensor): Tensor => ops.permute(t, [0, 2, 1, 3]);
    return heads(ops.sdpa(heads(q), heads(k), heads(v)));
  });
}

/**
 * diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0, max_period=10000) in
 * float32 on t's device: frequencies exp(-ln(10000)·i/half), arguments t·freq, [cos | sin]. t [B] → [B, dim].
 */
export function timestepEmbedding(t: Tensor, dim: number): Tensor {
  if (native.timestepEmbedding) return native.timestepEmbedding(t, dim, { flipSinToCos: true, downscaleFreqShift: 0, scale: 1, maxPeriod: 10000 });
  const values = t.toArray() as Float32Array;
  return Tensor.fromArray(timestepEmbeddingHost(values, dim), [values.length, dim], { device: t.device });
}

/** The same embedding computed on the host, with torch's float32 roundings. */
export function timestepEmbeddingHost(timesteps: ArrayLike<number>, dim: number, flipSinToCos = true, downscaleFreqShift = 0, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const negLog = f32(-Math.log(maxPeriod));
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f32(Math.exp(f32(f32(negLog * i) / (half - downscaleFreqShift))));
  const out = new Float32Array(timesteps.length * dim);
  for (let b = 0; b < timesteps.length; b++) {
    const t = f32(timesteps[b]);
    const row = out.subarray(b * dim, (b + 1) * dim);
    for (let i = 0; i < half; i++) {
      const arg = f32(t * freqs[i]);
      const sin = f32(Math.sin(arg));
      const cos = f32(Math.cos(arg));
      row[flipSinToCos ? half + i : i] = sin;
      row[flipSinToCos ? i : half + i] = cos;
    }
  }
  return out;
}
