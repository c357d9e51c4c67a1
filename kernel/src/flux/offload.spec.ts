// CPU offloading without a GPU: the offloader's decisions (what is where when, which hook fires, prefetch order, what
// is freed) over fake parameters and a fake transport, then the real tiny-flux pipeline on the CPU in every mode
// through a loopback transport (host copies and "device" copies both in host memory, every release a dispose), whose
// images must equal the pipeline's without offloading bit for bit. offload.gpu.spec.ts does the same on CUDA.
import { Tensor, keep, memory } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { benchPipeline } from './benchmark';
import { fixturesDir } from './golden';
import { CudaTransport, OffloadEvent, OffloadTransport, Offloader, applyGroupOffloading, checkGroupOptions, planOffload } from './offload';
import { FluxPipeline, GenerateOptions } from './pipeline';

// ---- fakes ---------------------------------------------------------------------------------------------------

type Where = 'loaded' | 'host' | 'in flight' | 'device';

class FakeParam {
  released = false;
  constructor(
    readonly id: string,
    readonly bytes: number,
    public where: Where,
  ) {}
}

const isFake = (value: unknown): value is FakeParam => value instanceof FakeParam;

/** Logs every move; prefetched copies stay 'in flight' until waited for, so a read before the wait fails. */
class FakeTransport implements OffloadTransport<FakeParam, number> {
  readonly log: string[] = [];
  readonly live = new Set<FakeParam>();
  maxLiveBytes = 0;
  private fences = 0;
  failHostAfter = Infinity;

  isParameter(value: unknown): value is FakeParam {
    return isFake(value);
  }

  toHost(param: FakeParam): FakeParam {
    if (this.log.filter((l) => l.startsWith('host ')).length >= this.failHostAfter) throw new Error('out of pinned host memory');
    this.log.push(`host ${param.id}`);
    return new FakeParam(param.id, param.bytes, 'host');
  }

  toDevice(host: FakeParam, _tag: string, stream: 'current' | 'prefetch'): FakeParam {
    assert.equal(host.where, 'host');
    assert.equal(host.released, false, `${host.id}: upload from a released host copy`);
    this.log.push(`${stream === 'prefetch' ? 'prefetch' : 'upload'} ${host.id}`);
    const copy = new FakeParam(host.id, host.bytes, stream === 'prefetch' ? 'in flight' : 'device');
    this.live.add(copy);
    this.maxLiveBytes = Math.max(this.maxLiveBytes, [...this.live].reduce((s, p) => s + p.bytes, 0));
    return copy;
  }

  fence(): number {
    return ++this.fences;
  }

  waitFence(fence: number, params: readonly FakeParam[]): void {
    this.log.push(`wait ${params.map((p) => p.id).join(',')}`);
    for (const p of params) p.where = 'device';
  }

  dropFence(): void {
    this.log.push('drop fence');
  }

  bytes(param: FakeParam): number {
    return param.bytes;
  }

  release(param: FakeParam): void {
    assert.equal(param.released, false, `${param.id} released twice`);
    param.released = true;
    this.live.delete(param);
    this.log.push(`free ${param.id}@${param.where}`);
  }

  emptyCache(): void {
    this.log.push('emptyCache');
  }

  synchronize(): void {
    this.log.push('sync');
  }

  dispose(): void {
    this.log.push('dispose');
  }
}

/** A parameter read by compute: it must be a device copy that was waited for and is not released. */
function use(p: unknown, trail: string[]): void {
  assert.ok(isFake(p), `not a parameter: ${String(p)}`);
  assert.equal(p.where, 'device', `${p.id} read while ${p.where}`);
  assert.equal(p.released, false, `${p.id} read after release`);
  trail.push(`use ${p.id}`);
}

let nextParam = 0;
const param = (id: string, bytes = 100): FakeParam => (nextParam++, new FakeParam(id, bytes, 'loaded'));

class FakeLinear {
  constructor(
    readonly weight: FakeParam,
    readonly bias: FakeParam,
    private readonly trail: string[],
  ) {}

  forward(x: number): number {
    use(this.weight, this.trail);
    use(this.bias, this.trail);
    return x + 1;
  }
}

class FakeNorm {
  constructor(
    readonly weight: FakeParam,
    private readonly trail: string[],
  ) {}

  forward(x: number): number {
    use(this.weight, this.trail);
    return x;
  }
}

/** Like FluxAttention: reads its child norm's weight directly (the norm's forward never runs), then its layers. */
class FakeBlock {
  readonly norm_q: FakeNorm;
  readonly attn: { to_qkv: { stacked: FakeLinear } };
  readonly ff: FakeLinear;

  constructor(
    readonly prefix: string,
    private readonly trail: string[],
  ) {
    this.norm_q = new FakeNorm(param(`${prefix}.norm_q.weight`), trail);
    this.attn = { to_qkv: { stacked: new FakeLinear(param(`${prefix}.attn.qkv.weight`, 300), param(`${prefix}.attn.qkv.bias`), trail) } };
    this.ff = new FakeLinear(param(`${prefix}.ff.weight`, 400), param(`${prefix}.ff.bias`), trail);
  }

  forward(x: number): number {
    use(this.norm_q.weight, this.trail);
    return this.ff.forward(this.attn.to_qkv.stacked.forward(x));
  }
}

/** A model: an embedding read by the model itself, repeated blocks, an output layer; optionally compilable. */
class FakeNet {
  readonly embed: FakeParam;
  readonly blocks: FakeBlock[] = [];
  readonly proj_out: FakeLinear;
  readonly config = { blocks: 3, dims: [4, 4] };
  disposed = false;

  constructor(
    readonly trail: string[],
    blocks = 3,
  ) {
    this.embed = param('embed', 1000);
    for (let i = 0; i < blocks; i++) this.blocks.push(new FakeBlock(`blocks.${i}`, trail));
    this.proj_out = new FakeLinear(param('proj_out.weight'), param('proj_out.bias'), trail);
  }

  forward(x: number): number {
    use(this.embed, this.trail);
    let h = x;
    for (const block of this.blocks) h = block.forward(h);
    return this.proj_out.forward(h);
  }

  linearLayers(): ReadonlyMap<string, FakeLinear> {
    const layers = new Map<string, FakeLinear>();
    this.blocks.forEach((b, i) => {
      layers.set(`blocks.${i}.attn.{to_q,to_k,to_v}`, b.attn.to_qkv.stacked);
      layers.set(`blocks.${i}.ff`, b.ff);
    });
    layers.set('proj_out', this.proj_out);
    return layers;
  }

  dispose(): void {
    this.disposed = true;
  }
}

/** A FakeNet with compile()/uncompile() like FluxTransformer2DModel; logs into the transport's log. */
class CompilableNet extends FakeNet {
  compiled = false;

  constructor(
    trail: string[],
    private readonly log: string[],
  ) {
    super(trail);
  }

  compile(): this {
    this.compiled = true;
    this.log.push('compile');
    return this;
  }

  uncompile(): void {
    this.compiled = false;
    this.log.push('uncompile');
  }
}

function events(list: OffloadEvent[]): string[] {
  return list.map((e) => `${e.type} ${e.group}`);
}

function setup(): { trail: string[]; transport: FakeTransport; seen: OffloadEvent[]; warnings: string[]; offloader: Offloader<FakeParam> } {
  const transport = new FakeTransport();
  const seen: OffloadEvent[] = [];
  const warnings: string[] = [];
  const offloader = new Offloader<FakeParam>(transport, { onEvent: (e) => seen.push(e), warn: (m) => warnings.push(m) });
  return { trail: [], transport, seen, warnings, offloader };
}

// ---- the offloader's logic -------------------------------------------------------------------------------------

describe('planOffload: parameters by checkpoint key, groups per policy', () => {
  it('names parameters by their fields, Linear layers as linearLayers() lists them, and groups them', () => {
    const net = new FakeNet([]);
    const model = planOffload(net, { kind: 'model' }, isFake);
    assert.equal(model.entry, 'forward');
    assert.equal(model.groups.length, 1);
    assert.deepEqual(model.groups[0].params.map((p) => p.name).slice(0, 6), [
      'embed',
      'blocks.0.norm_q.weight',
      'blocks.0.attn.{to_q,to_k,to_v}.weight',
      'blocks.0.attn.{to_q,to_k,to_v}.bias',
      'blocks.0.ff.weight',
      'blocks.0.ff.bias',
    ]);
    assert.equal(model.groups[0].params.length, 1 + 3 * 5 + 2, 'config numbers and non-module objects are not parameters');
    assert.ok(model.modules.some((m) => m.name === 'blocks.1.attn.{to_q,to_k,to_v}'), 'modules are named like their layers');

    const blocks = planOffload(net, { kind: 'group', type: 'block_level', blocksPerGroup: 2 }, isFake);
    assert.deepEqual(
      blocks.groups.map((g) => `${g.name}: ${g.params.length}`),
      ['(outside blocks): 3', 'blocks.0-1: 10', 'blocks.2: 5'],
    );
    assert.equal(blocks.groups[1].onloadLeader, net.blocks[0]);
    assert.equal(blocks.groups[1].offloadLeader, net.blocks[1]);
    assert.equal(blocks.groups[0].onloadLeader, net);

    const leaves = planOffload(net, { kind: 'group', type: 'leaf_level' }, isFake);
    assert.deepEqual(leaves.groups.map((g) => g.name).slice(0, 5), ['', 'blocks.0.norm_q', 'blocks.0.attn.{to_q,to_k,to_v}', 'blocks.0.ff', 'blocks.1.norm_q']);
    assert.equal(leaves.groups.length, 1 + 3 * 3 + 1);
    assert.equal(leaves.groups[2].onloadLeader, net.blocks[0].attn.to_qkv.stacked);
  });

  it('finds a tensor reachable from two fields once, with both slots; decode() is the VAE entry', () => {
    const shared = param('shared');
    const tied = { encoder: { embed_tokens: { weight: shared } }, shared, decode: () => 0 };
    const plan = planOffload(tied, { kind: 'model' }, isFake);
    assert.equal(plan.entry, 'decode');
    assert.equal(plan.groups[0].params.length, 1);
    assert.deepEqual(plan.groups[0].params[0].slots.map((s) => s.key), ['weight', 'shared']);
  });
});

describe('model offload (enable_model_cpu_offload)', () => {
  it('keeps one model on the device: the previous one leaves (and the cache is emptied) before the next uploads', () => {
    const { trail, transport, seen, offloader } = setup();
    const a = new FakeNet(trail);
    const b = new FakeNet(trail);
    offloader.attach(a, 'a', { kind: 'model' });
    offloader.attach(b, 'b', { kind: 'model' });
    assert.equal(transport.log.filter((l) => l.startsWith('host ')).length, 2 * 18, 'one host copy per parameter');
    assert.equal(transport.log.filter((l) => /^free .*@loaded$/.test(l)).length, 2 * 18, 'the loaded weights are freed');
    assert.equal((a.embed as FakeParam).where, 'host', 'outside a call, a field reads the host copy');

    a.forward(0);
    assert.deepEqual(events(seen), ['onload a']);
    seen.length = 0;
    a.forward(0);
    assert.deepEqual(events(seen), [], 'stays resident between its own calls (the 28 steps)');
    assert.equal((a.embed as FakeParam).where, 'device', 'a resident model reads its device copies');

    transport.log.length = 0;
    b.forward(0);
    assert.deepEqual(events(seen), ['offload a', 'onload b']);
    const lastFree = transport.log.map((l) => l.startsWith('free ')).lastIndexOf(true);
    assert.ok(lastFree < transport.log.indexOf('emptyCache') && transport.log.indexOf('emptyCache') < transport.log.indexOf('upload embed'), transport.log.join('\n'));
    assert.deepEqual(offloader.info().components.map((c) => `${c.name}: ${c.residentGroups}/${c.groups}`), ['a: 0/1', 'b: 1/1']);
    assert.equal(offloader.info().deviceBytes, offloader.info().components[1].hostBytes);

    seen.length = 0;
    offloader.offloadAll();
    assert.deepEqual(events(seen), ['offload b']);
    assert.equal(transport.live.size, 0, 'nothing on the device after the pipeline call');
    assert.ok(trail.length > 0 && trail.every((t) => t.startsWith('use ')));
  });

  it('uploads the model around the methods it lists as running it whole (wholeModelMethods), as around its entry', () => {
    const { trail, seen, offloader } = setup();
    class TabledNet extends FakeNet {
      readonly wholeModelMethods = ['table'];
      table(): string {
        return (this.blocks[0].ff.weight as FakeParam).where;
      }
    }
    const net = new TabledNet(trail);
    const other = new FakeNet(trail);
    offloader.attach(other, 'other', { kind: 'model' });
    offloader.attach(net, 'net', { kind: 'model' });
    other.forward(0);
    seen.length = 0;
    assert.equal(net.table(), 'device', 'the weights are on the device inside the listed method');
    assert.deepEqual(events(seen), ['offload other', 'onload net']);
    seen.length = 0;
    net.forward(0);
    assert.deepEqual(events(seen), [], 'still resident for the steps that follow');
    offloader.detach(net, { restore: true });
    assert.equal(net.table(), 'device', 'unhooked: restored to the device');
    class Misnamed extends FakeNet {
      readonly wholeModelMethods = ['nothing'];
    }
    assert.throws(() => offloader.attach(new Misnamed(trail), 'bad', { kind: 'model' }), /wholeModelMethods must name its methods/);
  });

  it('tells a model that asks whether its weights stream group by group (setWeightsStreamed): attach, regroup, detach', () => {
    const { trail, offloader } = setup();
    class ListeningNet extends FakeNet {
      readonly told: boolean[] = [];
      setWeightsStreamed(streamed: boolean): void {
        this.told.push(streamed);
      }
    }
    const net = new ListeningNet(trail);
    offloader.attach(net, 'net', { kind: 'group', type: 'block_level', blocksPerGroup: 1 });
    offloader.attach(net, 'net', { kind: 'model' });
    offloader.attach(net, 'net', { kind: 'group', type: 'leaf_level' });
    offloader.detach(net, { restore: true });
    assert.deepEqual(net.told, [true, false, true, false]);
  });

  it('drops a compiled model\'s graphs whenever its weights leave the device, before they are freed', () => {
    const { trail, transport, seen, offloader } = setup();
    const text = new FakeNet(trail);
    const net = new CompilableNet(trail, transport.log).compile();
    offloader.attach(text, 'text', { kind: 'model' });
    offloader.attach(net, 'transformer', { kind: 'model' });
    assert.deepEqual(events(seen), ['graphs-dropped transformer'], 'attach moved the weights the graphs read');
    assert.equal(net.compiled, true, 'compile mode stays on: the next call captures again');
    net.forward(0);
    transport.log.length = 0;
    text.forward(0);
    const uncompile = transport.log.indexOf('uncompile');
    const firstFree = transport.log.findIndex((l) => l.startsWith('free '));
    assert.ok(uncompile >= 0 && uncompile < firstFree, transport.log.join('\n'));
    assert.equal(transport.log[uncompile + 1], 'compile');
    assert.equal(offloader.compileBlockedReason(net), undefined, 'model offload keeps compile');
  });
});

describe('group offload (apply_group_offloading)', () => {
  it('block_level: a group is uploaded before its first block and freed after its last; the rest stays for the call', () => {
    const { trail, transport, seen, offloader } = setup();
    const net = new FakeNet(trail);
    offloader.attach(net, 'net', { kind: 'group', type: 'block_level', blocksPerGroup: 2 });
    assert.equal(net.forward(0), 7);
    assert.deepEqual(events(seen), [
      'onload (outside blocks)',
      'onload blocks.0-1',
      'offload blocks.0-1',
      'onload blocks.2',
      'offload blocks.2',
      'offload (outside blocks)',
    ]);
    const outside = 1000 + 200;
    assert.equal(transport.maxLiveBytes, outside + 2 * 1000, 'at most the outside group and one group of two blocks');
    assert.equal(transport.live.size, 0);
    assert.ok(!transport.log.some((l) => l.startsWith('prefetch ')), 'no side stream without useStream');
  });

  it('useStream: the first call records the order; later calls copy the next group while one computes, and each waits for its own', () => {
    const { transport, seen, offloader } = setup();
    const net = new FakeNet(transport.log);
    offloader.attach(net, 'net', { kind: 'group', type: 'block_level', blocksPerGroup: 1, useStream: true });
    net.forward(0);
    assert.ok(!events(seen).some((e) => e.startsWith('prefetch')), 'no order known during the first call');
    seen.length = 0;
    transport.log.length = 0;
    net.forward(0);
    assert.deepEqual(events(seen), [
      'onload (outside blocks)',
      'prefetch blocks.0',
      'wait blocks.0',
      'prefetch blocks.1',
      'offload blocks.0',
      'wait blocks.1',
      'prefetch blocks.2',
      'offload blocks.1',
      'wait blocks.2',
      'offload blocks.2',
      'offload (outside blocks)',
    ]);
    assert.deepEqual(
      transport.log.filter((l) => l.startsWith('wait ')),
      [0, 1, 2].map((i) => `wait blocks.${i}.norm_q.weight,blocks.${i}.attn.qkv.weight,blocks.${i}.attn.qkv.bias,blocks.${i}.ff.weight,blocks.${i}.ff.bias`),
    );
    // Block 1's copy is queued (side stream) before block 0's compute.
    assert.ok(transport.log.indexOf('prefetch blocks.1.ff.bias') < transport.log.indexOf('use blocks.0.norm_q.weight'), transport.log.join('\n'));
    assert.equal(transport.maxLiveBytes, 1200 + 2 * 1000, 'the outside group, the block computing and the next one');
    assert.equal(transport.live.size, 0);
  });

  it('a prefetched group the call never reaches is dropped with its fence at the end of the call', () => {
    const { trail, transport, seen, offloader } = setup();
    const net = new FakeNet(trail);
    offloader.attach(net, 'net', { kind: 'group', type: 'block_level', blocksPerGroup: 1, useStream: true });
    net.forward(0);
    net.blocks[1].forward = () => {
      throw new Error('stopped');
    };
    seen.length = 0;
    assert.throws(() => net.forward(0), /stopped/);
    assert.deepEqual(events(seen), [
      'onload (outside blocks)',
      'prefetch blocks.0',
      'wait blocks.0',
      'prefetch blocks.1',
      'offload blocks.0',
      'offload (outside blocks)',
      'offload blocks.1',
    ]);
    assert.ok(transport.log.includes('drop fence'));
    assert.equal(transport.live.size, 0, 'an error frees what the call uploaded');
  });

  it('leaf_level: each layer around its own call; a weight its parent reads directly lives until the parent returns', () => {
    const { trail, transport, seen, offloader } = setup();
    const net = new FakeNet(trail, 2);
    offloader.attach(net, 'net', { kind: 'group', type: 'leaf_level' });
    net.forward(0);
    assert.deepEqual(events(seen).slice(0, 8), [
      'onload net',
      'onload blocks.0.norm_q',
      'onload blocks.0.attn.{to_q,to_k,to_v}',
      'offload blocks.0.attn.{to_q,to_k,to_v}',
      'onload blocks.0.ff',
      'offload blocks.0.ff',
      'offload blocks.0.norm_q',
      'onload blocks.1.norm_q',
    ]);
    assert.equal(transport.maxLiveBytes, 1000 + 100 + 400 + 100, 'the model\'s own weight, the norm its block read, one layer');
    assert.equal(transport.live.size, 0);
    assert.equal((net.blocks[0].norm_q.weight as FakeParam).where, 'host', 'outside a call a field reads the host copy');
  });

  it('regroups the same host copies under another policy (no copy), and runs a compiled model eagerly with one message', () => {
    const { trail, transport, seen, warnings, offloader } = setup();
    const net = new CompilableNet(trail, transport.log).compile();
    offloader.attach(net, 'transformer', { kind: 'model' });
    net.forward(0);
    const hostCopies = transport.log.filter((l) => l.startsWith('host ')).length;
    offloader.attach(net, 'transformer', { kind: 'group', type: 'block_level', blocksPerGroup: 1 });
    assert.equal(transport.log.filter((l) => l.startsWith('host ')).length, hostCopies, 'no new host copies');
    assert.equal(net.compiled, false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /compile\(\): transformer is group-offloaded \(block_level 1 block\(s\)\/group\).*runs eagerly/);
    assert.match(offloader.compileBlockedReason(net)!, /CUDA graph replays fixed device addresses/);
    net.compile();
    seen.length = 0;
    net.forward(0);
    assert.equal(net.compiled, false, 'compiling the model itself is undone at its next call');
    assert.equal(events(seen)[0], 'uncompiled transformer');
    assert.equal(warnings.length, 1, 'said once');
    assert.equal(transport.live.size, 0);
  });
});

describe('attach, detach and dispose', () => {
  it('detach({ restore }) puts device weights back in plain fields, unhooks, and the model\'s dispose() frees them', () => {
    const { trail, transport, offloader } = setup();
    const net = new FakeNet(trail);
    offloader.attach(net, 'net', { kind: 'group', type: 'leaf_level', useStream: true });
    net.forward(0);
    offloader.dispose({ restore: true });
    assert.equal(Object.prototype.hasOwnProperty.call(net.proj_out, 'forward'), false, 'hooks removed');
    const field = Object.getOwnPropertyDescriptor(net, 'embed')!;
    assert.ok('value' in field && (field.value as FakeParam).where === 'device', 'a plain field with the device copy');
    assert.equal(transport.live.size, 18);
    assert.ok(transport.log.filter((l) => /^free .*@host$/.test(l)).length === 18, 'host copies freed');
    net.forward(0);
    net.dispose();
    assert.equal(net.disposed, true);
    assert.equal(transport.live.size, 0, 'the restored weights are freed with the model');
  });

  it('disposing an offloaded model frees its host copies; a failed attach leaves the model as it was', () => {
    const { trail, transport, offloader } = setup();
    const net = new FakeNet(trail);
    offloader.attach(net, 'net', { kind: 'model' });
    net.forward(0);
    net.dispose();
    assert.equal(net.disposed, true);
    assert.equal(transport.live.size, 0);
    assert.equal(transport.log.filter((l) => /^free .*@host$/.test(l)).length, 18);
    assert.deepEqual(offloader.info().components, []);

    const other = setup();
    const whole = new FakeNet(other.trail);
    other.transport.failHostAfter = 5;
    assert.throws(() => other.offloader.attach(whole, 'whole', { kind: 'model' }), /out of pinned host memory/);
    assert.equal(whole.embed.where, 'loaded', 'fields untouched');
    assert.equal(whole.embed.released, false);
    assert.equal(other.transport.log.filter((l) => /^free .*@host$/.test(l)).length, 5, 'the copies made are freed');
    assert.equal(Object.prototype.hasOwnProperty.call(whole, 'forward'), false, 'not hooked');
  });

  it('refuses a second offloader for one model, weight replacement, and bad group options', () => {
    const { trail, offloader } = setup();
    const net = new FakeNet(trail);
    offloader.attach(net, 'net', { kind: 'model' });
    assert.throws(() => setup().offloader.attach(net, 'net', { kind: 'model' }), /already offloaded by another pipeline/);
    assert.throws(() => ((net as unknown as { embed: unknown }).embed = param('x')), /embed is offloaded; disable offloading before replacing weights/);
    assert.throws(() => checkGroupOptions({ type: 'block_level' }, 'f()'), /blocksPerGroup is required for 'block_level' \(diffusers' num_blocks_per_group\)/);
    assert.throws(() => checkGroupOptions({ type: 'block_level', blocksPerGroup: 0 }, 'f()'), /positive integer/);
    assert.throws(() => checkGroupOptions({ type: 'leaf_level', blocksPerGroup: 2 }, 'f()'), /applies to 'block_level' only/);
    assert.throws(() => checkGroupOptions({ type: 'module' as 'leaf_level' }, 'f()'), /type 'module' is not/);
    assert.deepEqual(checkGroupOptions({ type: 'leaf_level' }, 'f()'), { type: 'leaf_level', blocksPerGroup: undefined, useStream: false });
  });

  it('CudaTransport refuses the CPU, as diffusers refuses offloading without an accelerator', () => {
    assert.throws(() => new CudaTransport('cpu', 'enableModelCpuOffload()'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_FLUXLAB_OFFLOAD_DEVICE');
      assert.match(err.message, /^enableModelCpuOffload\(\) requires a CUDA device .*: this model runs on cpu, where its weights already are in host memory/);
      return true;
    });
  });
});

// ---- the real pipeline on the CPU, through a loopback transport ---------------------------------------------------

/** "Device" copies in host memory too: every upload a new tensor, every release a dispose (use after it throws). */
class LoopbackTransport implements OffloadTransport<Tensor> {
  uploads = { current: 0, prefetch: 0 };
  waits = 0;

  isParameter(value: unknown): value is Tensor {
    return value instanceof Tensor;
  }

  toHost(param: Tensor, tag: string): Tensor {
    return keep(memory.withTag(tag, () => param.to('cpu')));
  }

  toDevice(host: Tensor, tag: string, stream: 'current' | 'prefetch'): Tensor {
    this.uploads[stream]++;
    return keep(memory.withTag(tag, () => host.to('cpu')));
  }

  fence(): unknown {
    return {};
  }

  waitFence(): void {
    this.waits++;
  }

  dropFence(): void {}

  bytes(param: Tensor): number {
    return param.byteLength;
  }

  release(param: Tensor): void {
    param.dispose();
  }

  emptyCache(): void {}
  synchronize(): void {}
  dispose(): void {}
}

const COMPONENTS = ['text_encoder', 'text_encoder_2', 'transformer', 'vae'];
const run: GenerateOptions = { prompt: 'a cat on a skateboard', height: 32, width: 32, numInferenceSteps: 3, seed: 5, maxSequenceLength: 16, progress: false };

async function image(pipe: FluxPipeline, options: Partial<GenerateOptions> = {}): Promise<{ pixels: Uint8Array; latents: Float32Array }> {
  let latents: Float32Array = new Float32Array(0);
  const result = await pipe.generate({
    ...run,
    ...options,
    trace: (name, t) => {
      if (name === 'latents_final') latents = t.toArray() as Float32Array;
      options.trace?.(name, t);
    },
  });
  return { pixels: result.images[0].data, latents };
}

function tagged(): Record<string, number> {
  const byTag = memory.hostStats().byTag;
  return Object.fromEntries(COMPONENTS.map((c) => [c, byTag[c] ?? 0]));
}

for (const fixture of ['tiny-flux', 'tiny-flux-nf4'] as const) {
  describe(`offloading the ${fixture} pipeline on the CPU (loopback transport): images bitwise equal`, () => {
    let pipe: FluxPipeline;
    let baseline: { pixels: Uint8Array; latents: Float32Array };
    let baseTags: Record<string, number>;
    let weights: Record<string, number>;
    const transport = new LoopbackTransport();
    const seen: OffloadEvent[] = [];

    before(async () => {
      baseTags = tagged();
      pipe = await FluxPipeline.fromPretrained(join(fixturesDir(), fixture));
      const loaded = tagged();
      weights = Object.fromEntries(COMPONENTS.map((c) => [c, loaded[c] - baseTags[c]]));
      baseline = await image(pipe);
    });
    after(() => pipe?.dispose());

    it('without a CUDA device the public calls refuse, naming the call, and the pipeline keeps working', async () => {
      assert.throws(() => pipe.enableModelCpuOffload(), /enableModelCpuOffload\(\) requires a CUDA device/);
      assert.throws(() => pipe.enableSequentialCpuOffload(), /enableSequentialCpuOffload\(\) requires a CUDA device/);
      assert.throws(() => pipe.enableGroupOffload({ type: 'leaf_level' }), /enableGroupOffload\(\) requires a CUDA device/);
      assert.throws(() => applyGroupOffloading(pipe.transformer, { type: 'leaf_level' }), /applyGroupOffloading requires a CUDA device/);
      assert.throws(() => pipe.enableGroupOffload({ type: 'block_level' }), /blocksPerGroup is required/);
      await assert.rejects(FluxPipeline.fromPretrained(join(fixturesDir(), fixture), { offload: 'model' }), /the load option offload requires a CUDA device/);
      await assert.rejects(FluxPipeline.fromPretrained(join(fixturesDir(), fixture), { offload: { type: 'block_level' } }), /blocksPerGroup is required/);
      assert.equal(pipe.offloadInfo(), undefined);
      assert.deepEqual((await image(pipe)).pixels, baseline.pixels);
    });

    it('model offload: one component at a time, in the hook chain\'s order; all back in host memory at the end', async () => {
      pipe.enableModelCpuOffload({ transport, onEvent: (e) => seen.push(e) });
      const info = pipe.offloadInfo()!;
      assert.equal(info.mode, 'model');
      assert.deepEqual(info.components.map((c) => c.name), COMPONENTS);
      for (const c of info.components) assert.equal(c.hostBytes, weights[c.name], `${c.name}: every weight has a host copy`);
      assert.deepEqual(tagged(), Object.fromEntries(COMPONENTS.map((c) => [c, baseTags[c] + weights[c]])), 'the loaded weights were freed');
      const resident: Record<string, string> = {};
      const residentNow = (): string =>
        pipe
          .offloadInfo()!
          .components.filter((c) => c.residentGroups > 0)
          .map((c) => c.name)
          .join(',');
      seen.length = 0;
      const result = await image(pipe, {
        trace: (name) => {
          if (name === 'prompt_embeds' || name === 'step1.noise_pred' || name === 'image_decoded') resident[name] = residentNow();
        },
      });
      assert.deepEqual(resident, { prompt_embeds: 'text_encoder_2', 'step1.noise_pred': 'transformer', image_decoded: 'vae' });
      assert.deepEqual(events(seen), [
        'onload text_encoder',
        'offload text_encoder',
        'onload text_encoder_2',
        'offload text_encoder_2',
        'onload transformer',
        'offload transformer',
        'onload vae',
        'offload vae',
      ]);
      assert.equal(residentNow(), '');
      assert.deepEqual(result.pixels, baseline.pixels);
      assert.deepEqual(result.latents, baseline.latents);
    });

    it('model offload: an interrupted generation also leaves every weight in host memory', async () => {
      const controller = new AbortController();
      await assert.rejects(pipe.generate({ ...run, signal: controller.signal, onProgress: (p) => void (p.step === 1 && controller.abort()) }));
      assert.equal(pipe.offloadInfo()!.deviceBytes, 0);
      assert.deepEqual((await image(pipe)).pixels, baseline.pixels);
    });

    it('sequential offload: every layer uploaded for its own call, none prefetched, nothing left resident', async () => {
      const uploads = transport.uploads.current;
      pipe.enableSequentialCpuOffload({ transport });
      assert.equal(pipe.offloadInfo()!.mode, 'sequential');
      assert.ok(pipe.offloadInfo()!.components.every((c) => c.policy === 'leaf_level' && c.groups > 10));
      const result = await image(pipe);
      assert.deepEqual(result.pixels, baseline.pixels);
      assert.deepEqual(result.latents, baseline.latents);
      const linears = pipe.offloadInfo()!.components.find((c) => c.name === 'transformer')!.parameters;
      assert.ok(transport.uploads.current - uploads > 3 * linears, 'the transformer\'s weights cross once per step');
      assert.equal(transport.uploads.prefetch, 0);
      assert.equal(pipe.offloadInfo()!.deviceBytes, 0);
    });

    for (const options of [
      { type: 'block_level', blocksPerGroup: 1, useStream: true },
      { type: 'block_level', blocksPerGroup: 2, useStream: false },
      { type: 'leaf_level', useStream: true },
    ] as const) {
      it(`group offload ${JSON.stringify(options)}: same images, the second run prefetching when streamed`, async () => {
        pipe.enableGroupOffload({ ...options, transport });
        assert.equal(pipe.offloadInfo()!.mode, 'group');
        const prefetched = transport.uploads.prefetch;
        const waits = transport.waits;
        for (let i = 0; i < 2; i++) {
          const result = await image(pipe);
          assert.deepEqual(result.pixels, baseline.pixels);
          assert.deepEqual(result.latents, baseline.latents);
          assert.equal(pipe.offloadInfo()!.deviceBytes, 0);
        }
        if (options.useStream) {
          assert.ok(transport.uploads.prefetch > prefetched, 'later calls prefetch on the side stream');
          assert.ok(transport.waits > waits, 'compute waits for prefetched groups');
        } else {
          assert.equal(transport.uploads.prefetch, prefetched);
        }
      });
    }

    it('compile() under group offload runs eagerly with a message; disableOffload() brings every weight back', async () => {
      const warnings: string[] = [];
      const warn = console.warn;
      console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
      try {
        pipe.compile();
      } finally {
        console.warn = warn;
      }
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /compile\(\): transformer is group-offloaded .* runs eagerly \(model offload, enableModelCpuOffload\(\), keeps compile\)/);
      assert.equal(pipe.transformer.compiled, false);
      pipe.disableOffload();
      assert.equal(pipe.offloadInfo(), undefined);
      assert.deepEqual(tagged(), Object.fromEntries(COMPONENTS.map((c) => [c, baseTags[c] + weights[c]])), 'device weights back, host copies freed');
      assert.deepEqual((await image(pipe)).pixels, baseline.pixels);
    });

    it('dispose() frees the host copies of an offloaded pipeline', async () => {
      const other = await FluxPipeline.fromPretrained(join(fixturesDir(), fixture));
      other.enableGroupOffload({ type: 'block_level', blocksPerGroup: 1, useStream: true, transport: new LoopbackTransport() });
      await image(other);
      other.dispose();
      assert.deepEqual(tagged(), Object.fromEntries(COMPONENTS.map((c) => [c, baseTags[c] + weights[c]])), 'only the first pipeline\'s weights remain');
    });
  });
}

describe('fluxlab bench offload rows on the CPU (loopback transport)', () => {
  it('switches modes between rows on one pipeline and reports each row', async () => {
    const rows = await benchPipeline({
      load: () => FluxPipeline.fromPretrained(join(fixturesDir(), 'tiny-flux'), { dtype: 'bfloat16' }),
      configs: [
        { quantization: 'bf16', compile: 'eager', offload: 'none' },
        { quantization: 'bf16', compile: 'compile', offload: 'model' },
        { quantization: 'bf16', compile: 'compile', offload: 'group' },
        { quantization: 'bf16', compile: 'eager', offload: 'sequential' },
        { quantization: 'bf16', compile: 'eager', offload: 'none' },
      ],
      height: 32,
      width: 32,
      steps: 2,
      warmupSteps: 1,
      maxSequenceLength: 16,
      offloadTransport: () => new LoopbackTransport(),
    });
    assert.deepEqual(rows.map((r) => r.offload), ['none', 'model', 'group', 'sequential', 'none']);
    for (const row of rows) {
      assert.ok(row.finite && row.latency_s > 0 && row.step_s > 0, JSON.stringify(row));
      assert.equal(row.pinned_host_gb, 0, 'nothing is pinned on the CPU');
    }
    assert.match(rows[2].note!, /compile\(\) falls back to eager under group offload/);
  });
});
