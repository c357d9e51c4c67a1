// Host copies of traced tensors with the golden files' dtypes: token ids int32, image_uint8 uint8, everything
// else float32 (whatever precision the run used), ready for writeSafetensors or a comparison.
import { Tensor } from '@fluxlab/native';
import type { TensorToWrite } from './safetensors';

export interface DumpedTensor extends TensorToWrite {
  dtype: 'F32' | 'I32' | 'U8';
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

export function dumpTensor(name: string, tensor: Tensor): DumpedTensor {
  const shape = [...tensor.shape];
  if (name === 'image_uint8' || tensor.dtype === 'uint8') return { dtype: 'U8', shape, data: Uint8Array.from(tensor.toArray() as Uint8Array) };
  if (tensor.dtype === 'int32' || tensor.dtype === 'int64') {
    const values = tensor.toArray();
    return { dtype: 'I32', shape, data: values instanceof BigInt64Array ? Int32Array.from(values, (v) => Number(v)) : Int32Array.from(values as Int32Array) };
  }
  return { dtype: 'F32', shape, data: Float32Array.from(tensor.toArray() as Float32Array) };
}
