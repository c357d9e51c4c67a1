// For specs: random weights whose values are bfloat16 numbers whatever dtype a model asks for, as a checkpoint
// stored in bf16 (FLUX.1-dev's) or a float32 checkpoint holding those same values would give them. Comparisons of a
// float32 path with a bf16 one then start from identical weights (NF4 quantized on load gets the same codes and
// absmax from both), so what differs is the compute, not the inputs.
import { Tensor, tidy, type Device } from '@fluxlab/native';
import type { FloatDType, ParameterInit, WeightSource } from './nn';
import { RandomWeights } from './random-weights';

export class Bf16ValuedWeights implements WeightSource {
  readonly random = true;
  readonly description: string;
  private readonly source: RandomWeights;

  /** `storedAs`: the dtype the imagined checkpoint stores (decides float32 layers' storage, nn.ts). */
  constructor(seed: number, private readonly storedAs: FloatDType) {
    this.source = new RandomWeights({ seed });
    this.description = `${this.source.description}, bf16 values stored as ${storedAs}`;
  }

  has(key: string): boolean {
    return this.source.has(key);
  }

  names(): string[] {
    return this.source.names();
  }

  storedDtype(key: string): FloatDType | undefined {
    return this.has(key) ? this.storedAs : undefined;
  }

  float(component: string, key: string, shape: readonly number[], dtype: FloatDType, device: Device, init: ParameterInit): Tensor {
    return tidy(() => this.source.float(component, key, shape, 'bfloat16', device, init).to({ dtype }));
  }

  raw(component: string, key: string): Tensor {
    return this.source.raw(component, key);
  }

  bytes(component: string, key: string): Buffer {
    return this.source.bytes(component, key);
  }
}
