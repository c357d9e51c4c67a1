// The op set. Each op checks its inputs at this boundary (and again in the addon, which throws with the op
// name, shapes and dtypes), runs on the inputs' device (CUDA: on the current stream, without host sync) and
// returns new tensors. Float ops take float32, bfloat16 or float16; mixed float inputs compute in float32 and
// return float32 (torch's promotion); the CPU computes in float32 whatever the storage type.
import { binding, type NativeNF4, type NativeTensor } from './binding';
import { describeShape, NF4Tensor, Tensor } from './tensor';
import { isDType, type DType, type DenseDType } from './types';

function h(t: Tensor, op: string, name: string): NativeTensor {
  if (!(t instanceof Tensor)) throw new TypeError(`ops.${op}: ${name} must be a Tensor`);
  if (t instanceof NF4Tensor) {
    throw new TypeError(`ops.${op}: ${name} is an nf4 tensor ${t.describe()}; only linear and nf4Dequantize take nf4`);
  }
  return t.nativeHandle(`ops.${op}`);
}

function hOpt(t: Tensor | null | undefined, op: string, name: string): NativeTensor | null {
  return t === null || t === undefined ? null : h(t, op, name);
}

function wrap(native: NativeTensor): Tensor {
  return new Tensor(native);
}

function normDim(dim: number, ndim: number, op: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= ndim) throw new RangeError(`ops.${op}: dim ${dim} out of range for ${ndim} dims`);
  return d;
}

export type GeluApproximation = 'none' | 'tanh';

export interface SdpaOptions {
  /** Additive float bias broadcastable to [B,H,Lq,Lk] (T5's relative position bias). */
  bias?: Tensor | null;
  /**
   * Which keys each query may attend to: [B,Lk] (key padding) or any shape broadcastable to [B,H,Lq,Lk]
   * (causal masks); nonzero keeps, zero drops. Any dtype. A query row with every key dropped yields zeros.
   */
  mask?: Tensor | null;
  /** Multiplier of q·k (default 1/sqrt(D); T5 uses 1). */
  scale?: number;
  /**
   * 'BHLD' (default, torch's layout): q [B,H,Lq,D], k/v [B,H,Lk,D] → [B,H,Lq,D]. 'BLHD': q [B,Lq,H,D], k/v
   * [B,Lk,H,D] → [B,Lq,H,D], the projections' own layout (a [B,L,H·D] tensor reshaped), so no transposes are needed.
   */
  layout?: 'BHLD' | 'BLHD';
}

/** The norms and rotary rows of one token stream of ops.jointQkv. */
export interface JointQkvTables {
  /** RMS QK-norm weights [D]. */
  normQ: Tensor;
  normK: Tensor;
  /** The stream's rows of the rotary table, [L, D] each. */
  cos: Tensor;
  sin: Tensor;
}

/**
 * One token stream of ops.jointQkv: its projections `qkv` [B, L, 3·H·D] (q, k and v side by side), or what makes
 * them: x [B, L, K], the row-stacked weight [3·H·D, K] (dense or nf4) and bias, projected inside the op.
 */
export type JointQkvStream = JointQkvTables & ({ qkv: Tensor } | { x: Tensor; weight: Tensor; bias?: Tensor | null });

/** The fused epilogue of ops.linear: out = residual + gate ⊙ act(x·Wᵀ + bias), float32 math, one rounding. */
export interface LinearOptions {
  /** Applied to x·Wᵀ + bias (Flux's feed-forward: GELU, tanh approximation). */
  activation?: 'gelu_tanh';
  /**
   * Multiplies the (activated) product, broadcast over rows: [N], [B,N] or [B,1,N] where B is the output's first
   * dim (Flux's gate_msa / gate_mlp of x [B,L,K]). Converted to x's dtype.
   */
  gate?: Tensor | null;
  /** Added last; the output's shape (Flux's residual stream). A separate input: the result is a new tensor. */
  residual?: Tensor | null;
}

export interface TimestepEmbeddingOptions {
  /** Cosines first (diffusers' flip_sin_to_cos; Flux: true). */
  flipSinToCos?: boolean;
  /** Frequencies exp(-ln(maxPeriod)·i/(dim/2 − shift)) (Flux: 0). */
  downscaleFreqShift?: number;
  /** Multiplies the arguments (default 1). */
  scale?: number;
  maxPeriod?: number;
}

/** A group norm (+SiLU) of a convolution's input: ops.groupNorm's arguments. */
export interface Conv2dNorm {
  groups: number;
  weight?: Tensor | null;
  bias?: Tensor | null;
  eps?: number;
  silu?: boolean;
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  upsample?: 'nearest2x';
  norm?: Conv2dNorm;
}

export const ops = {
  /**
   * x[...,K] · weightᵀ + bias → [...,N]. weight [N,K] float32 / bfloat16 / float16 / nf4; result in x's dtype.
   * `opts` fuses Flux's epilogues: residual + gate ⊙ activation(x·Wᵀ + bias). On CUDA, bfloat16 x with bfloat16
   * or nf4 weights runs on the tensor-core kernels where the shape allows (docs/native.md, routing).
   * x may be given as parts along its last dim ([x₁, x₂, …]): the product with their concatenation, which CUDA's
   * GEMM reads in place for two bf16 parts (Flux's single-block proj_out over [attention | MLP]).
   */
  linear(x: Tensor | Tensor[], weight: Tensor, bias?: Tensor | null, opts: LinearOptions = {}): Tensor {
    const act = opts.activation ?? null;
    if (act !== null && act !== 'gelu_tanh') {
      throw new RangeError(`ops.linear: unknown activation '${String(act)}' (only 'gelu_tanh' is fused)`);
    }
    const b = hOpt(bias, 'linear', 'bias');
    const gate = hOpt(opts.gate, 'linear', 'gate');
    const residual = hOpt(opts.residual, 'linear', 'residual');
    if (Array.isArray(x)) {
      if (x.length === 0) throw new TypeError('ops.linear: x parts must be a non-empty array');
      const parts = x.map((p, i) => h(p, 'linear', `x[${i}]`));
      const w = weight instanceof NF4Tensor ? weight.nf4Handle('ops.linear') : h(weight, 'linear', 'weight');
      return wrap(binding().linearParts(parts, w, b, act, gate, residual));
    }
    const xh = h(x, 'linear', 'x');
    if (weight instanceof NF4Tensor) {
      return wrap(binding().linearNF4(xh, weight.nf4Handle('ops.linear'), b, act, gate, residual));
    }
    return wrap(binding().linear(xh, h(weight, 'linear', 'weight'), b, act, gate, residual));
  },

  /**
   * Independent linears, each ops.linear(x, weight, bias, opts), in as few launches as the GPU kernels allow: on
   * sm_90 two nf4 products of the same N, K and epilogue (Flux's double blocks: the image and text streams through
   * their own weights) share one launch, their tiles filling each other's last round; the values are those of the
   * separate linears up to the float32 summation order where that round is split along K. Otherwise one by one.
   */
  linearGroup(items: readonly ({ x: Tensor; weight: Tensor; bias?: Tensor | null } & LinearOptions)[]): Tensor[] {
    if (items.length === 0) throw new TypeError('ops.linearGroup: needs at least one linear');
    const values = items.flatMap((it, i) => {
      const act = it.activation ?? null;
      if (act !== null && act !== 'gelu_tanh') {
        throw new RangeError(`ops.linearGroup: unknown activation '${String(act)}' (only 'gelu_tanh' is fused)`);
      }
      const weight = it.weight instanceof NF4Tensor ? it.weight.nf4Handle('ops.linearGroup') : h(it.weight, 'linearGroup', `weight[${i}]`);
      return [h(it.x, 'linearGroup', `x[${i}]`), weight, hOpt(it.bias, 'linearGroup', `bias[${i}]`), act,
        hOpt(it.gate, 'linearGroup', `gate[${i}]`), hOpt(it.residual, 'linearGroup', `residual[${i}]`)];
    });
    return binding().linearGroup(values).map(wrap);
  },

  /**
   * Linears of one x side by side: x[...,K] → [..., ΣNᵢ], columns of layer i = ops.linear(x, weightᵢ, biasᵢ), bitwise.
   * On CUDA, bfloat16 x of at most 16 rows with nf4 weights of the same K runs as one skinny launch (Flux's 77
   * adaptive-norm projections of silu(temb), too short each to reach the bandwidth one long launch does).
   */
  linearConcat(x: Tensor, layers: readonly { weight: Tensor; bias?: Tensor | null }[]): Tensor {
    if (layers.length === 0) throw new TypeError('ops.linearConcat: needs at least one layer');
    const weights = layers.map(({ weight }, i) =>
      weight instanceof NF4Tensor ? weight.nf4Handle('ops.linearConcat') : h(weight, 'linearConcat', `weight[${i}]`),
    );
    const biases = layers.map(({ bias }, i) => hOpt(bias, 'linearConcat', `bias[${i}]`));
    return wrap(binding().linearConcat(h(x, 'linearConcat', 'x'), weights, biases));
  },

  /** [...,M,K] · [...,K,N] → [...,M,N]; batch dims equal or broadcast (numpy rules). */
  matmul(a: Tensor, b: Tensor): Tensor {
    return wrap(binding().matmul(h(a, 'matmul', 'a'), h(b, 'matmul', 'b')));
  },

  /** [B,M,K] · [B,K,N] → [B,M,N]. */
  bmm(a: Tensor, b: Tensor): Tensor {
    if (a.ndim !== 3 || b.ndim !== 3 || a.shape[0] !== b.shape[0]) {
      throw new RangeError(`ops.bmm: expects [B,M,K] and [B,K,N], got ${a.describe()} and ${b.describe()}`);
    }
    return ops.matmul(a, b);
  },

  /**
   * Scaled dot-product attention, non-causal: softmax(q·kᵀ·scale + bias, masked) · v.
   * q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,D] → [B,H,Lq,D]; with `layout: 'BLHD'` every operand is [B,L,H,D].
   */
  sdpa(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions = {}): Tensor {
    const layout = opts.layout ?? 'BHLD';
    if (layout !== 'BHLD' && layout !== 'BLHD') {
      throw new RangeError(`ops.sdpa: layout must be 'BHLD' or 'BLHD', got '${String(layout)}'`);
    }
    const scale = opts.scale ?? 1 / Math.sqrt(q.shape[q.ndim - 1]);
    return wrap(
      binding().sdpa(
        h(q, 'sdpa', 'q'),
        h(k, 'sdpa', 'k'),
        h(v, 'sdpa', 'v'),
        hOpt(opts.bias, 'sdpa', 'bias'),
        hOpt(opts.mask, 'sdpa', 'mask'),
        scale,
        layout,
      ),
    );
  },

  /** Layer norm over the last dim (biased variance, like torch), optional affine weight/bias [C]. */
  layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
    return wrap(
      binding().layerNorm(h(x, 'layerNorm', 'x'), hOpt(weight, 'layerNorm', 'weight'), hOpt(bias, 'layerNorm', 'bias'), eps),
    );
  },

  /**
   * Flux's adaptive norm in one pass: layerNorm(x, no affine, eps)·(1 + scale) + shift over the last dim, with
   * shift/scale [D], [B,D] or [B,1,D] (B = x's first dim), as AdaLayerNormZero / Single / Continuous apply them.
   * Mixed float dtypes compute and return float32.
   */
  layerNormModulate(x: Tensor, shift: Tensor, scale: Tensor, eps = 1e-6): Tensor {
    return wrap(
      binding().layerNormModulate(
        h(x, 'layerNormModulate', 'x'),
        h(shift, 'layerNormModulate', 'shift'),
        h(scale, 'layerNormModulate', 'scale'),
        eps,
      ),
    );
  },

  /**
   * Flux's QK-norm and rotary embedding in one pass: x [B,L,H,D] (a [B,L,H·D] projection reshaped) → rmsNorm
   * over D with `weight` [D], then ops.rope's rotation with cos/sin [L,D]; float32 inside, one rounding; the
   * result is [B,L,H,D] in x's dtype (ready for ops.sdpa with layout 'BLHD').
   */
  qkNormRope(x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps = 1e-6): Tensor {
    return wrap(
      binding().qkNormRope(
        h(x, 'qkNormRope', 'x'),
        h(weight, 'qkNormRope', 'weight'),
        h(cos, 'qkNormRope', 'cos'),
        h(sin, 'qkNormRope', 'sin'),
        eps,
      ),
    );
  },

  /**
   * The joint attention inputs straight from fused QKV projections, without concatenation: each stream's `qkv`
   * [B, Lᵢ, 3·H·D] (its q, k and v projections side by side, one GEMM of the row-stacked weights) becomes rows
   * ΣL₍<ᵢ₎ … of q, k, v [B, ΣLᵢ, H, D], streams in order (Flux: context first, as diffusers concatenates
   * [context; x]). q and k are exactly ops.qkNormRope of their parts (normQ/normK [D], the stream's cos/sin rows
   * [Lᵢ, D]; bitwise the same on each device), v is copied. Ready for ops.sdpa with layout 'BLHD'.
   * Streams given as { x, weight, bias } (all of them, or none) are projected here, bitwise as ops.linear would:
   * on CUDA (sm_90, bfloat16, D = 128) the projection GEMM writes q, k and v itself, with no qkv in between; two nf4
   * streams share one launch. `opts.alongside` (one stream given as x): also ops.linear(x, weight, bias,
   * { activation }) of that stream's x, returned as `alongside`; with both weights nf4 on sm_90 one launch computes
   * both (Flux's single blocks: QKV and MLP up). A shared launch sums a split last round's pieces in its own float32
   * order: the same values up to that.
   */
  jointQkv(
    streams: JointQkvStream[],
    heads: number,
    eps = 1e-6,
    opts: { alongside?: { weight: Tensor; bias?: Tensor | null; activation?: 'gelu_tanh' } } = {},
  ): { q: Tensor; k: Tensor; v: Tensor; alongside?: Tensor } {
    if (!Array.isArray(streams) || streams.length === 0) throw new TypeError('ops.jointQkv: needs a non-empty array of streams');
    if (!Number.isInteger(heads) || heads < 1) throw new RangeError(`ops.jointQkv: heads must be a positive integer, got ${heads}`);
    const shape = 'a stream must be { qkv, normQ, normK, cos, sin } or { x, weight, bias?, normQ, normK, cos, sin }';
    streams.forEach((s, i) => {
      if (s === null || typeof s !== 'object') throw new TypeError(`ops.jointQkv: stream ${i}: ${shape}`);
    });
    const projected = streams.map((s) => 'x' in s);
    if (projected.some((p) => p !== projected[0])) {
      throw new TypeError('ops.jointQkv: give every stream as qkv, or every stream as { x, weight, bias }');
    }
    const tables = (s: JointQkvTables, i: number): NativeTensor[] => {
      const name = (field: string) => `streams[${i}].${field}`;
      return [h(s.normQ, 'jointQkv', name('normQ')), h(s.normK, 'jointQkv', name('normK')), h(s.cos, 'jointQkv', name('cos')), h(s.sin, 'jointQkv', name('sin'))];
    };
    if (projected[0]) {
      const values = streams.flatMap((s, i) => {
        if (!('x' in s)) throw new TypeError(`ops.jointQkv: stream ${i}: ${shape}`);
        const name = (field: string) => `streams[${i}].${field}`;
        const weight = s.weight instanceof NF4Tensor ? s.weight.nf4Handle('ops.jointQkv') : h(s.weight, 'jointQkv', name('weight'));
        return [h(s.x, 'jointQkv', name('x')), weight, hOpt(s.bias, 'jointQkv', name('bias')), ...tables(s, i)];
      });
      const side = opts.alongside;
      if (side !== undefined && streams.length !== 1) throw new TypeError('ops.jointQkv: a linear alongside needs exactly one stream');
      if (side !== undefined && side.activation !== undefined && side.activation !== 'gelu_tanh') {
        throw new RangeError(`ops.jointQkv: unknown activation '${String(side.activation)}' (only 'gelu_tanh' is fused)`);
      }
      const alongside: [NativeTensor | NativeNF4, NativeTensor | null, 'gelu_tanh' | null] | null =
        side === undefined
          ? null
          : [
              side.weight instanceof NF4Tensor ? side.weight.nf4Handle('ops.jointQkv') : h(side.weight, 'jointQkv', 'alongside.weight'),
              hOpt(side.bias, 'jointQkv', 'alongside.bias'),
              side.activation ?? null,
            ];
      const [q, k, v, extra] = binding().jointQkvProjection(values, heads, eps, alongside).map(wrap);
      return extra === undefined ? { q, k, v } : { q, k, v, alongside: extra };
    }
    if (opts.alongside !== undefined) throw new TypeError('ops.jointQkv: a linear alongside needs its stream given as { x, weight, bias }');
    const handles = streams.flatMap((s, i) => {
      if (!('qkv' in s)) throw new TypeError(`ops.jointQkv: stream ${i}: ${shape}`);
      return [h(s.qkv, 'jointQkv', `streams[${i}].qkv`), ...tables(s, i)];
    });
    const [q, k, v] = binding().jointQkv(handles, heads, eps).map(wrap);
    return { q, k, v };
  },

  /**
   * diffusers' get_timestep_embedding on t's device: t [B] (any float dtype) → [B, dim] float32, in torch's
   * float32 steps. Flux: dim 256, flipSinToCos true, downscaleFreqShift 0 (its Timesteps module).
   */
  timestepEmbedding(t: Tensor, dim: number, opts: TimestepEmbeddingOptions = {}): Tensor {
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`ops.timestepEmbedding: invalid dim ${dim}`);
    return wrap(
      binding().timestepEmbedding(
        h(t, 'timestepEmbedding', 't'),
        dim,
        opts.flipSinToCos ?? true,
        opts.downscaleFreqShift ?? 0,
        opts.scale ?? 1,
        opts.maxPeriod ?? 10000,
      ),
    );
  },

  /** x / sqrt(mean(x²) + eps) · weight over the last dim (T5's layer norm, Flux's QK-norm). */
  rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
    return wrap(binding().rmsNorm(h(x, 'rmsNorm', 'x'), hOpt(weight, 'rmsNorm', 'weight'), eps));
  },

  /**
   * Group norm of x [B,C,...] over groups of C/groups channels, optional affine weight/bias [C]; `silu` applies
   * x·sigmoid(x) to the result in the same pass (diffusers' norm → SiLU pairs), rounding once.
   */
  groupNorm(x: Tensor, groups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5, opts: { silu?: boolean } = {}): Tensor {
    return wrap(
      binding().groupNorm(
        h(x, 'groupNorm', 'x'),
        groups,
        hOpt(weight, 'groupNorm', 'weight'),
        hOpt(bias, 'groupNorm', 'bias'),
        eps,
        opts.silu ?? false,
      ),
    );
  },

  softmax(x: Tensor, dim = -1): Tensor {
    return wrap(binding().softmax(h(x, 'softmax', 'x'), normDim(dim, x.ndim, 'softmax')));
  },

  /** GELU: exact (erf) or the tanh approximation. */
  gelu(x: Tensor, approximate: GeluApproximation = 'none'): Tensor {
    if (approximate !== 'none' && approximate !== 'tanh') {
      throw new RangeError(`ops.gelu: approximate must be 'none' or 'tanh', got '${String(approximate)}'`);
    }
    return wrap(binding().unary(h(x, 'gelu', 'x'), approximate === 'tanh' ? 'gelu_tanh' : 'gelu', 0, 0));
  },

  /** x · sigmoid(1.702 x) (CLIP). */
  quickGelu(x: Tensor): Tensor {
    return wrap(binding().unary(h(x, 'quickGelu', 'x'), 'quick_gelu', 0, 0));
  },

  silu(x: Tensor): Tensor {
    return wrap(binding().unary(h(x, 'silu', 'x'), 'silu', 0, 0));
  },

  tanh(x: Tensor): Tensor {
    return wrap(binding().unary(h(x, 'tanh', 'x'), 'tanh', 0, 0));
  },

  sigmoid(x: Tensor): Tensor {
    return wrap(binding().unary(h(x, 'sigmoid', 'x'), 'sigmoid', 0, 0));
  },

  exp(x: Tensor): Tensor {
    return wrap(binding().unary(h(x, 'exp', 'x'), 'exp', 0, 0));
  },

  /** x · s. */
  scale(x: Tensor, s: number): Tensor {
    return wrap(binding().unary(h(x, 'scale', 'x'), 'scale', s, 0));
  },

  /** x · s + t (an affine map of every element, e.g. image post-processing x/2+0.5). */
  affine(x: Tensor, s: number, t: number): Tensor {
    return wrap(binding().unary(h(x, 'affine', 'x'), 'affine', s, t));
  },

  /** min(max(x, lo), hi). */
  clamp(x: Tensor, lo: number, hi: number): Tensor {
    return wrap(binding().unary(h(x, 'clamp', 'x'), 'clamp', lo, hi));
  },

  /** a + b with numpy broadcasting. */
  add(a: Tensor, b: Tensor): Tensor {
    return wrap(binding().binary(h(a, 'add', 'a'), h(b, 'add', 'b'), 'add'));
  },

  sub(a: Tensor, b: Tensor): Tensor {
    return wrap(binding().binary(h(a, 'sub', 'a'), h(b, 'sub', 'b'), 'sub'));
  },

  mul(a: Tensor, b: Tensor): Tensor {
    return wrap(binding().binary(h(a, 'mul', 'a'), h(b, 'mul', 'b'), 'mul'));
  },

  div(a: Tensor, b: Tensor): Tensor {
    return wrap(binding().binary(h(a, 'div', 'a'), h(b, 'div', 'b'), 'div'));
  },

  /** Flux's modulation x·(1+scale)+shift; shift and scale broadcast against x (e.g. [B,1,D] vs [B,L,D]). */
  modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
    return wrap(binding().modulate(h(x, 'modulate', 'x'), h(shift, 'modulate', 'shift'), h(scale, 'modulate', 'scale')));
  },

  /** Concatenation along `dim`; all inputs share dtype, device and the other dims. */
  concat(ts: Tensor[], dim: number): Tensor {
    if (!Array.isArray(ts) || ts.length === 0) throw new RangeError('ops.concat: needs at least one tensor');
    const handles = ts.map((t, i) => h(t, 'concat', `ts[${i}]`));
    return wrap(binding().concat(handles, normDim(dim, ts[0].ndim, 'concat')));
  },

  /** Pieces along `dim`: of the given sizes, or of `size` each (the last may be smaller), like torch.split. */
  split(x: Tensor, sizes: number[] | number, dim: number): Tensor[] {
    const d = normDim(dim, x.ndim, 'split');
    const total = x.shape[d];
    let pieces: number[];
    if (typeof sizes === 'number') {
      if (!Number.isInteger(sizes) || sizes <= 0) throw new RangeError(`ops.split: invalid split size ${sizes}`);
      pieces = [];
      for (let s = 0; s < total; s += sizes) pieces.push(Math.min(sizes, total - s));
    } else {
      pieces = sizes;
      if (pieces.reduce((a, b) => a + b, 0) !== total || pieces.some((p) => !Number.isInteger(p) || p < 0)) {
        throw new RangeError(`ops.split: sizes [${sizes.join(',')}] do not add up to ${total} (dim ${dim} of ${x.describe()})`);
      }
    }
    const out: Tensor[] = [];
    let start = 0;
    try {
      for (const p of pieces) {
        out.push(ops.slice(x, d, start, start + p));
        start += p;
      }
    } catch (err) {
      for (const t of out) t.dispose();
      throw err;
    }
    return out;
  },

  /**
   * Elements start ≤ i < end along `dim` (negative indices count from the end; clamped like Python slices).
   * A view when the result is contiguous in x's storage, else a copy.
   */
  slice(x: Tensor, dim: number, start: number, end: number): Tensor {
    const d = normDim(dim, x.ndim, 'slice');
    const n = x.shape[d];
    const clampIndex = (i: number): number => Math.min(Math.max(i < 0 ? i + n : i, 0), n);
    const s = clampIndex(start);
    const e = Math.max(clampIndex(end), s);
    return wrap(binding().slice(h(x, 'slice', 'x'), d, s, e));
  },

  /** Reorders dims (a copy; dims is a permutation, negative allowed). */
  permute(x: Tensor, dims: number[]): Tensor {
    const nd = dims.map((d) => normDim(d, x.ndim, 'permute'));
    if (nd.length !== x.ndim || new Set(nd).size !== nd.length) {
      throw new RangeError(`ops.permute: [${dims.join(',')}] is not a permutation of ${x.ndim} dims`);
    }
    return wrap(binding().permute(h(x, 'permute', 'x'), nd));
  },

  /** Swaps two dims (a copy). */
  transpose(x: Tensor, dim0: number, dim1: number): Tensor {
    const dims = x.shape.map((_, i) => i);
    const a = normDim(dim0, x.ndim, 'transpose');
    const b = normDim(dim1, x.ndim, 'transpose');
    [dims[a], dims[b]] = [dims[b], dims[a]];
    return ops.permute(x, dims);
  },

  /** Storage is always contiguous: returns a new handle (a view) on the same data. */
  contiguous(x: Tensor): Tensor {
    return wrap(binding().view(h(x, 'contiguous', 'x'), [...x.shape]));
  },

  /** Rows of weight [V,D] at ids (int32/int64, any shape [...]) → [...,D]. Out-of-range ids throw (CPU) or read 0 (CUDA). */
  embedding(weight: Tensor, ids: Tensor): Tensor {
    return wrap(binding().embedding(h(weight, 'embedding', 'weight'), h(ids, 'embedding', 'ids')));
  },

  /**
   * Flux's apply_rotary_emb (use_real, unbind_dim -1): x [B,H,L,D] with interleaved pairs (x[2i], x[2i+1]);
   * out = x·cos + rotate(x)·sin with rotate(x)[2i] = −x[2i+1], rotate(x)[2i+1] = x[2i]; cos/sin [L,D]
   * (each frequency repeated twice, as FluxPosEmbed returns them). Computed in float32.
   */
  rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    return wrap(binding().rope(h(x, 'rope', 'x'), h(cos, 'rope', 'cos'), h(sin, 'rope', 'sin')));
  },

  /**
   * 2-D convolution, NCHW: x [B,Cin,H,W], w [Cout,Cin,kh,kw], bias [Cout]; square stride and zero padding.
   * `upsample: 'nearest2x'` convolves upsampleNearest2x(x) (diffusers' Upsample2D) without materialising the
   * upsampled tensor on CUDA. `norm` convolves groupNorm(x, groups, weight, bias, eps, { silu }) instead of x
   * (diffusers' norm → SiLU → conv), bit for bit the two ops, without storing the normalised x on CUDA (bf16/f16).
   */
  conv2d(x: Tensor, w: Tensor, b?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
    if (opts.upsample !== undefined && opts.upsample !== 'nearest2x') {
      throw new RangeError(`ops.conv2d: upsample must be 'nearest2x', got '${String(opts.upsample)}'`);
    }
    const norm = opts.norm;
    if (norm && !(Number.isInteger(norm.groups) && norm.groups > 0)) {
      throw new RangeError(`ops.conv2d: norm.groups must be a positive integer, got ${String(norm.groups)}`);
    }
    return wrap(
      binding().conv2d(
        h(x, 'conv2d', 'x'),
        h(w, 'conv2d', 'w'),
        hOpt(b, 'conv2d', 'bias'),
        opts.stride ?? 1,
        opts.padding ?? 0,
        opts.upsample === 'nearest2x',
        norm?.groups ?? 0,
        hOpt(norm?.weight, 'conv2d', 'norm.weight'),
        hOpt(norm?.bias, 'conv2d', 'norm.bias'),
        norm?.eps ?? 1e-5,
        norm?.silu ?? false,
      ),
    );
  },

  /** Nearest-neighbour 2× upsampling of [B,C,H,W] → [B,C,2H,2W]. */
  upsampleNearest2x(x: Tensor): Tensor {
    return wrap(binding().upsampleNearest2x(h(x, 'upsampleNearest2x', 'x')));
  },

  /** A copy in another dtype (float↔float, float↔int with truncation toward zero, like torch). */
  cast(x: Tensor, dtype: DType): Tensor {
    if (!isDType(dtype)) throw new TypeError(`ops.cast: unknown dtype '${String(dtype)}'`);
    if (x instanceof NF4Tensor || dtype === 'nf4') {
      if (x instanceof NF4Tensor && dtype !== 'nf4') return ops.nf4Dequantize(x, dtype);
      throw new TypeError(`ops.cast: use ops.nf4Quantize to make nf4 tensors`);
    }
    return x.to({ dtype });
  },

  /**
   * bitsandbytes NF4 quantization of w [N,K] (float32/bfloat16/float16, on its device), byte-identical to
   * `bnb.functional.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=doubleQuant)`.
   */
  nf4Quantize(w: Tensor, opts: { blocksize?: number; doubleQuant?: boolean } = {}): NF4Tensor {
    const blocksize = opts.blocksize ?? 64;
    if (w.ndim !== 2) throw new RangeError(`ops.nf4Quantize: expects a 2-D weight [N,K], got ${w.describe()}`);
    const parts = binding().nf4Quantize(h(w, 'nf4Quantize', 'w'), blocksize, opts.doubleQuant ?? false, 256);
    return NF4Tensor.fromNativeParts(
      parts,
      w.shape[0],
      w.shape[1],
      blocksize,
      opts.doubleQuant ? 256 : 0,
      w.dtype as DenseDType,
    );
  },

  /** The dense weight of an nf4 tensor (as bitsandbytes' dequantize_4bit computes it), default float32. */
  nf4Dequantize(q: Tensor, dtype: DType = 'float32'): Tensor {
    if (!(q instanceof NF4Tensor)) throw new TypeError(`ops.nf4Dequantize: expects an nf4 tensor, got ${q.describe()}`);
    if (!isDType(dtype) || dtype === 'nf4') throw new TypeError(`ops.nf4Dequantize: invalid dtype '${String(dtype)}'`);
    return wrap(binding().nf4Dequantize(q.nf4Handle('ops.nf4Dequantize'), dtype));
  },
};

/** The 16 NF4 code values (bitsandbytes' quant_map), ascending. */
export function nf4CodeValues(): Float32Array {
  return binding().nf4CodeValues();
}

/** bitsandbytes' create_dynamic_map (signed: the 256-entry map double quantization uses). */
export function dynamicMap(signed = true): Float32Array {
  return binding().dynamicMap(signed);
}

export { describeShape };
