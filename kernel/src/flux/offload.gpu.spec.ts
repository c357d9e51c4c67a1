// CPU offloading on CUDA: the tiny-flux fixture pipeline in every mode (model, sequential, group block/leaf level,
// with and without the prefetch stream), eager and compiled, gives the image of the pipeline without offloading bit for
// bit, with a lower peak of device memory; model offload keeps one component on the device at a time; every weight
// leaves the device (the walk finds them all) and comes back (disableOffload), and host copies are pinned and freed
// with the pipeline. Skips without a usable CUDA device, except under FLUXLAB_REQUIRE_GPU=1 (the GPU machine).
import { memory } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { benchPipeline } from './benchmark';
import { assertGpu, gpuSuiteSkip } from './gpu.testing';
import { fixturesDir, relativeL2 } from './golden';
import { GroupOffloadOptions } from './offload';
import { FluxPipeline, GenerateOptions } from './pipeline';

const skip = gpuSuiteSkip('offload.gpu.spec');

const COMPONENTS = ['text_encoder', 'text_encoder_2', 'transformer', 'vae'] as const;
const run: GenerateOptions = { prompt: 'a cat on a skateboard', height: 32, width: 32, numInferenceSteps: 3, seed: 5, maxSequenceLength: 16, progress: false };

interface Outcome {
  pixels: Uint8Array;
  latents: Float32Array;
  /** Peak device memory of the run: live tensors plus the graphs' private pools. */
  peak: number;
  captureMs: number;
}

async function generate(pipe: FluxPipeline, trace?: GenerateOptions['trace']): Promise<Outcome> {
  let latents: Float32Array = new Float32Array(0);
  const result = await pipe.generate({
    ...run,
    trace: (name, t) => {
      if (name === 'latents_final') latents = t.toArray() as Float32Array;
      trace?.(name, t);
    },
  });
  return { pixels: result.images[0].data, latents, peak: result.memory.peakAllocatedBytes + result.memory.graphPoolBytes, captureMs: result.timings.captureMs };
}

/** Bitwise, or within 1e-6 where a kernel's summation order may vary between launches (as transformer.gpu.spec). */
function sameOrClose(label: string, actual: Float32Array, expected: Float32Array): void {
  const bitwise = actual.length === expected.length && actual.every((v, i) => Object.is(v, expected[i]));
  const error = relativeL2(actual, expected);
  console.log(`  ${label}: ${bitwise ? 'bitwise equal' : `rel L2 ${error.toExponential(2)} (not bitwise)`}`);
  assert.ok(bitwise || error <= 1e-6, `${label}: rel L2 ${error} > 1e-6`);
}

function deviceByComponent(): Record<string, number> {
  const byTag = memory.stats('cuda').byTag;
  return Object.fromEntries(COMPONENTS.map((c) => [c, byTag[c] ?? 0]));
}

function hostByComponent(): Record<string, number> {
  const byTag = memory.hostStats().byTag;
  return Object.fromEntries(COMPONENTS.map((c) => [c, byTag[c] ?? 0]));
}

const MODES: { label: string; enable: (pipe: FluxPipeline) => void; streamed: boolean }[] = [
  { label: 'model', enable: (pipe) => pipe.enableModelCpuOffload(), streamed: false },
  { label: 'sequential', enable: (pipe) => pipe.enableSequentialCpuOffload(), streamed: true },
  ...(
    [
      { type: 'block_level', blocksPerGroup: 1, useStream: true },
      { type: 'block_level', blocksPerGroup: 2, useStream: false },
      { type: 'leaf_level', useStream: true },
    ] as GroupOffloadOptions[]
  ).map((options) => ({ label: `group ${JSON.stringify(options)}`, enable: (pipe: FluxPipeline) => void pipe.enableGroupOffload(options), streamed: true })),
];

for (const fixture of ['tiny-flux', 'tiny-flux-nf4'] as const) {
  describe(`CPU offloading on CUDA: ${fixture}, every mode, eager and compiled`, { skip }, () => {
    let pipe: FluxPipeline;
    let eager: Outcome;
    let compiled: Outcome;
    let weights: Record<string, number>;
    /** Pinned host memory with the pipeline loaded (fromFile's staging buffers stay allocated once used). */
    let pinnedLoaded: number;

    before(async () => {
      if (skip) return;
      pipe = await FluxPipeline.fromPretrained(join(fixturesDir(), fixture), { device: 'cuda', dtype: 'float32' });
      pinnedLoaded = memory.hostStats().pinned;
      weights = deviceByComponent();
      eager = await generate(pipe);
      pipe.compile();
      await generate(pipe);
      compiled = await generate(pipe);
      pipe.transformer.uncompile();
      console.log(`  ${fixture} all resident: peak ${(eager.peak / 2 ** 20).toFixed(2)} MiB eager, ${(compiled.peak / 2 ** 20).toFixed(2)} MiB compiled`);
    });
    after(() => pipe?.dispose());

    it('has a GPU (FLUXLAB_REQUIRE_GPU=1)', () => {
      assertGpu();
      for (const c of COMPONENTS) assert.ok(weights[c] > 0, `${c} holds device memory when loaded`);
      assert.deepEqual(compiled.pixels, eager.pixels, 'compiled equals eager without offloading');
    });

    for (const mode of MODES) {
      for (const compile of [false, true]) {
        it(`${mode.label}, ${compile ? 'compiled' : 'eager'}: the same image, a lower device peak`, async () => {
          mode.enable(pipe);
          const info = pipe.offloadInfo()!;
          assert.deepEqual(deviceByComponent(), { text_encoder: 0, text_encoder_2: 0, transformer: 0, vae: 0 }, 'every weight left the device');
          assert.deepEqual(hostByComponent(), Object.fromEntries(info.components.map((c) => [c.name, c.hostBytes])), 'host copies, tagged by component');
          assert.equal(memory.hostStats().pinned - pinnedLoaded, info.hostBytes, 'the host copies are pinned');
          const warnings: string[] = [];
          const warn = console.warn;
          console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
          try {
            if (compile) pipe.compile();
            else pipe.transformer.uncompile();
          } finally {
            console.warn = warn;
          }
          if (compile && mode.streamed) {
            assert.equal(warnings.length, 1, warnings.join('\n'));
            assert.match(warnings[0], /compile\(\): transformer is group-offloaded .* runs eagerly/);
            assert.equal(pipe.transformer.compiled, false);
          } else if (compile) {
            assert.equal(pipe.transformer.compiled, true, 'model offload keeps compile');
          }

          // Model offload: one component's weights on the device at any time, in the hook chain's order.
          const residentAt: string[] = [];
          const check = (): void => {
            const resident = Object.entries(deviceByComponent()).filter(([, bytes]) => bytes > 0).map(([c]) => c);
            if (mode.label === 'model') assert.ok(resident.length <= 1, `resident together: ${resident.join(', ')}`);
            residentAt.push(resident.join('+'));
          };
          const first = await generate(pipe, (name) => {
            if (name === 'prompt_embeds' || name === 'step1.noise_pred' || name === 'image_decoded') check();
          });
          const second = await generate(pipe);
          // Group offload: between the calls of a component, none of its weights stay on the device.
          assert.deepEqual(residentAt, mode.label === 'model' ? ['text_encoder_2', 'transformer', 'vae'] : ['', '', '']);
          if (compile && !mode.streamed) {
            assert.ok(first.captureMs > 0 && second.captureMs > 0, 'the graphs are recaptured each call (the transformer left the device)');
          } else {
            assert.equal(second.captureMs, 0);
          }
          const reference = compile && !mode.streamed ? compiled : eager;
          for (const [label, outcome] of [['first', first], ['second', second]] as const) {
            assert.deepEqual(outcome.pixels, reference.pixels, `${label} run: image differs from the pipeline without offloading`);
            sameOrClose(`${mode.label} ${compile ? 'compiled' : 'eager'} ${label} run latents_final`, outcome.latents, reference.latents);
          }
          const peak = Math.max(first.peak, second.peak);
          console.log(`  peak ${(peak / 2 ** 20).toFixed(2)} MiB (all resident ${(reference.peak / 2 ** 20).toFixed(2)} MiB)`);
          assert.ok(peak < reference.peak, `peak ${peak} B is not below the all-resident ${reference.peak} B`);
          assert.deepEqual(deviceByComponent(), { text_encoder: 0, text_encoder_2: 0, transformer: 0, vae: 0 }, 'nothing left on the device after the call');
          assert.equal(pipe.offloadInfo()!.deviceBytes, 0);
        });
      }
    }

    it('model offload: each upload finds the other components already gone', async () => {
      const seen: string[] = [];
      pipe.enableModelCpuOffload({
        onEvent: (e) => {
          if (e.type !== 'onload') return;
          const others = Object.entries(deviceByComponent()).filter(([c, bytes]) => c !== e.model && bytes > 0);
          assert.deepEqual(others, [], `${e.model} uploaded beside ${others.map(([c]) => c).join(', ')}`);
          seen.push(e.model);
        },
      });
      pipe.transformer.uncompile();
      assert.deepEqual((await generate(pipe)).pixels, eager.pixels);
      assert.deepEqual(seen, [...COMPONENTS]);
    });

    it('disableOffload() brings every weight back to the device and frees the pinned copies', async () => {
      pipe.disableOffload();
      assert.deepEqual(deviceByComponent(), weights);
      assert.equal(memory.hostStats().pinned, pinnedLoaded);
      assert.deepEqual((await generate(pipe)).pixels, eager.pixels);
    });

    it('the load option offload: each component leaves the device as soon as it is loaded', async () => {
      const base = memory.stats('cuda').allocated;
      memory.resetPeak('cuda');
      const other = await FluxPipeline.fromPretrained(join(fixturesDir(), fixture), { device: 'cuda', dtype: 'float32', offload: 'model' });
      try {
        const loadPeak = memory.stats('cuda').peakAllocated - base;
        const all = Object.values(weights).reduce((a, b) => a + b, 0);
        console.log(`  load peak ${(loadPeak / 2 ** 20).toFixed(2)} MiB, all weights ${(all / 2 ** 20).toFixed(2)} MiB`);
        assert.ok(loadPeak < all, `loading held ${loadPeak} B, the whole pipeline is ${all} B`);
        assert.equal(other.offloadInfo()!.mode, 'model');
        assert.equal(other.offloadInfo()!.deviceBytes, 0);
        assert.equal(memory.stats('cuda').allocated, base, 'nothing of it stays on the device');
        assert.deepEqual((await generate(other)).pixels, eager.pixels);
      } finally {
        other.dispose();
      }
    });

    it('dispose() of an offloaded pipeline frees its pinned host copies', async () => {
      const other = await FluxPipeline.fromPretrained(join(fixturesDir(), fixture), { device: 'cuda', dtype: 'float32' });
      other.enableGroupOffload({ type: 'block_level', blocksPerGroup: 1, useStream: true });
      assert.ok(memory.hostStats().pinned > pinnedLoaded);
      assert.deepEqual((await generate(other)).pixels, eager.pixels);
      other.dispose();
      assert.equal(memory.hostStats().pinned, pinnedLoaded);
    });
  });
}

describe('fluxlab bench offload rows on CUDA (tiny-flux)', { skip }, () => {
  it('runs none, model, group and sequential rows on one pipeline: pinned host memory, a lower peak', async () => {
    const rows = await benchPipeline({
      load: () => FluxPipeline.fromPretrained(join(fixturesDir(), 'tiny-flux'), { device: 'cuda', dtype: 'bfloat16' }),
      configs: [
        { quantization: 'bf16', compile: 'compile', offload: 'none' },
        { quantization: 'bf16', compile: 'compile', offload: 'model' },
        { quantization: 'bf16', compile: 'eager', offload: 'group' },
        { quantization: 'bf16', compile: 'eager', offload: 'sequential' },
      ],
      height: 32,
      width: 32,
      steps: 3,
      warmupSteps: 1,
      maxSequenceLength: 16,
    });
    for (const row of rows) console.log(`  ${row.offload}: peak ${row.peak_vram_gb! * 1024} MiB, pinned ${row.pinned_host_gb * 1024} MiB, ${row.latency_s.toFixed(3)} s`);
    assert.deepEqual(rows.map((r) => r.offload), ['none', 'model', 'group', 'sequential']);
    for (const row of rows.slice(1)) {
      assert.ok(row.finite);
      assert.ok(row.pinned_host_gb > rows[0].pinned_host_gb, `${row.offload}: pinned host copies beside the loader's staging buffers`);
      assert.ok(row.peak_vram_gb! < rows[0].peak_vram_gb!, `${row.offload}: peak ${row.peak_vram_gb} not below ${rows[0].peak_vram_gb}`);
    }
    assert.ok(rows[1].capture_s! > 0, 'model offload keeps compile (recaptured each call)');
  });
});
