// Messages between the main thread (runs cells) and the I/O thread (owns the five sockets). Structured-clone
// friendly: plain objects, strings and Uint8Arrays.
import type { ConnectionInfo } from './connection.js';
import type { LogLevel } from './log.js';
import type { GpuMemoryUsage } from './usage.js';
import type { Header, JsonObject, RoutedMessage } from './wire.js';

export type ReplyChannel = 'shell' | 'control';

export interface IoThreadData {
  connection: ConnectionInfo;
  /** See shared-state.ts. */
  shared: Int32Array;
  session: string;
  kernelInfo: JsonObject;
  logLevel: LogLevel;
}

export type ToMain =
  | { kind: 'ready' }
  | { kind: 'fatal'; error: string }
  /** A request for the main thread; `receivedAt` (Date.now()) lets stop_on_error abort what queued before. */
  | { kind: 'request'; channel: ReplyChannel; message: RoutedMessage; receivedAt: number }
  | { kind: 'input_reply'; message: RoutedMessage }
  | { kind: 'interrupt' }
  | { kind: 'shutdown'; restart: boolean }
  /** usage_request: GPU memory comes from the main thread (see usage.ts); unanswered if it is busy. */
  | { kind: 'gpu_memory_request'; id: number }
  /** Sockets are closed: the main thread may exit now. */
  | { kind: 'closed' };

export type ToIo =
  | {
      kind: 'send';
      channel: ReplyChannel | 'iopub' | 'stdin';
      msgType: string;
      content: JsonObject;
      parent: Header | JsonObject;
      metadata?: JsonObject;
      buffers?: Uint8Array[];
      /** Routing identities for shell/control/stdin; ignored on iopub. */
      identities?: Uint8Array[];
    }
  | { kind: 'gpu_memory'; id: number; devices: GpuMemoryUsage[] }
  /** The main thread has run its shutdown hooks: reply to shutdown_request and close. */
  | { kind: 'shutdown_ready' };
