// What `import { … } from 'fluxlab'` gives a notebook cell (and any Node program): the host-facing runtime
// contracts (interrupts, rich display, comms, shutdown hooks). The Flux library adds its exports here.
export * from './runtime/index.js';
// The Flux library (docs/flux.md) and the tensor API its inputs and outputs use (docs/native.md).
export * from './flux/index.js';
export { Tensor, NF4Tensor, Generator, Scope, tidy, keep, ops, memory, cuda } from '@fluxlab/native';
export type { DType, Device } from '@fluxlab/native';
