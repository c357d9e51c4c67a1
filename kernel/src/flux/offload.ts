// CPU offloading, the third axis of the diffusers guide "Compile and offloading quantized models": weights live in
// pinned host memory and are copied to the GPU around the calls that need them, with diffusers' semantics.
// - model offload (enable_model_cpu_offload): a whole component is uploaded when it is called and the previously
//   used one leaves (accelerate's CpuOffload hook chain text_encoder → text_encoder_2 → transformer → vae); it stays
//   resident between its own calls (the 28 transformer steps) until another component runs or the pipeline call ends.
// - group offload (apply_group_offloading): 'block_level' groups of consecutive blocks (the arrays of modules a model
//   repeats: transformer_blocks, encoder.block, ...; the rest of the model is one group held for the whole call) or
//   'leaf_level' groups of one module's own weights (a Linear, a norm, a conv). A group is uploaded before its first
//   module runs and dropped after its last; with useStream the next group (in the order the first call recorded) is
//   copied on a side CUDA stream while the current one computes, and compute waits only for its own group's event.
// - sequential offload (enable_sequential_cpu_offload) is leaf_level without the side stream on every component.
// How: the model's tree is walked (fields holding tensors are its parameters, objects with forward() its modules,
// named as the checkpoint keys), each parameter field becomes a getter that returns the device copy while its group is
// resident, and the modules' forward methods are wrapped, as accelerate wraps module.forward. A weight read outside
// its group's window (a norm weight read by its parent, T5's position bias read by the encoder) is uploaded on that
// read and kept until the enclosing module call returns, so any access pattern computes correctly. Host copies are
// made once; device copies are never copied back (weights do not change), only dropped. Every decision (what is
// where, which hook fires, prefetch order, what is freed) is made here over an OffloadTransport: CUDA pinned memory
// and streams in the library (CudaTransport), fakes in the specs.
import { Event, NF4Tensor, Stream, Tensor, cuda, keep, memory, resolveDevice, type Device } from '@fluxlab/native';
import { CLIPTextModel } from './clip';
import { T5EncoderModel } from './t5';
import { FluxTransformer2DModel } from './transformer';
import { AutoencoderKL } from './vae';

export type GroupOffloadType = 'block_level' | 'leaf_level';

/** diffusers' apply_group_offloading(offload_type, num_blocks_per_group, use_stream). */
export interface GroupOffloadOptions {
  type: GroupOffloadType;
  /** block_level: consecutive blocks per group (diffusers' num_blocks_per_group; required there). */
  blocksPerGroup?: number;
  /** Copy the next group on a side CUDA stream while the current one computes (diffusers' use_stream). */
  useStream?: boolean;
}

/** How one model is offloaded: whole (model offload) or by groups. */
export type OffloadPolicy = { kind: 'model' } | ({ kind: 'group' } & GroupOffloadOptions);

/**
 * Moves parameters between host and device memory. `P` is the parameter type (Tensor in the library), `F` a fence
 * that marks the end of prefetch copies (a CUDA event).
 */
export interface OffloadTransport<P, F = unknown> {
  isParameter(value: unknown): value is P;
  /** The host copy kept while offloaded (pinned on CUDA, so uploads are asynchronous), made from the loaded weight. */
  toHost(param: P, tag: string): P;
  /** A device copy of `host`, queued on the current stream or on the prefetch (side) stream; nothing waits. */
  toDevice(host: P, tag: string, stream: 'current' | 'prefetch'): P;
  /** A fence after the prefetch copies queued so far. */
  fence(): F;
  /** The current stream waits for `fence` (not the host), and `params`, copied on the side stream, are marked as used by it. */
  waitFence(fence: F, params: readonly P[]): void;
  /** Forgets a fence nobody will wait for (its group was dropped before use). */
  dropFence(fence: F): void;
  bytes(param: P): number;
  release(param: P): void;
  /** Returns cached free device memory to the driver (accelerate clears the cache when a model is offloaded). */
  emptyCache(): void;
  /** Waits until every queued copy is done (before host copies are freed). */
  synchronize(): void;
  /** Frees what the transport holds (the side stream); it stays usable (a later prefetch makes a new stream). */
  dispose(): void;
}

/** Something the offloader did, for specs and curious users. */
export interface OffloadEvent {
  type: 'onload' | 'prefetch' | 'wait' | 'offload' | 'graphs-dropped' | 'uncompiled';
  /** The component (allocation tag). */
  model: string;
  /** The group: the component itself (model offload), e.g. 'transformer_blocks.2-3', or a module name. */
  group: string;
}

export interface OffloadComponentInfo {
  name: string;
  policy: string;
  groups: number;
  /** Groups on the device now. */
  residentGroups: number;
  parameters: number;
  /** Bytes of the host copies (pinned on CUDA). */
  hostBytes: number;
  /** Bytes of the device copies alive now. */
  deviceBytes: number;
}

export interface OffloadInfo {
  components: OffloadComponentInfo[];
  hostBytes: number;
  deviceBytes: number;
}

/** A parameter field: `owner[key]` holds it. */
interface Slot {
  owner: object;
  key: string;
}

/** A module call the offloader watches: `object[method]` is wrapped. */
interface PlannedModule {
  name: string;
  object: object;
  method: string;
}

interface PlannedParameter<P> {
  name: string;
  value: P;
  slots: Slot[];
}

interface PlannedGroup<P> {
  name: string;
  params: PlannedParameter<P>[];
  /** Whose call uploads the group (its first module) and whose return drops it (its last). */
  onloadLeader: object;
  offloadLeader: object;
}

/** What planOffload found in a model: its entry method, the module calls to watch, the groups. */
export interface OffloadPlan<P> {
  entry: string;
  modules: PlannedModule[];
  groups: PlannedGroup<P>[];
}

function isModule(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as { forward?: unknown }).forward === 'function';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Further methods that run a model whole outside its entry, listed by the model (FluxTransformer2DModel's
 * modulationTable): model offload hooks them like the entry. Group and sequential offload need not: they watch every
 * module call, these methods' included.
 */
export function wholeModelMethods(model: object): readonly string[] {
  const listed = (model as { wholeModelMethods?: unknown }).wholeModelMethods;
  if (listed === undefined) return [];
  if (!Array.isArray(listed) || !listed.every((m) => typeof m === 'string' && typeof (model as Record<string, unknown>)[m] === 'function')) {
    throw new Error(`offload: ${model.constructor.name}.wholeModelMethods must name its methods, got ${JSON.stringify(listed)}`);
  }
  return listed;
}

/**
 * Tells a model that asks (FluxTransformer2DModel.setWeightsStreamed) whether its weights now stream through the
 * device group by group, so that it does not read every block's weights at once.
 */
function tellStreamed(model: object, streamed: boolean): void {
  const listener = (model as { setWeightsStreamed?: unknown }).setWeightsStreamed;
  if (typeof listener === 'function') listener.call(model, streamed);
}

/** The method that runs a model: forward, or decode for the VAE (diffusers hooks AutoencoderKL.decode likewise). */
export function entryMethod(model: object): string {
  const m = model as Record<string, unknown>;
  if (typeof m.forward === 'function') return 'forward';
  if (typeof m.decode === 'function') return 'decode';
  throw new Error(`offload: ${model.constructor.name} has neither forward() nor decode() to hook`);
}

/**
 * Finds a model's parameters, modules and groups. Parameters are the values `isParameter` accepts, reached through
 * modules (objects with forward()), arrays and plain objects (not through other class instances: loaders, graph
 * caches); their names are the paths of fields from the model, Linear layers named as linearLayers() lists them
 * (the checkpoint keys). A block list is an array of modules outside any block; block_level cuts each into groups of
 * `blocksPerGroup`, everything outside block lists being one more group led by the entry. leaf_level makes a group
 * of each module's own parameters (those not inside a child module). A tensor reachable from two fields is one
 * parameter with two slots.
 */
export function planOffload<P>(model: object, policy: OffloadPolicy, isParameter: (value: unknown) => value is P): OffloadPlan<P> {
  const entry = entryMethod(model);
  const linearNames = new Map<object, string>();
  const layers = (model as { linearLayers?: () => ReadonlyMap<string, object> }).linearLayers;
  if (typeof layers === 'function') for (const [name, layer] of layers.call(model)) linearNames.set(layer, name);

  const params = new Map<P, PlannedParameter<P> & { module: object; block?: { list: string; index: number; object: object } }>();
  const order: P[] = [];
  const modules: PlannedModule[] = [{ name: '', object: model, method: entry }];
  const blockLists: { name: string; blocks: object[] }[] = [];
  const seen = new Set<object>([model]);

  const visit = (node: object, path: string, module: object, block: { list: string; index: number; object: object } | undefined): void => {
    const entries: [string, unknown][] = Array.isArray(node) ? node.map((v, i) => [String(i), v]) : Object.entries(node);
    const blockList = Array.isArray(node) && block === undefined && node.length > 0 && node.every(isModule);
    if (blockList) blockLists.push({ name: path, blocks: node as object[] });
    for (const [key, value] of entries) {
      if (isParameter(value)) {
        const name = linearNames.has(node) ? `${linearNames.get(node)}.${key}` : path === '' ? key : `${path}.${key}`;
        const known = params.get(value);
        if (known) known.slots.push({ owner: node, key });
        else {
          params.set(value, { name, value, slots: [{ owner: node, key }], module, block });
          order.push(value);
        }
        continue;
      }
      if (typeof value !== 'object' || value === null || seen.has(value)) continue;
      const childPath = path === '' ? key : `${path}.${key}`;
      if (isModule(value)) {
        seen.add(value);
        modules.push({ name: linearNames.get(value) ?? childPath, object: value, method: 'forward' });
        visit(value, childPath, value, blockList ? { list: path, index: Number(key), object: value } : block);
      } else if (Array.isArray(value) || isPlainObject(value)) {
        seen.add(value);
        visit(value, childPath, module, block);
      }
    }
  };
  visit(model, '', model, undefined);

  const all = order.map((p) => params.get(p)!);
  const strip = ({ name, value, slots }: PlannedParameter<P>): PlannedParameter<P> => ({ name, value, slots });
  const groups: PlannedGroup<P>[] = [];
  if (policy.kind === 'model') {
    groups.push({ name: '', params: all.map(strip), onloadLeader: model, offloadLeader: model });
  } else if (policy.type === 'block_level') {
    const per = policy.blocksPerGroup!;
    const outside = all.filter((p) => p.block === undefined);
    if (outside.length > 0) groups.push({ name: '(outside blocks)', params: outside.map(strip), onloadLeader: model, offloadLeader: model });
    for (const list of blockLists) {
      for (let start = 0; start < list.blocks.length; start += per) {
        const blocks = list.blocks.slice(start, start + per);
        const members = all.filter((p) => p.block !== undefined && blocks.includes(p.block.object));
        const last = start + blocks.length - 1;
        const name = `${list.name}.${start}${last > start ? `-${last}` : ''}`;
        if (members.length > 0) groups.push({ name, params: members.map(strip), onloadLeader: blocks[0], offloadLeader: blocks[blocks.length - 1] });
      }
    }
  } else {
    const byModule = new Map<object, PlannedParameter<P>[]>();
    for (const p of all) byModule.set(p.module, [...(byModule.get(p.module) ?? []), strip(p)]);
    for (const m of modules) {
      const own = byModule.get(m.object);
      if (own !== undefined) groups.push({ name: m.name, params: own, onloadLeader: m.object, offloadLeader: m.object });
    }
  }
  return { entry, modules, groups };
}

/** A model whose forward may be captured as CUDA graphs (FluxTransformer2DModel). */
interface Compilable {
  readonly compiled: boolean;
  compile(): unknown;
  uncompile(): void;
}

function isCompilable(model: object): model is Compilable {
  const m = model as Partial<Compilable>;
  return typeof m.compile === 'function' && typeof m.uncompile === 'function' && typeof m.compiled === 'boolean';
}

type Residency = 'host' | 'prefetching' | 'device';

class Parameter<P> {
  device?: P;
  group!: Group<P>;

  constructor(
    readonly name: string,
    public host: P,
    readonly slots: Slot[],
    readonly bytes: number,
  ) {}
}

class Group<P> {
  state: Residency = 'host';
  fence?: unknown;
  /** From its onload leader's call to its offload leader's return. */
  spanning = false;
  /** Module calls, still running, that read its weights (outside the span or beside it). */
  frameHolds = 0;

  constructor(
    readonly name: string,
    readonly model: Attached<P>,
    readonly params: Parameter<P>[],
  ) {}

  get label(): string {
    return this.name === '' ? this.model.name : this.name;
  }
}

interface Frame<P> {
  model: Attached<P>;
  touched: Set<Group<P>>;
}

class Attached<P> {
  params: Parameter<P>[] = [];
  groups: Group<P>[] = [];
  unhook: (() => void)[] = [];
  /** Groups in the order the first complete call entered them (the prefetch order). */
  order?: Map<Group<P>, number>;
  orderList?: Group<P>[];
  recording?: Group<P>[];
  /** Module calls of this model running now. */
  activeFrames = 0;
  compileWarned = false;

  constructor(
    readonly model: object,
    readonly name: string,
    public policy: OffloadPolicy,
  ) {}

  get streamed(): boolean {
    return this.policy.kind === 'group';
  }

  get useStream(): boolean {
    return this.policy.kind === 'group' && this.policy.useStream === true;
  }
}

/** Per model object: who offloads it, and weights that disableOffload gave back (its dispose() frees them). */
interface ModelRecord {
  offloader?: Offloader<never>;
  restored: Map<unknown, (p: unknown) => void>;
}

const records = new WeakMap<object, ModelRecord>();

function recordOf(model: object): ModelRecord {
  let record = records.get(model);
  if (record !== undefined) return record;
  const made: ModelRecord = { restored: new Map() };
  records.set(model, made);
  const target = model as { dispose?: () => void };
  const dispose = target.dispose;
  if (typeof dispose === 'function') {
    // Installed once and kept: offloaded or restored weights are no longer in the model's own loader scope.
    Object.defineProperty(model, 'dispose', {
      configurable: true,
      writable: true,
      value: function disposeOffloaded(this: object): void {
        made.offloader?.detach(model, { restore: false });
        for (const [param, release] of made.restored) release(param);
        made.restored.clear();
        dispose.call(model);
      },
    });
  }
  record = made;
  return record;
}

/** Wraps `object[method]` (an own property shadowing the prototype's); the returned function undoes it. */
function wrapMethod(object: object, method: string, around: (call: () => unknown) => unknown): () => void {
  const target = object as Record<string, unknown>;
  const own = Object.prototype.hasOwnProperty.call(object, method);
  const original = target[method] as (...args: unknown[]) => unknown;
  Object.defineProperty(object, method, {
    configurable: true,
    writable: true,
    value: function offloadHook(this: unknown, ...args: unknown[]): unknown {
      return around(() => original.apply(this, args));
    },
  });
  return () => {
    if (own) Object.defineProperty(object, method, { configurable: true, writable: true, value: original });
    else delete target[method];
  };
}

function setSlot(slot: Slot, value: unknown): void {
  Object.defineProperty(slot.owner, slot.key, { configurable: true, enumerable: true, writable: true, value });
}

function describePolicy(policy: OffloadPolicy): string {
  if (policy.kind === 'model') return 'model';
  const blocks = policy.type === 'block_level' ? ` ${policy.blocksPerGroup} block(s)/group` : '';
  return `${policy.type}${blocks}${policy.useStream ? ', stream' : ''}`;
}

/** Checks group options as diffusers does (block_level needs num_blocks_per_group). */
export function checkGroupOptions(options: GroupOffloadOptions, what: string): GroupOffloadOptions {
  if (typeof options !== 'object' || options === null) throw new Error(`${what}: expects { type: 'block_level' | 'leaf_level', blocksPerGroup?, useStream? }`);
  const { type, blocksPerGroup, useStream } = options;
  if (type !== 'block_level' && type !== 'leaf_level') throw new Error(`${what}: type '${String(type)}' is not 'block_level' or 'leaf_level'`);
  if (type === 'block_level') {
    if (blocksPerGroup === undefined) throw new Error(`${what}: blocksPerGroup is required for 'block_level' (diffusers' num_blocks_per_group)`);
    if (!Number.isInteger(blocksPerGroup) || blocksPerGroup < 1) throw new Error(`${what}: blocksPerGroup must be a positive integer, got ${String(blocksPerGroup)}`);
  } else if (blocksPerGroup !== undefined) {
    throw new Error(`${what}: blocksPerGroup applies to 'block_level' only (leaf_level groups are single modules)`);
  }
  if (useStream !== undefined && typeof useStream !== 'boolean') throw new Error(`${what}: useStream must be a boolean`);
  return { type, blocksPerGroup, useStream: useStream ?? false };
}

/**
 * Offloads models over one transport. attach() moves a model's weights to host copies and hooks its calls; the
 * hooks upload, prefetch and drop groups. A model is attached to one offloader at a time; attach() again with another
 * policy regroups the same host copies (no copy). detach() restores the weights to the device or, when the model is
 * being disposed, frees everything.
 */
export class Offloader<P extends object> {
  private readonly attached = new Map<object, Attached<P>>();
  private readonly frames: Frame<P>[] = [];
  private disposed = false;

  constructor(
    readonly transport: OffloadTransport<P>,
    private readonly observe: { onEvent?: (event: OffloadEvent) => void; warn?: (message: string) => void } = {},
  ) {}

  private emit(type: OffloadEvent['type'], group: Group<P> | Attached<P>): void {
    if (this.observe.onEvent === undefined) return;
    const model = group instanceof Group ? group.model.name : group.name;
    this.observe.onEvent({ type, model, group: group instanceof Group ? group.label : group.name });
  }

  private warn(message: string): void {
    (this.observe.warn ?? ((m: string) => console.warn(m)))(message);
  }

  /**
   * Offloads `model` under `policy`, its allocations tagged `name` (the pipeline's component name). Its weights
   * leave the device now (one copy each to host memory); a compiled model's graphs are dropped (they read the old
   * device addresses). Throws, leaving the model as it was, if a copy fails.
   */
  attach(model: object, name: string, policy: OffloadPolicy): void {
    if (this.disposed) throw new Error('offload: this offloader was disposed');
    if (policy.kind === 'group') checkGroupOptions(policy, 'offload');
    const record = recordOf(model);
    const existing = this.attached.get(model);
    if (record.offloader !== undefined && record.offloader !== (this as unknown as Offloader<never>)) {
      throw new Error(`offload: ${name} is already offloaded by another pipeline or handle; disable that first`);
    }
    if (existing !== undefined) {
      this.regroup(existing, policy);
      return;
    }
    const attached = new Attached<P>(model, name, policy);
    const plan = planOffload(model, policy, this.transport.isParameter);
    const moved: { planned: PlannedParameter<P>; param: Parameter<P> }[] = [];
    try {
      for (const group of plan.groups) {
        for (const planned of group.params) {
          const host = this.transport.toHost(planned.value, name);
          const param = new Parameter<P>(planned.name, host, planned.slots, this.transport.bytes(host));
          moved.push({ planned, param });
        }
      }
    } catch (err) {
      for (const { param } of moved) this.transport.release(param.host);
      throw err;
    }
    // Every copy exists. Graphs captured over the loaded weights go first, then the weights themselves (and the
    // record of weights a previous detach gave back).
    if (isCompilable(model) && model.compiled) {
      if (attached.streamed) this.stopCompiled(attached);
      else this.dropGraphs(attached);
    }
    for (const { planned } of moved) {
      record.restored.delete(planned.value);
      this.transport.release(planned.value);
    }
    const byValue = new Map(moved.map(({ planned, param }) => [planned.value, param] as const));
    attached.params = moved.map((m) => m.param);
    for (const param of attached.params) this.installGetter(attached, param);
    this.attached.set(model, attached);
    record.offloader = this as unknown as Offloader<never>;
    this.group(attached, plan, byValue);
    this.hook(attached, plan);
    tellStreamed(model, attached.streamed);
  }

  /** Whether compile() is refused for `model`: its weights stream through the device block by block. */
  compileBlockedReason(model: object): string | undefined {
    const attached = this.attached.get(model);
    if (attached === undefined || !attached.streamed) return undefined;
    return (
      `${attached.name} is group-offloaded (${describePolicy(attached.policy)}): its weights are uploaded and freed ` +
      'block by block inside each call, and a CUDA graph replays fixed device addresses, so it runs eagerly ' +
      '(model offload, enableModelCpuOffload(), keeps compile)'
    );
  }

  private installGetter(attached: Attached<P>, param: Parameter<P>): void {
    for (const slot of param.slots) {
      Object.defineProperty(slot.owner, slot.key, {
        configurable: true,
        enumerable: true,
        get: () => this.resolve(param),
        set: () => {
          throw new Error(`${attached.name}: ${param.name} is offloaded; disable offloading before replacing weights`);
        },
      });
    }
  }

  private regroup(attached: Attached<P>, policy: OffloadPolicy): void {
    if (attached.activeFrames > 0) throw new Error(`offload: ${attached.name} is running; change its offloading between calls`);
    for (const undo of attached.unhook.splice(0)) undo();
    for (const g of attached.groups) this.offload(g);
    attached.policy = policy;
    attached.order = attached.orderList = attached.recording = undefined;
    attached.compileWarned = false;
    // The getters answer host copies now (nothing resident, no call running): the walk finds those.
    const plan = planOffload(attached.model, policy, this.transport.isParameter);
    const byValue = new Map(attached.params.map((p) => [p.host, p] as const));
    this.group(attached, plan, byValue);
    this.hook(attached, plan);
    tellStreamed(attached.model, attached.streamed);
    if (isCompilable(attached.model) && attached.model.compiled && attached.streamed) this.stopCompiled(attached);
  }

  private group(attached: Attached<P>, plan: OffloadPlan<P>, byValue: Map<P, Parameter<P>>): void {
    attached.groups = plan.groups.map((g) => {
      const params = g.params.map((p) => {
        const param = byValue.get(p.value);
        if (param === undefined) throw new Error(`offload: ${attached.name}: ${p.name} was not offloaded (a weight replaced since?)`);
        return param;
      });
      const group = new Group<P>(g.name, attached, params);
      for (const p of params) p.group = group;
      return group;
    });
  }

  private hook(attached: Attached<P>, plan: OffloadPlan<P>): void {
    const onloads = new Map<object, Group<P>[]>();
    const offloads = new Map<object, Group<P>[]>();
    plan.groups.forEach((g, i) => {
      const group = attached.groups[i];
      onloads.set(g.onloadLeader, [...(onloads.get(g.onloadLeader) ?? []), group]);
      offloads.set(g.offloadLeader, [...(offloads.get(g.offloadLeader) ?? []), group]);
    });
    // Model offload watches the entry only (the whole model is resident during its calls); group offload watches
    // every module call, so that a weight read outside its group is kept exactly until the enclosing call returns.
    const watched = attached.streamed
      ? plan.modules
      : [plan.modules[0], ...wholeModelMethods(attached.model).map((method) => ({ ...plan.modules[0], method }))];
    for (const m of watched) {
      const root = m.object === attached.model;
      const leads = onloads.get(m.object) ?? [];
      const ends = offloads.get(m.object) ?? [];
      attached.unhook.push(wrapMethod(m.object, m.method, (call) => this.run(attached, root, leads, ends, call)));
    }
  }

  /** One watched call: a frame; the groups it leads are uploaded before and dropped after. */
  private run(attached: Attached<P>, root: boolean, leads: Group<P>[], ends: Group<P>[], call: () => unknown): unknown {
    if (root) this.enterModel(attached);
    const frame: Frame<P> = { model: attached, touched: new Set() };
    this.frames.push(frame);
    attached.activeFrames++;
    let completed = false;
    try {
      for (const g of leads) {
        g.spanning = true;
        this.enter(g);
      }
      const result = call();
      completed = true;
      return result;
    } finally {
      this.frames.pop();
      attached.activeFrames--;
      for (const g of ends) g.spanning = false;
      for (const g of frame.touched) g.frameHolds--;
      for (const g of [...ends, ...frame.touched]) this.maybeOffload(g);
      if (root) this.leaveModel(attached, completed);
    }
  }

  private enterModel(attached: Attached<P>): void {
    if (attached.activeFrames > 0) return;
    if (attached.policy.kind === 'model') {
      // accelerate's CpuOffload.pre_forward: the previous model leaves first (and its cached blocks go), then this one comes.
      let evicted = false;
      for (const other of this.attached.values()) {
        if (other === attached || other.policy.kind !== 'model' || other.groups.every((g) => g.state === 'host')) continue;
        if (other.activeFrames > 0) throw new Error(`offload: ${attached.name} called while ${other.name} is running`);
        for (const g of other.groups) this.offload(g);
        evicted = true;
      }
      if (evicted) this.transport.emptyCache();
    } else {
      if (isCompilable(attached.model) && attached.model.compiled) this.stopCompiled(attached);
      if (attached.useStream && attached.order === undefined) attached.recording = [];
    }
  }

  private leaveModel(attached: Attached<P>, completed: boolean): void {
    if (attached.activeFrames > 0 || attached.policy.kind === 'model') return;
    for (const g of attached.groups) {
      g.spanning = false;
      this.maybeOffload(g);
    }
    if (attached.recording !== undefined) {
      if (completed) {
        attached.orderList = attached.recording;
        attached.order = new Map(attached.recording.map((g, i) => [g, i]));
      }
      attached.recording = undefined;
    }
  }

  /**
   * A group is needed now (its leader runs, or its weight was read): made resident and recorded; when it arrives
   * (not when an already resident group is read again), the next group in the recorded order starts copying.
   */
  private enter(g: Group<P>): void {
    const attached = g.model;
    if (attached.recording !== undefined && !attached.recording.includes(g)) attached.recording.push(g);
    if (g.state === 'device') return;
    if (g.state === 'prefetching') {
      this.transport.waitFence(g.fence, g.params.map((p) => p.device!));
      g.fence = undefined;
      g.state = 'device';
      this.emit('wait', g);
    } else {
      this.onload(g, 'current');
    }
    if (attached.useStream && attached.order !== undefined) {
      const index = attached.order.get(g);
      const next = index === undefined ? undefined : attached.orderList![index + 1];
      if (next !== undefined && next.state === 'host') this.onload(next, 'prefetch');
    }
  }

  private onload(g: Group<P>, stream: 'current' | 'prefetch'): void {
    for (const p of g.params) p.device = this.transport.toDevice(p.host, g.model.name, stream);
    if (stream === 'prefetch') {
      g.fence = this.transport.fence();
      g.state = 'prefetching';
      this.emit('prefetch', g);
    } else {
      g.state = 'device';
      this.emit('onload', g);
    }
  }

  /** Group offload drops a group once no span or running call holds it; model offload keeps it until evicted. */
  private maybeOffload(g: Group<P>): void {
    if (g.model.streamed && !g.spanning && g.frameHolds === 0 && g.state !== 'host') this.offload(g);
  }

  private offload(g: Group<P>): void {
    if (g.state === 'host') return;
    if (!g.model.streamed) this.dropGraphs(g.model);
    if (g.state === 'prefetching') this.transport.dropFence(g.fence);
    g.fence = undefined;
    for (const p of g.params) {
      if (p.device !== undefined) this.transport.release(p.device);
      p.device = undefined;
    }
    g.state = 'host';
    this.emit('offload', g);
  }

  /** Graphs captured over device copies must not outlive them: dropped, and recaptured at the next call. */
  private dropGraphs(attached: Attached<P>): void {
    const model = attached.model;
    if (!isCompilable(model) || !model.compiled) return;
    model.uncompile();
    model.compile();
    this.emit('graphs-dropped', attached);
  }

  private stopCompiled(attached: Attached<P>): void {
    (attached.model as Compilable).uncompile();
    this.emit('uncompiled', attached);
    if (!attached.compileWarned) this.warn(`fluxlab: compile(): ${this.compileBlockedReason(attached.model)}`);
    attached.compileWarned = true;
  }

  /** The value a parameter field reads: the device copy inside a call (uploaded if needed), else where it is. */
  private resolve(param: Parameter<P>): P {
    const g = param.group;
    const frame = this.frames[this.frames.length - 1];
    if (frame === undefined) return g.state === 'device' ? param.device! : param.host;
    if (!frame.touched.has(g)) {
      frame.touched.add(g);
      g.frameHolds++;
    }
    this.enter(g);
    return param.device!;
  }

  /** diffusers' maybe_free_model_hooks at the end of a pipeline call: every model's weights back to host memory. */
  offloadAll(): void {
    let released = false;
    for (const attached of this.attached.values()) {
      if (attached.activeFrames > 0) continue;
      for (const g of attached.groups) {
        if (g.state === 'host') continue;
        this.offload(g);
        released = true;
      }
    }
    if (released) this.transport.emptyCache();
  }

  /**
   * Unhooks `model`. restore: its weights go back to the device (new device tensors the model's dispose() frees);
   * else (the model is being disposed) every copy is freed.
   */
  detach(model: object, { restore }: { restore: boolean }): void {
    const attached = this.attached.get(model);
    if (attached === undefined) return;
    if (attached.activeFrames > 0) throw new Error(`offload: ${attached.name} is running`);
    for (const undo of attached.unhook.splice(0)) undo();
    for (const g of attached.groups) this.offload(g);
    this.transport.synchronize();
    const record = recordOf(model);
    for (const p of attached.params) {
      if (restore) {
        const device = this.transport.toDevice(p.host, attached.name, 'current');
        for (const slot of p.slots) setSlot(slot, device);
        record.restored.set(device, (t) => this.transport.release(t as P));
      } else {
        for (const slot of p.slots) setSlot(slot, p.host);
      }
    }
    if (restore) this.transport.synchronize();
    for (const p of attached.params) this.transport.release(p.host);
    this.attached.delete(model);
    record.offloader = undefined;
    tellStreamed(model, false);
    if (restore) this.dropGraphs(attached);
    if (this.attached.size === 0) this.transport.dispose();
  }

  info(): OffloadInfo {
    const components = [...this.attached.values()].map((a) => {
      const resident = a.groups.filter((g) => g.state !== 'host');
      return {
        name: a.name,
        policy: describePolicy(a.policy),
        groups: a.groups.length,
        residentGroups: resident.length,
        parameters: a.params.length,
        hostBytes: a.params.reduce((s, p) => s + p.bytes, 0),
        deviceBytes: resident.reduce((s, g) => s + g.params.reduce((t, p) => t + p.bytes, 0), 0),
      };
    });
    return {
      components,
      hostBytes: components.reduce((s, c) => s + c.hostBytes, 0),
      deviceBytes: components.reduce((s, c) => s + c.deviceBytes, 0),
    };
  }

  /** Detaches every model (restore: weights back to the device) and frees the transport. */
  dispose({ restore = false }: { restore?: boolean } = {}): void {
    if (this.disposed) return;
    for (const model of [...this.attached.keys()]) this.detach(model, { restore });
    this.transport.dispose();
    this.disposed = true;
  }
}

/** Records that `t` (and, for NF4, each part) is used by `stream`, so the allocator keeps it until that work is done. */
function recordStream(t: Tensor, stream: Stream): void {
  if (!(t instanceof NF4Tensor)) {
    t.recordStream(stream);
    return;
  }
  const parts = t.parts();
  try {
    for (const part of Object.values(parts)) part?.recordStream(stream);
  } finally {
    for (const part of Object.values(parts)) part?.dispose();
  }
}

/**
 * The CUDA transport: host copies in pinned memory (tagged by component in memory.hostStats()), uploads as
 * asynchronous copies on the current stream, prefetches on a side stream ordered by events. Only a CUDA device can be
 * offloaded to: on the CPU the weights already are in host memory, and (as diffusers raises without an accelerator)
 * the constructor throws, naming `what`.
 */
export class CudaTransport implements OffloadTransport<Tensor, Event> {
  readonly device: Device;
  private readonly index: number;
  private side?: Stream;

  constructor(device: Device, what = 'offloading') {
    if (device === 'cpu' || !cuda.isAvailable()) {
      const why = device === 'cpu' ? 'this model runs on cpu, where its weights already are in host memory' : `CUDA is unavailable: ${cuda.unavailableReason()}`;
      throw Object.assign(new Error(`${what} requires a CUDA device (diffusers raises likewise without an accelerator): ${why}`), {
        code: 'ERR_FLUXLAB_OFFLOAD_DEVICE',
      });
    }
    this.device = resolveDevice(device);
    this.index = Number(this.device.slice('cuda:'.length));
  }

  isParameter(value: unknown): value is Tensor {
    return value instanceof Tensor;
  }

  toHost(param: Tensor, tag: string): Tensor {
    return keep(memory.withTag(tag, () => param.to({ device: 'cpu', pinned: true })));
  }

  toDevice(host: Tensor, tag: string, stream: 'current' | 'prefetch'): Tensor {
    const copy = (): Tensor => keep(memory.withTag(tag, () => host.to({ device: this.device, nonBlocking: true })));
    return stream === 'prefetch' ? cuda.withStream(this.sideStream(), copy) : copy();
  }

  private sideStream(): Stream {
    this.side ??= new cuda.Stream({ device: this.index });
    return this.side;
  }

  fence(): Event {
    return this.sideStream().recordEvent();
  }

  waitFence(fence: Event, params: readonly Tensor[]): void {
    const current = cuda.currentStream(this.index);
    current.waitEvent(fence);
    // Copies allocated on the side stream and read on this one: their memory is not reused before this work ends.
    for (const p of params) recordStream(p, current);
    fence.dispose();
  }

  dropFence(fence: Event): void {
    fence.dispose();
  }

  bytes(param: Tensor): number {
    return param.byteLength;
  }

  release(param: Tensor): void {
    param.dispose();
  }

  emptyCache(): void {
    memory.emptyCache(this.device);
  }

  synchronize(): void {
    this.side?.synchronize();
    cuda.synchronize(this.index);
  }

  dispose(): void {
    this.synchronize();
    this.side?.dispose();
    this.side = undefined;
  }
}

/** The pipeline's component name of a model (its allocation tag), for models offloaded on their own. */
function componentName(model: object): string {
  if (model instanceof FluxTransformer2DModel) return 'transformer';
  if (model instanceof T5EncoderModel) return 'text_encoder_2';
  if (model instanceof CLIPTextModel) return 'text_encoder';
  if (model instanceof AutoencoderKL) return 'vae';
  return model.constructor.name;
}

/** What applyGroupOffloading returns: the model's offloading, to inspect or remove. */
export interface GroupOffloadHandle {
  readonly offloader: Offloader<Tensor>;
  info(): OffloadComponentInfo;
  /** Weights back on the device, hooks removed. */
  remove(): void;
}

/**
 * diffusers' apply_group_offloading for one model (e.g. `applyGroupOffloading(pipe.transformer, { type:
 * 'block_level', blocksPerGroup: 2, useStream: true })`): the model's weights move to pinned host memory and stream
 * through the device group by group in each call. Needs a model on a CUDA device (else throws, as diffusers does
 * without an accelerator). `transport` replaces the CUDA one (specs).
 */
export function applyGroupOffloading(
  model: { readonly device: Device },
  options: GroupOffloadOptions & { name?: string; transport?: OffloadTransport<Tensor>; onEvent?: (event: OffloadEvent) => void },
): GroupOffloadHandle {
  const checked = checkGroupOptions(options, 'applyGroupOffloading');
  const offloader = new Offloader<Tensor>(options.transport ?? new CudaTransport(model.device, 'applyGroupOffloading'), { onEvent: options.onEvent });
  const name = options.name ?? componentName(model);
  try {
    offloader.attach(model, name, { kind: 'group', ...checked });
  } catch (err) {
    offloader.dispose();
    throw err;
  }
  return {
    offloader,
    info: () => offloader.info().components[0],
    remove: () => offloader.dispose({ restore: true }),
  };
}
