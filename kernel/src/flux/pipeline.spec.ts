// FluxPipeline through the API: every golden case of test/fixtures (float32 CPU within 1e-4, NF4 pre-quantized
// and quantized on load within 1e-3), then loading variants and bad input.
import { NF4Tensor, Tensor, memory, ops, tidy } from '@fluxlab/native';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { installDisplayHost, type MimeBundle } from '../runtime/display';
import { KeyboardInterrupt, beginInterruptScope, requestInterrupt } from '../runtime/interrupt';
import { dumpTensor, DumpedTensor } from './dump';
import { GoldenCase, compareToGolden, fixturesDir, formatComparisons, goldenCases, relativeL2 } from './golden';
import { unpackLatents } from './latents';
import { decodePng } from './png';
import { autoencoderKLConfig, clipTextConfig, fluxTransformerConfig, t5Config } from './config';
import { EMBEDDED_MODEL_DIR, FluxPipeline, FluxPipelineLoadOptions, GenerateOptions } from './pipeline';
import { presetConfigs } from './presets';
import { FlowMatchEulerDiscreteScheduler } from './scheduler';
import { SafetensorsFile, writeSafetensors } from './safetensors';

const fixtures = fixturesDir();
const scratch = mkdtempSync(join(tmpdir(), 'fluxlab-pipeline-'));
const loaded = new Map<string, FluxPipeline>();
after(() => {
  for (const pipe of loaded.values()) pipe.dispose();
  rmSync(scratch, { recursive: true, force: true });
});

async function pipeline(dir: string, options: FluxPipelineLoadOptions = {}): Promise<FluxPipeline> {
  const key = `${dir} ${JSON.stringify(options)}`;
  let pipe = loaded.get(key);
  if (pipe === undefined) {
    pipe = await FluxPipeline.fromPretrained(dir, options);
    loaded.set(key, pipe);
  }
  return pipe;
}

function caseOptions(c: GoldenCase): GenerateOptions {
  return {
    progress: false,
    prompt: c.prompt,
    height: c.height,
    width: c.width,
    numInferenceSteps: c.steps,
    guidanceScale: c.guidance,
    seed: c.seed,
    maxSequenceLength: c.max_sequence_length,
  };
}

async function record(pipe: FluxPipeline, options: GenerateOptions): Promise<Map<string, DumpedTensor>> {
  const recorded = new Map<string, DumpedTensor>();
  await pipe.generate({ ...options, trace: (name, tensor) => recorded.set(name, dumpTensor(name, tensor)) });
  return recorded;
}

async function checkCase(label: string, pipe: FluxPipeline, c: GoldenCase, limit: number): Promise<void> {
  const recorded = await record(pipe, caseOptions(c));
  const results = compareToGolden(c, recorded, limit);
  const report = formatComparisons(label, results);
  console.log(report);
  assert.ok(results.every((r) => r.ok), report);
  // --seed reproduces diffusers' starting noise bit for bit (torch's AVX2 normal_fill, in the native Generator).
  const init = results.find((r) => r.name === 'latents_init');
  assert.equal(init?.value, 0, `latents_init rel L2 ${init?.value}`);
}

describe('FluxPipeline goldens: float32 CPU (manifest.json, rel L2 ≤ 1e-4)', () => {
  for (const c of goldenCases('manifest.json')) {
    it(`${c.pipeline}/${c.name}`, async () => {
      await checkCase(`${c.pipeline}/${c.name}`, await pipeline(join(fixtures, c.pipeline)), c, 1e-4);
    });
  }
});

describe('FluxPipeline goldens in reduced precision on the CPU (bf16 ≤ 2e-2, fp16 ≤ 1e-2 of the float32 goldens)', () => {
  // The GPU runs the same code paths with its own kernels (pipeline.gpu.spec.ts); here the dtype handling is checked.
  for (const [dtype, limit] of [['bfloat16', 2e-2], ['float16', 1e-2]] as const) {
    for (const c of goldenCases('manifest.json')) {
      it(`${dtype} ${c.pipeline}/${c.name}`, async () => {
        const pipe = await pipeline(join(fixtures, c.pipeline), { dtype });
        const results = compareToGolden(c, await record(pipe, caseOptions(c)), limit, 255);
        const report = formatComparisons(`cpu ${dtype} ${c.pipeline}/${c.name}`, results);
        console.log(report);
        assert.ok(results.every((r) => r.ok), report);
      });
    }
  }
});

describe('FluxPipeline goldens: NF4 (manifest-nf4.json, rel L2 ≤ 1e-3)', () => {
  for (const c of goldenCases('manifest-nf4.json')) {
    const doubleQuant = c.pipeline.endsWith('nf4dq');
    it(`pre-quantized checkpoint ${c.pipeline}/${c.name}`, async () => {
      await checkCase(`pre-quantized ${c.pipeline}/${c.name}`, await pipeline(join(fixtures, c.pipeline)), c, 1e-3);
    });
    it(`quantized on load (tiny-flux, doubleQuant ${doubleQuant}) vs ${c.pipeline}/${c.name}`, async () => {
      const pipe = await pipeline(join(fixtures, 'tiny-flux'), {
        quantization: { backend: 'bitsandbytes_4bit', components: ['transformer', 'text_encoder_2'], computeDtype: 'float32', doubleQuant },
      });
      await checkCase(`quantized-on-load dq=${doubleQuant} ${c.pipeline}/${c.name}`, pipe, c, 1e-3);
    });
  }

  for (const variant of ['tiny-flux-nf4', 'tiny-flux-nf4dq']) {
    it(`quantizes exactly the layers bitsandbytes quantized, to the same bytes (${variant})`, async () => {
      const doubleQuant = variant.endsWith('dq');
      const onLoad = await pipeline(join(fixtures, 'tiny-flux'), {
        quantization: { backend: 'bitsandbytes_4bit', components: ['transformer', 'text_encoder_2'], computeDtype: 'float32', doubleQuant },
      });
      const saved = await pipeline(join(fixtures, variant));
      for (const component of ['transformer', 'textEncoder2', 'textEncoder', 'vae'] as const) {
        const a = onLoad[component].linearLayers();
        const b = saved[component].linearLayers();
        assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
        for (const [name, layer] of a) {
          const other = b.get(name)!;
          assert.equal(layer.quantized, other.quantized, `${component}.${name} quantized`);
          if (!(layer.weight instanceof NF4Tensor) || !(other.weight instanceof NF4Tensor)) continue;
          const mine = layer.weight.toBitsandbytes();
          const theirs = other.weight.toBitsandbytes();
          try {
            assert.deepEqual(Object.keys(mine).sort(), Object.keys(theirs).sort());
            for (const key of Object.keys(mine)) {
              assert.deepEqual(Buffer.from(mine[key].toBytes()), Buffer.from(theirs[key].toBytes()), `${component}.${name}.${key}`);
            }
          } finally {
            for (const t of [...Object.values(mine), ...Object.values(theirs)]) t.dispose();
          }
        }
      }
      const quantized = (m: ReadonlyMap<string, { quantized: boolean }>) => [...m.values()].filter((l) => l.quantized).length;
      assert.equal(quantized(onLoad.transformer.linearLayers()), 50);
      assert.equal(quantized(onLoad.textEncoder2.linearLayers()), 12, 'T5: every Linear but wo');
      assert.equal(onLoad.textEncoder2.linearLayers().get('encoder.block.0.layer.1.DenseReluDense.wo')!.weight.dtype, 'float32');
    });
  }
});

/** A writable copy of a fixture pipeline (the fixtures themselves are never modified). */
function copyPipeline(name: string, from = 'tiny-flux'): string {
  const dir = join(scratch, name);
  cpSync(join(fixtures, from), dir, { recursive: true });
  return dir;
}

const shortRun: GenerateOptions = { progress: false, prompt: 'a cat', height: 16, width: 16, numInferenceSteps: 2, seed: 1, maxSequenceLength: 16 };

describe('FluxPipeline loading', () => {
  it('loads a Hugging Face hub cache snapshot (symlinks into blobs/) from a repo id', async () => {
    const hub = join(scratch, 'hub');
    const repo = join(hub, 'models--fluxlab--tiny-flux');
    const commit = '0123456789abcdef0123456789abcdef01234567';
    const source = join(fixtures, 'tiny-flux');
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else files.push(relative(source, path));
      }
    };
    walk(source);
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    mkdirSync(join(repo, 'refs'), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), commit);
    files.forEach((file, i) => {
      const blob = join(repo, 'blobs', `blob${i}`);
      cpSync(join(source, file), blob);
      const link = join(repo, 'snapshots', commit, file);
      mkdirSync(join(link, '..'), { recursive: true });
      symlinkSync(relative(join(link, '..'), blob), link);
    });
    const previous = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = hub;
    try {
      const pipe = await FluxPipeline.fromPretrained('fluxlab/tiny-flux');
      try {
        assert.equal(pipe.modelPath, join(repo, 'snapshots', commit));
        const a = await record(pipe, shortRun);
        const b = await record(await pipeline(join(fixtures, 'tiny-flux')), shortRun);
        assert.deepEqual(a.get('image_uint8')!.data, b.get('image_uint8')!.data);
      } finally {
        pipe.dispose();
      }
    } finally {
      if (previous === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = previous;
    }
  });

  it('loads sharded checkpoints through their index.json, with the same results', async () => {
    const dir = copyPipeline('sharded');
    const file = SafetensorsFile.open(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors'));
    const names = file.names().sort();
    const half = Math.floor(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => {
      const shardName = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(
        join(dir, 'transformer', shardName),
        shard.map((n) => [n, { dtype: file.get(n).dtype, shape: file.get(n).shape, data: file.readBytes(n) }] as const),
      );
      for (const n of shard) weightMap[n] = shardName;
    });
    rmSync(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors'));
    writeFileSync(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const pipe = await FluxPipeline.fromPretrained(dir);
    try {
      const a = await record(pipe, shortRun);
      const b = await record(await pipeline(join(fixtures, 'tiny-flux')), shortRun);
      assert.deepEqual(a.get('step1.noise_pred')!.data, b.get('step1.noise_pred')!.data);
    } finally {
      pipe.dispose();
    }
  });

  it('loads transformers-4 checkpoints as FLUX.1-dev ships them (text_model. prefix, tied encoder.embed_tokens)', async () => {
    const dir = copyPipeline('transformers4');
    const rewrite = (path: string, rename: (name: string) => string[]): void => {
      const file = SafetensorsFile.open(path);
      writeSafetensors(
        path,
        file.names().flatMap((n) => rename(n).map((m) => [m, { dtype: file.get(n).dtype, shape: file.get(n).shape, data: file.readBytes(n) }] as const)),
      );
    };
    rewrite(join(dir, 'text_encoder', 'model.safetensors'), (n) => [`text_model.${n}`]);
    rewrite(join(dir, 'text_encoder_2', 'model.safetensors'), (n) => (n === 'shared.weight' ? [n, 'encoder.embed_tokens.weight'] : [n]));
    const pipe = await FluxPipeline.fromPretrained(dir);
    try {
      const a = await record(pipe, shortRun);
      const b = await record(await pipeline(join(fixtures, 'tiny-flux')), shortRun);
      assert.deepEqual(a.get('prompt_embeds')!.data, b.get('prompt_embeds')!.data);
      assert.deepEqual(a.get('pooled_prompt_embeds')!.data, b.get('pooled_prompt_embeds')!.data);
    } finally {
      pipe.dispose();
    }
  });

  it('stops loading on the kernel interrupt and frees the components already loaded', async () => {
    const before = memory.hostStats().allocated;
    beginInterruptScope();
    try {
      await assert.rejects(
        FluxPipeline.fromPretrained(join(fixtures, 'tiny-flux'), { onLoad: ({ component }) => component === 'text_encoder_2' && requestInterrupt() }),
        (err: unknown) => err instanceof KeyboardInterrupt,
      );
    } finally {
      beginInterruptScope();
    }
    assert.equal(memory.hostStats().allocated, before);
  });

  it('uses the embedded pipeline when no model is given, labelled as random weights', async () => {
    const pipe = await FluxPipeline.fromPretrained();
    try {
      assert.equal(pipe.randomWeights, true);
      const result = await pipe.generate(shortRun);
      assert.equal(result.randomWeights, true);
      assert.match(result.summary, /RANDOM WEIGHTS/);
      const png = decodePng(result.images[0].toPNG());
      assert.equal(png.text['fluxlab:random-weights'], 'true');
      assert.equal(png.width, 16);
      assert.deepEqual(png.rgb, result.images[0].data);
      const bundle = (result as unknown as Record<symbol, () => Record<string, unknown>>)[Symbol.for('fluxlab.mimeBundle')]();
      assert.ok(bundle['image/png'] instanceof Uint8Array);
      assert.match(String(bundle['text/html']), /data:image\/png;base64,/);
    } finally {
      pipe.dispose();
    }
  });
});

describe('FluxPipeline usage', () => {
  it('rounds sizes not divisible by 2 × vae_scale_factor down, with diffusers warning', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const result = await pipe.generate({ ...shortRun, height: 30, width: 21 });
    assert.equal(result.height, 28);
    assert.equal(result.width, 20);
    assert.match(result.warnings.join('\n'), /`height` and `width` have to be divisible by 4 but are 30 and 21\. Dimensions will be resized accordingly/);
  });

  it('makes numImagesPerPrompt images per prompt from one noise draw, like diffusers', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const two = await record(pipe, { ...shortRun, prompt: ['a cat', 'a dog'], numImagesPerPrompt: 2 });
    assert.deepEqual(two.get('prompt_embeds')!.shape, [4, 16, 32]);
    const embeds = two.get('prompt_embeds')!.data as Float32Array;
    const row = 16 * 32;
    assert.deepEqual(embeds.subarray(0, row), embeds.subarray(row, 2 * row));
    assert.notDeepEqual(embeds.subarray(row, 2 * row), embeds.subarray(2 * row, 3 * row));
    assert.deepEqual(two.get('image_uint8')!.shape, [4, 16, 16, 3]);
  });

  it('projects every step\'s modulation once per generation (modulationTable), each step taking its row', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const transformer = pipe.transformer;
    const tables: number[][] = [];
    const given: boolean[] = [];
    const table = transformer.modulationTable;
    const forward = transformer.forward;
    transformer.modulationTable = (inputs) => {
      const t = table.call(transformer, inputs);
      tables.push([...t.shape]);
      return t;
    };
    transformer.forward = (inputs) => {
      given.push(inputs.modulation !== undefined && inputs.modulation.shape[1] === transformer.modulationWidth);
      return forward.call(transformer, inputs);
    };
    try {
      await pipe.generate({ ...shortRun, numInferenceSteps: 3, prompt: ['a cat', 'a dog'] });
    } finally {
      transformer.modulationTable = table;
      transformer.forward = forward;
    }
    assert.deepEqual(tables, [[3, 2, transformer.modulationWidth]]);
    assert.deepEqual(given, [true, true, true]);
  });

  it('takes custom sigmas like diffusers (the default schedule given explicitly changes nothing)', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const a = await record(pipe, { ...shortRun, numInferenceSteps: 3 });
    const b = await record(pipe, { ...shortRun, sigmas: [1, 2 / 3, 1 / 3] });
    assert.deepEqual(b.get('sigmas')!.data, a.get('sigmas')!.data);
    assert.deepEqual(b.get('image_uint8')!.data, a.get('image_uint8')!.data);
  });

  it('encodePrompt and the component models work on their own', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const c = goldenCases('manifest.json').find((g) => g.pipeline === 'tiny-flux' && g.name === 'cat')!;
    const golden = SafetensorsFile.open(join(fixtures, 'tiny-flux-golden', 'cat.safetensors'));
    const encoded = pipe.encodePrompt({ prompt: c.prompt, maxSequenceLength: c.max_sequence_length });
    try {
      assert.deepEqual([...encoded.t5InputIds], [...(golden.readArray('t5_input_ids') as Int32Array)]);
      assert.ok(relativeL2(encoded.pooledPromptEmbeds.toArray() as Float32Array, golden.readArray('pooled_prompt_embeds') as Float32Array) < 1e-4);
      assert.ok(relativeL2(encoded.promptEmbeds.toArray() as Float32Array, golden.readArray('prompt_embeds') as Float32Array) < 1e-4);
    } finally {
      encoded.dispose();
    }
  });

  it('the transformer and the VAE reproduce the golden step and decode on their own', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const golden = SafetensorsFile.open(join(fixtures, 'tiny-flux-golden', 'cat.safetensors'));
    const tensor = (name: string): Tensor => Tensor.fromArray(golden.readArray(name) as Float32Array, [...golden.get(name).shape]);
    tidy(() => {
      const rotary = pipe.transformer.posEmbed(golden.readArray('text_ids') as Float32Array, golden.readArray('img_ids') as Float32Array);
      const noise = pipe.transformer.forward({
        hiddenStates: tensor('step1.hidden_states'),
        encoderHiddenStates: tensor('prompt_embeds'),
        pooledProjections: tensor('pooled_prompt_embeds'),
        timestep: golden.readArray('step1.timestep') as Float32Array,
        guidance: golden.readArray('step1.guidance') as Float32Array,
        rotary,
      });
      assert.ok(relativeL2(noise.toArray() as Float32Array, golden.readArray('step1.noise_pred') as Float32Array) < 1e-4);
      const { scaling_factor: scale, shift_factor: shift } = pipe.vae.config;
      const z = ops.affine(unpackLatents(tensor('latents_final'), 16, 16), 1 / scale, shift ?? 0);
      assert.ok(relativeL2(pipe.vae.decode(z).toArray() as Float32Array, golden.readArray('image_decoded') as Float32Array) < 1e-4);
    });
  });

  it('stops at the next step when aborted and frees what the run allocated', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const before = memory.hostStats().allocated;
    const controller = new AbortController();
    let steps = 0;
    await assert.rejects(
      pipe.generate({
        ...shortRun,
        numInferenceSteps: 6,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.stage === 'denoise') {
            steps = p.step;
            if (p.step === 2) controller.abort(new Error('stop here'));
          }
        },
      }),
      /stop here/,
    );
    assert.equal(steps, 2);
    assert.equal(memory.hostStats().allocated, before, 'host memory back to its level before the run');
    const again = await pipe.generate(shortRun);
    assert.equal(again.images.length, 1, 'the pipeline stays usable');
  });

  it('stops on the kernel interrupt (runtime interrupt scope) with KeyboardInterrupt', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const before = memory.hostStats().allocated;
    beginInterruptScope();
    try {
      await assert.rejects(
        pipe.generate({ ...shortRun, numInferenceSteps: 5, onProgress: (p) => p.step === 1 && p.stage === 'denoise' && requestInterrupt() }),
        (err: unknown) => err instanceof KeyboardInterrupt,
      );
    } finally {
      beginInterruptScope();
    }
    assert.equal(memory.hostStats().allocated, before);
  });

  it('shows progress as one display updated in place', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const published: { data: MimeBundle; id: string; update: boolean }[] = [];
    installDisplayHost({ publish: (data, _metadata, id, update) => published.push({ data, id, update }), clearOutput: () => undefined });
    try {
      await pipe.generate({ ...shortRun, progress: true, numInferenceSteps: 3 });
    } finally {
      installDisplayHost(undefined);
    }
    assert.equal(published.length, 6);
    assert.equal(new Set(published.map((p) => p.id)).size, 1);
    assert.deepEqual(published.map((p) => p.update), [false, ...new Array(published.length - 1).fill(true)]);
    assert.deepEqual(published.map((p) => String(p.data['text/plain']).replace(/ · .*/, '')), ['encoding prompt', 'step 1/3', 'step 2/3', 'step 3/3', 'decoding', 'done: 3 steps']);
    assert.match(String(published[2].data['text/html']), /<progress class="fluxlab-progress-bar" max="3" value="2">/);
  });

  it('rejects empty prompts and bad arguments with clear errors, and stays usable', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const before = memory.hostStats().allocated;
    await assert.rejects(pipe.generate({ ...shortRun, prompt: '' }), /empty prompt/);
    await assert.rejects(pipe.generate({ ...shortRun, prompt: ['a cat', '  '] }), /empty prompt \(prompt\[1\]\)/);
    await assert.rejects(pipe.generate({ ...shortRun, prompt: [] }), /prompt is an empty array/);
    await assert.rejects(pipe.generate({ ...shortRun, maxSequenceLength: 513 }), /`max_sequence_length` cannot be greater than 512 but is 513/);
    await assert.rejects(pipe.generate({ ...shortRun, height: 2 }), /height and width must be at least 4/);
    await assert.rejects(pipe.generate({ ...shortRun, numInferenceSteps: 0 }), /numInferenceSteps must be a positive integer/);
    await assert.rejects(pipe.generate({ ...shortRun, prompt2: ['x', 'y'] }), /prompt2 has 2 entries but prompt has 1/);
    assert.equal(memory.hostStats().allocated, before);
    assert.equal((await pipe.generate(shortRun)).images.length, 1);
  });
});

describe('FluxPipeline bad checkpoints', () => {
  it('names a missing component', async () => {
    const dir = copyPipeline('no-vae');
    rmSync(join(dir, 'vae'), { recursive: true });
    await assert.rejects(FluxPipeline.fromPretrained(dir), /missing component 'vae': .*no-vae\/vae does not exist/);
  });

  it('names the file and tensor of a truncated safetensors file', async () => {
    const dir = copyPipeline('truncated');
    const path = join(dir, 'transformer', 'diffusion_pytorch_model.safetensors');
    const file = SafetensorsFile.open(path);
    const last = file.names().reduce((a, b) => (file.get(a).offset > file.get(b).offset ? a : b));
    truncateSync(path, file.fileSize - 10);
    await assert.rejects(FluxPipeline.fromPretrained(dir), (err: Error) => err.message.includes(path) && err.message.includes(`tensor '${last}'`) && /truncated/.test(err.message));
  });

  it('reports a corrupt header', async () => {
    const dir = copyPipeline('corrupt');
    const path = join(dir, 'vae', 'diffusion_pytorch_model.safetensors');
    const bytes = readFileSync(path);
    bytes.write('#', 9);
    writeFileSync(path, bytes);
    await assert.rejects(FluxPipeline.fromPretrained(dir), new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: corrupt header`));
  });

  it('reports tensor shape and dtype mismatches with the config', async () => {
    const dir = copyPipeline('shape');
    const config = JSON.parse(readFileSync(join(dir, 'transformer', 'config.json'), 'utf8'));
    config.joint_attention_dim = 48;
    writeFileSync(join(dir, 'transformer', 'config.json'), JSON.stringify(config));
    await assert.rejects(FluxPipeline.fromPretrained(dir), /transformer: .*tensor 'context_embedder.weight' has shape \[32, 32\] but the config implies \[32, 48\]/);

    const dtypeDir = copyPipeline('dtype');
    const path = join(dtypeDir, 'text_encoder', 'model.safetensors');
    const file = SafetensorsFile.open(path);
    writeSafetensors(
      path,
      file.names().map((n) => {
        const entry = file.get(n);
        return [n, n === 'final_layer_norm.bias' ? { dtype: 'I32' as const, shape: entry.shape, data: new Int32Array(entry.shape[0]) } : { dtype: entry.dtype, shape: entry.shape, data: file.readBytes(n) }] as const;
      }),
    );
    await assert.rejects(FluxPipeline.fromPretrained(dtypeDir), /text_encoder: .*tensor 'final_layer_norm.bias' is stored as I32, expected a float tensor/);
  });

  it('rejects an unknown quantization backend before loading anything', async () => {
    await assert.rejects(
      FluxPipeline.fromPretrained(join(fixtures, 'tiny-flux'), { quantization: { backend: 'gguf' as never } }),
      /unknown quantization backend "gguf": supported are 'bitsandbytes_4bit' and 'nf4'/,
    );
    await assert.rejects(
      FluxPipeline.fromPretrained(join(fixtures, 'tiny-flux'), { quantization: { backend: 'nf4', components: ['unet'] } }),
      /quantization: unknown component 'unet'/,
    );
  });
});

describe('FluxPipeline.fromRandom (random weights at a preset\'s shapes)', () => {
  const quiet = async <T>(fn: () => Promise<T>): Promise<{ value: T; warnings: string[] }> => {
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
    try {
      return { value: await fn(), warnings };
    } finally {
      console.warn = warn;
    }
  };

  it('builds the tiny preset, says RANDOM WEIGHTS everywhere, and is deterministic per seed', async () => {
    const { value: pipe, warnings } = await quiet(() => FluxPipeline.fromRandom('tiny-flux', { seed: 5 }));
    const again = await FluxPipeline.fromRandom('tiny-flux', { seed: 5 });
    const other = await FluxPipeline.fromRandom('tiny-flux', { seed: 6 });
    try {
      assert.ok(warnings.some((w) => /RANDOM WEIGHTS at tiny-flux shapes \(seed 5\)/.test(w)), warnings.join('\n'));
      assert.equal(pipe.randomWeights, true);
      assert.equal(pipe.modelPath, 'random:tiny-flux');
      assert.equal(pipe.transformer.transformer_blocks.length, 2);
      const result = await pipe.generate(shortRun);
      assert.match(result.summary, /RANDOM WEIGHTS at tiny-flux shapes \(seed 5\), images are noise by design/);
      assert.match(result.images[0].metadata['fluxlab:model'], /RANDOM WEIGHTS/);
      assert.equal(result.images[0].metadata['fluxlab:random-weights'], 'true');
      const b = await again.generate(shortRun);
      const c = await other.generate(shortRun);
      assert.deepEqual(result.images[0].data, b.images[0].data);
      assert.notDeepEqual(result.images[0].data, c.images[0].data);
    } finally {
      for (const p of [pipe, again, other]) p.dispose();
    }
  });

  it('applies config overrides and quantizes on load like fromPretrained', async () => {
    const pipe = await FluxPipeline.fromRandom('tiny-flux', {
      overrides: { transformer: { num_layers: 1, num_single_layers: 1 } },
      quantization: { backend: 'nf4', computeDtype: 'float32' },
    });
    try {
      assert.equal(pipe.transformer.transformer_blocks.length, 1);
      assert.equal(pipe.transformer.single_transformer_blocks.length, 1);
      const layers = [...pipe.transformer.linearLayers().values()];
      assert.ok(layers.length > 0 && layers.every((l) => l.quantized));
      const wo = pipe.textEncoder2.linearLayers().get('encoder.block.0.layer.1.DenseReluDense.wo')!;
      assert.deepEqual([wo.weight.dtype, wo.dtype], ['bfloat16', 'float32'], 'random weights stand in for a bf16 checkpoint: float32 wo over bf16');
      const result = await pipe.generate(shortRun);
      assert.ok(result.images[0].data.length > 0);
    } finally {
      pipe.dispose();
    }
  });

  it('embeds FLUX.1-dev\'s configs (19 + 38 blocks of 24 × 128, T5-XXL, CLIP-L, 16-channel VAE)', () => {
    const configs = presetConfigs('flux1-dev', EMBEDDED_MODEL_DIR);
    const transformer = fluxTransformerConfig(configs.transformer);
    assert.deepEqual(
      [transformer.num_layers, transformer.num_single_layers, transformer.num_attention_heads, transformer.attention_head_dim, transformer.in_channels],
      [19, 38, 24, 128, 64],
    );
    assert.deepEqual(transformer.axes_dims_rope, [16, 56, 56]);
    assert.equal(transformer.guidance_embeds, true);
    const t5 = t5Config(configs.text_encoder_2);
    assert.deepEqual([t5.d_model, t5.num_layers, t5.num_heads, t5.d_kv, t5.d_ff, t5.vocab_size], [4096, 24, 64, 64, 10240, 32128]);
    assert.equal(t5.feed_forward_proj, 'gated-gelu');
    const clip = clipTextConfig(configs.text_encoder);
    assert.deepEqual([clip.hidden_size, clip.num_hidden_layers, clip.num_attention_heads, clip.intermediate_size, clip.eos_token_id], [768, 12, 12, 3072, 2]);
    const vae = autoencoderKLConfig(configs.vae);
    assert.deepEqual([vae.latent_channels, vae.scaling_factor, vae.shift_factor, vae.use_post_quant_conv], [16, 0.3611, 0.1159, false]);
    assert.deepEqual(vae.block_out_channels, [128, 256, 512, 512]);
    const scheduler = new FlowMatchEulerDiscreteScheduler(configs.scheduler);
    assert.deepEqual([scheduler.config.shift, scheduler.config.use_dynamic_shifting, scheduler.config.max_shift], [3, true, 1.15]);
    // the presets hand out copies
    configs.transformer.num_layers = 1;
    assert.equal(presetConfigs('flux1-dev', EMBEDDED_MODEL_DIR).transformer.num_layers, 19);
  });

  it('rejects unknown presets and override targets before loading anything', async () => {
    await assert.rejects(FluxPipeline.fromRandom('flux2' as never), /unknown random-weights preset 'flux2'/);
    await assert.rejects(FluxPipeline.fromRandom('tiny-flux', { overrides: { unet: {} } as never }), /overrides names 'unet'/);
  });
});

describe('compile() on the CPU', () => {
  it('is a no-op with one message: the model keeps running eagerly, results unchanged', async () => {
    const pipe = await pipeline(join(fixtures, 'tiny-flux'));
    const eager = await record(pipe, shortRun);
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
    try {
      assert.equal(pipe.compile(), pipe);
      pipe.transformer.compile();
    } finally {
      console.warn = warn;
    }
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /compile\(\): CUDA graphs need a CUDA device; the model on cpu runs eagerly/);
    assert.equal(pipe.transformer.compiled, false);
    assert.deepEqual(pipe.transformer.graphInfo(), []);
    const again = await record(pipe, shortRun);
    assert.deepEqual(again.get('image_uint8')!.data, eager.get('image_uint8')!.data);
    const result = await pipe.generate(shortRun);
    assert.equal(result.memory.graphBytes, 0);
    assert.equal(result.timings.captureMs, 0);
  });
});
