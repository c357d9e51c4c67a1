// The kernel's host-facing contracts, shared by the protocol (src/protocol) and library code (src/flux), which
// must not import each other. See README.md in this folder.
export { KeyboardInterrupt, interruptSignal, interruptRequested, onInterrupt, throwIfInterrupted } from './interrupt.js';
export {
  clearOutput,
  display,
  DisplayHandle,
  hasMimeBundle,
  mimeBundle,
  mimeBundleOf,
  type Display,
  type DisplayOptions,
  type ImageOptions,
  type MimeBundle,
  type MimeMetadata,
  type RichDisplay,
} from './display.js';
export {
  openComm,
  registerCommTarget,
  type Comm,
  type CommMessage,
  type CommTarget,
  type SendOptions,
} from './comm.js';
export { onShutdown } from './shutdown.js';
