// CUDA graphs of a model's forward, keyed by the inputs' shapes and dtypes — what torch.compile(mode=
// "reduce-overhead") gets from CUDA graphs, without a compiler: capture records the kernel launches of one forward,
// so it takes a fraction of a second rather than minutes. The first call at a new signature runs eagerly (its
// result is returned), then the same forward is captured over static copies of the inputs; later calls copy their
// inputs into those tensors (device to device, on the current stream), replay, and return a copy of the static
// output (replays overwrite it). Every launch of a replay is the launch the eager forward made, in the same order,
// so results are bitwise those of eager execution. Graph memory (the private pool holding the captured forward's
// activations, plus the static tensors) stays reserved until dispose().
import { Tensor, cuda, keep, memory, type Device } from '@fluxlab/native';

/** cuda.captureGraph's graph (docs/native.md). */
export interface CapturedGraph {
  replay(): void;
  dispose(): void;
  readonly memoryBytes: number;
}

/** cuda.captureGraph's contract: records fn's device work into a graph, returns it and fn's result. */
export type CaptureFn = <T>(fn: () => T, opts?: { device?: number; tag?: string }) => { graph: CapturedGraph; result: T };

interface CaptureApi {
  captureGraph: CaptureFn;
}

/** 'cuda' → undefined (the current device), 'cuda:N' → N. */
function deviceIndex(device: Device): number | undefined {
  const m = /^cuda:(\d+)$/.exec(device);
  return m ? Number(m[1]) : undefined;
}

export interface GraphInfo {
  /** The input signature: each input's shape and dtype. */
  key: string;
  /** Host milliseconds to record and instantiate the graph (the eager forward before it not included). */
  captureMs: number;
  /** Bytes of the graph's private memory pool (the captured forward's intermediate tensors). */
  poolBytes: number;
  /** Bytes of the static input tensors (the static output lives in the pool). */
  staticBytes: number;
  /** Times the graph ran. */
  replays: number;
}

export type GraphInputs = Record<string, Tensor | undefined>;

interface Entry {
  info: GraphInfo;
  graph: CapturedGraph;
  inputs: Record<string, Tensor>;
  output: Tensor;
}

/** Whether the loaded addon can capture CUDA graphs, and why not. */
export function graphCaptureUnavailableReason(device: Device): string | undefined {
  if (device === 'cpu') return 'CUDA graphs need a CUDA device';
  if (typeof (cuda as unknown as Partial<CaptureApi>).captureGraph !== 'function') return 'this build of @fluxlab/native has no cuda.captureGraph';
  return undefined;
}

function signature(inputs: GraphInputs): string {
  return Object.entries(inputs)
    .filter(([, t]) => t !== undefined)
    .map(([name, t]) => `${name}:[${t!.shape.join(',')}]${t!.dtype}`)
    .join(' ');
}

export class GraphCache<I extends GraphInputs> {
  private readonly entries = new Map<string, Entry>();

  constructor(
    readonly device: Device,
    /** Allocation tag of the graphs' memory (memory.stats().byTag). */
    readonly tag: string,
    /** The eager forward; it must not synchronise with the host (ops never do; toArray() and item() do). */
    private readonly forward: (inputs: I) => Tensor,
    /** The capture (default cuda.captureGraph; tests pass their own). */
    private readonly captureGraph: CaptureFn = (cuda as unknown as CaptureApi).captureGraph,
  ) {
    const reason = graphCaptureUnavailableReason(device);
    if (reason !== undefined && captureGraph === (cuda as unknown as CaptureApi).captureGraph) throw new Error(`compile(): ${reason}`);
  }

  /** The forward's result for `inputs`: eager and then captured at a new signature, replayed afterwards. */
  call(inputs: I): Tensor {
    const key = signature(inputs);
    const entry = this.entries.get(key);
    if (entry === undefined) {
      const result = this.forward(inputs);
      this.entries.set(key, this.capture(key, inputs));
      return result;
    }
    // nonBlocking: device-to-device copies queue on the current stream, before the replay (a blocking copy would
    // wait for the previous step and stop the host from running ahead).
    for (const [name, t] of Object.entries(inputs)) if (t !== undefined) entry.inputs[name].copyFrom(t, { nonBlocking: true });
    entry.graph.replay();
    entry.info.replays++;
    return entry.output.to(this.device);
  }

  private capture(key: string, inputs: I): Entry {
    return memory.withTag(this.tag, () => {
      const statics: Record<string, Tensor> = {};
      for (const [name, t] of Object.entries(inputs)) if (t !== undefined) statics[name] = keep(t.to(this.device));
      const start = performance.now();
      let captured: { graph: CapturedGraph; result: Tensor };
      try {
        captured = this.captureGraph(() => this.forward(statics as I), { device: deviceIndex(this.device), tag: this.tag });
      } catch (err) {
        for (const t of Object.values(statics)) t.dispose();
        const e = err as Error & { code?: string };
        throw Object.assign(new Error(`compile(): capturing the forward for ${key} failed: ${e.message}`), { code: e.code, cause: err });
      }
      const captureMs = performance.now() - start;
      const output = keep(captured.result);
      const staticBytes = Object.values(statics).reduce((sum, t) => sum + t.byteLength, 0);
      return {
        info: { key, captureMs, poolBytes: captured.graph.memoryBytes, staticBytes, replays: 0 },
        graph: captured.graph,
        inputs: statics,
        output,
      };
    });
  }

  /** One record per captured signature. */
  info(): GraphInfo[] {
    return [...this.entries.values()].map((e) => ({ ...e.info }));
  }

  /** Bytes the graphs hold (pools and static tensors). */
  get bytes(): number {
    return [...this.entries.values()].reduce((sum, e) => sum + e.info.poolBytes + e.info.staticBytes, 0);
  }

  /** Frees every graph, its pool and its static tensors. */
  dispose(): void {
    for (const entry of this.entries.values()) {
      entry.graph.dispose();
      for (const t of Object.values(entry.inputs)) t.dispose();
      entry.output.dispose();
    }
    this.entries.clear();
  }
}
