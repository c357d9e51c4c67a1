// One component's weights: a single `<base>.safetensors` or shards listed by `<base>.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor: shard file}}), as diffusers and transformers save them.
// `base` is 'diffusion_pytorch_model' for diffusers models and 'model' for transformers models.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsEntry, SafetensorsError, SafetensorsFile } from './safetensors';

export interface WeightRef {
  readonly file: SafetensorsFile;
  readonly entry: SafetensorsEntry;
}

export interface CheckpointOptions {
  /** diffusers' `variant` (e.g. 'fp16' selects `<base>.fp16.safetensors`). */
  variant?: string;
}

export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly files: readonly SafetensorsFile[],
    private readonly weights: ReadonlyMap<string, WeightRef>,
  ) {}

  /** Opens the weights of a component directory (headers only). */
  static open(dir: string, base: string, options: CheckpointOptions = {}): Checkpoint {
    const variant = options.variant ? `.${options.variant}` : '';
    const single = join(dir, `${base}${variant}.safetensors`);
    const indexNames = options.variant
      ? [`${base}.safetensors.index${variant}.json`, `${base}${variant}.safetensors.index.json`]
      : [`${base}.safetensors.index.json`];
    const index = indexNames.map((n) => join(dir, n)).find((p) => existsSync(p));
    if (index !== undefined) return Checkpoint.openSharded(dir, index);
    if (existsSync(single)) {
      const file = SafetensorsFile.open(single);
      return new Checkpoint(dir, [file], new Map(file.names().map((n) => [n, { file, entry: file.get(n) }])));
    }
    const present = existsSync(dir) ? readdirSync(dir) : [];
    const pickle = present.some((n) => n.endsWith('.bin') || n.endsWith('.pt') || n.endsWith('.ckpt'));
    throw new Error(
      `${dir}: no weights (expected ${base}${variant}.safetensors or ${indexNames[0]})` +
        (pickle ? '; only pickled PyTorch weights are present, and fluxlab reads safetensors only' : '') +
        `; the directory holds: ${present.length > 0 ? present.join(', ') : 'nothing'}`,
    );
  }

  private static openSharded(dir: string, indexPath: string): Checkpoint {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (err) {
      throw new Error(`${indexPath}: unreadable shard index (${(err as Error).message})`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
      throw new Error(`${indexPath}: shard index has no weight_map object`);
    }
    const shards = new Map<string, SafetensorsFile>();
    const weights = new Map<string, WeightRef>();
    for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
        throw new Error(`${indexPath}: weight_map['${name}'] is not a shard file name`);
      }
      let file = shards.get(shard);
      if (file === undefined) {
        const path = join(dir, shard);
        if (!existsSync(path)) {
          throw new SafetensorsError(path, name, `shard listed in ${indexPath} is missing (incomplete download?)`);
        }
        file = SafetensorsFile.open(path);
        shards.set(shard, file);
      }
      if (!file.has(name)) throw new SafetensorsError(file.path, name, `listed in ${indexPath} but absent from the shard`);
      weights.set(name, { file, entry: file.get(name) });
    }
    return new Checkpoint(dir, [...shards.values()], weights);
  }

  names(): string[] {
    return [...this.weights.keys()];
  }

  has(name: string): boolean {
    return this.weights.has(name);
  }

  get(name: string): WeightRef {
    const ref = this.weights.get(name);
    if (ref === undefined) {
      throw new Error(`${this.dir}: checkpoint has no tensor '${name}' (${this.files.map((f) => f.name).join(', ')})`);
    }
    return ref;
  }
}
