// What `import { … } from 'fluxlab'` gives a notebook cell (and any Node program): the host-facing runtime
// contracts (interrupts, rich display, comms, shutdown hooks). The Flux library adds its exports here.
export * from './runtime/index.js';
