// The kernel's I/O thread (a worker_thread). It owns all five ZeroMQ sockets so that heartbeats, interrupts,
// usage and kernel_info keep being answered while the main thread is stuck in user code (a synchronous
// `while (true) {}` blocks the main event loop entirely). It verifies and decodes every incoming message,
// drops what is malformed, forwards requests to the main thread in order, and signs and sends what the main
// thread asks it to, coalescing consecutive stream output.
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { Publisher, Router, type Socket } from 'zeromq';
import { endpoint, type Channel } from './connection.js';
import type { IoThreadData, ReplyChannel, ToIo, ToMain } from './io-messages.js';
import { createLogger, type Logger } from './log.js';
import { PHASE_SYNC_RUN, SLOT_INTERRUPT, SLOT_PHASE, SLOT_RUN } from './shared-state.js';
import { UsageReporter, type GpuMemoryUsage } from './usage.js';
import { decode, encode, newHeader, Signer, type Header, type JsonObject, type RoutedMessage } from './wire.js';

/** Requests the main thread serves (the rest of the spec's requests are answered here). */
const MAIN_THREAD_REQUESTS = new Set([
  'execute_request',
  'inspect_request',
  'complete_request',
  'history_request',
  'is_complete_request',
  'comm_info_request',
  'comm_open',
  'comm_msg',
  'comm_close',
]);

/** A send queue per socket: zeromq allows one send in flight per socket. */
class Outbox {
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly socket: Socket & { send(frames: Buffer[]): Promise<void> },
    private readonly log: Logger,
    private readonly name: string,
  ) {}

  send(frames: Buffer[]): void {
    this.tail = this.tail.then(
      () => this.socket.send(frames),
    ).catch((error: unknown) => {
      this.log.limited(`send-${this.name}`, 'warn', `send on ${this.name} failed: ${String(error)}`);
    });
  }

  drained(): Promise<void> {
    return this.tail;
  }
}

interface PendingStream {
  parent: Header | JsonObject;
  name: string;
  text: string;
}

const STREAM_FLUSH_BYTES = 64 * 1024;
/** How long the main thread may stay in one synchronous run after an interrupt before it gets SIGINT. */
const SIGINT_GRACE_MS = 100;
const SHUTDOWN_INTERRUPT_MS = 2000;
const SHUTDOWN_FORCE_MS = 5000;
/** How long usage_reply waits for the main thread's GPU figures before using the last ones it got. */
const GPU_MEMORY_WAIT_MS = 250;

export class IoThread {
  private readonly signer: Signer;
  private readonly log: Logger;
  private readonly shell = new Router({ linger: 1000 });
  private readonly control = new Router({ linger: 1000 });
  private readonly stdin = new Router({ linger: 1000 });
  private readonly iopub = new Publisher({ linger: 1000 });
  // The spec's heartbeat is a REP socket; a ROUTER that echoes the routing envelope is the same on the wire
  // (REQ and DEALER peers cannot tell) but has no send/receive state machine for a misbehaving peer to
  // wedge, and drops rather than blocks when a peer stops reading.
  private readonly hb = new Router({ linger: 0 });
  private readonly outboxes: Record<'shell' | 'control' | 'stdin' | 'iopub', Outbox>;
  private readonly usage = new UsageReporter();
  private lastGpuMemory: GpuMemoryUsage[] = [];
  private nextGpuRequest = 1;
  private readonly gpuWaiters = new Map<number, (devices: GpuMemoryUsage[]) => void>();
  private pendingStream: PendingStream | undefined;
  private streamFlushScheduled = false;
  private shutdown: { request: RoutedMessage; channel: ReplyChannel; finished: boolean } | undefined;

  constructor(
    private readonly data: IoThreadData,
    private readonly port: MessagePort,
  ) {
    this.signer = new Signer(data.connection.key, data.connection.signature_scheme);
    this.log = createLogger('io', data.logLevel);
    this.outboxes = {
      shell: new Outbox(this.shell, this.log, 'shell'),
      control: new Outbox(this.control, this.log, 'control'),
      stdin: new Outbox(this.stdin, this.log, 'stdin'),
      iopub: new Outbox(this.iopub, this.log, 'iopub'),
    };
  }

  async start(): Promise<void> {
    const sockets: [Channel, Socket][] = [
      ['shell', this.shell],
      ['control', this.control],
      ['stdin', this.stdin],
      ['iopub', this.iopub],
      ['hb', this.hb],
    ];
    for (const [channel, socket] of sockets) await socket.bind(endpoint(this.data.connection, channel));
    this.port.on('message', (message: ToIo) => this.fromMain(message));
    void this.serve(this.shell, 'shell');
    void this.serve(this.control, 'control');
    void this.serve(this.stdin, 'stdin');
    void this.heartbeat();
    this.watchParent();
    this.publish('status', { execution_state: 'starting' }, {});
    this.post({ kind: 'ready' });
  }

  private post(message: ToMain): void {
    this.port.postMessage(message);
  }

  private async heartbeat(): Promise<void> {
    try {
      for await (const frames of this.hb) {
        try {
          await this.hb.send(frames);
        } catch (error) {
          this.log.limited('heartbeat', 'warn', `heartbeat echo failed: ${String(error)}`);
        }
      }
    } catch (error) {
      if (!this.hb.closed) this.log.error(`heartbeat stopped: ${String(error)}`);
    }
  }

  private async serve(socket: Router, channel: 'shell' | 'control' | 'stdin'): Promise<void> {
    try {
      for await (const frames of socket) {
        try {
          this.received(channel, frames);
        } catch (error) {
          this.log.limited(`handler-${channel}`, 'error', `error handling a ${channel} message: ${String(error)}`);
        }
      }
    } catch (error) {
      if (!socket.closed) this.log.error(`${channel} receive loop stopped: ${String(error)}`);
    }
  }

  private received(channel: 'shell' | 'control' | 'stdin', frames: Buffer[]): void {
    const decoded = decode(frames, this.signer);
    if (!decoded.ok) {
      this.log.limited(`drop-${channel}`, 'warn', `dropped a ${channel} message: ${decoded.reason}`);
      return;
    }
    const message = decoded.message;
    const msgType = message.header.msg_type;
    if (channel === 'stdin') {
      if (msgType === 'input_reply') this.post({ kind: 'input_reply', message });
      else this.log.limited('drop-stdin', 'warn', `dropped a stdin message of type '${msgType}'`);
      return;
    }
    switch (msgType) {
      case 'kernel_info_request':
        this.answer(channel, message, 'kernel_info_reply', this.data.kernelInfo);
        return;
      case 'connect_request':
        this.answer(channel, message, 'connect_reply', {
          status: 'ok',
          shell_port: this.data.connection.shell_port,
          iopub_port: this.data.connection.iopub_port,
          stdin_port: this.data.connection.stdin_port,
          hb_port: this.data.connection.hb_port,
          control_port: this.data.connection.control_port,
        });
        return;
      case 'interrupt_request':
        this.interrupt();
        this.answer(channel, message, 'interrupt_reply', { status: 'ok' });
        return;
      case 'usage_request':
        this.publish('status', { execution_state: 'busy' }, message.header);
        void this.gpuMemory().then((devices) => {
          this.reply(channel, message, 'usage_reply', this.usage.content(devices));
          this.publish('status', { execution_state: 'idle' }, message.header);
        });
        return;
      case 'shutdown_request':
        this.startShutdown(channel, message);
        return;
      default:
        if (MAIN_THREAD_REQUESTS.has(msgType)) {
          this.post({ kind: 'request', channel, message, receivedAt: Date.now() });
        } else {
          this.log.limited(`unknown-${channel}`, 'warn', `dropped a ${channel} message of unknown type '${msgType}'`);
        }
    }
  }

  /** Reply wrapped in busy/idle, for requests answered on this thread. */
  private answer(channel: ReplyChannel, request: RoutedMessage, msgType: string, content: JsonObject): void {
    this.publish('status', { execution_state: 'busy' }, request.header);
    this.reply(channel, request, msgType, content);
    this.publish('status', { execution_state: 'idle' }, request.header);
  }

  private reply(channel: ReplyChannel, request: RoutedMessage, msgType: string, content: JsonObject): void {
    this.send(channel, msgType, content, request.header, {}, [], request.identities);
  }

  private send(
    channel: ReplyChannel | 'stdin' | 'iopub',
    msgType: string,
    content: JsonObject,
    parent: Header | JsonObject,
    metadata: JsonObject,
    buffers: Uint8Array[],
    identities: Uint8Array[],
  ): void {
    const message = {
      header: newHeader(msgType, this.data.session, 'fluxlab'),
      parent_header: parent,
      metadata,
      content,
      buffers,
    };
    const routing = channel === 'iopub' ? [Buffer.from(msgType)] : identities;
    this.outboxes[channel].send(encode(message, routing, this.signer));
  }

  private publish(msgType: string, content: JsonObject, parent: Header | JsonObject, metadata: JsonObject = {}, buffers: Uint8Array[] = []): void {
    if (msgType === 'stream') {
      this.queueStream(parent, String(content.name), String(content.text));
      return;
    }
    this.flushStream();
    this.send('iopub', msgType, content, parent, metadata, buffers, []);
  }

  /** Consecutive stream output of one request and stream name goes out as one message per event-loop turn. */
  private queueStream(parent: Header | JsonObject, name: string, text: string): void {
    const pending = this.pendingStream;
    const parentId = (parent as { msg_id?: unknown }).msg_id;
    if (pending !== undefined && pending.name === name && (pending.parent as { msg_id?: unknown }).msg_id === parentId) {
      pending.text += text;
    } else {
      this.flushStream();
      this.pendingStream = { parent, name, text };
    }
    if ((this.pendingStream?.text.length ?? 0) >= STREAM_FLUSH_BYTES) this.flushStream();
    else if (!this.streamFlushScheduled) {
      this.streamFlushScheduled = true;
      setImmediate(() => {
        this.streamFlushScheduled = false;
        this.flushStream();
      });
    }
  }

  private flushStream(): void {
    const pending = this.pendingStream;
    if (pending === undefined) return;
    this.pendingStream = undefined;
    this.send('iopub', 'stream', { name: pending.name, text: pending.text }, pending.parent, {}, [], []);
  }

  private gpuMemory(): Promise<GpuMemoryUsage[]> {
    const id = this.nextGpuRequest++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.gpuWaiters.delete(id);
        resolve(this.lastGpuMemory);
      }, GPU_MEMORY_WAIT_MS);
      this.gpuWaiters.set(id, (devices) => {
        clearTimeout(timer);
        this.lastGpuMemory = devices;
        resolve(devices);
      });
      this.post({ kind: 'gpu_memory_request', id });
    });
  }

  private fromMain(message: ToIo): void {
    if (message.kind === 'shutdown_ready') {
      void this.finishShutdown(false);
      return;
    }
    if (message.kind === 'gpu_memory') {
      const waiter = this.gpuWaiters.get(message.id);
      this.gpuWaiters.delete(message.id);
      if (waiter !== undefined) waiter(message.devices);
      else this.lastGpuMemory = message.devices;
      return;
    }
    const { channel, msgType, content, parent } = message;
    if (channel === 'iopub') this.publish(msgType, content, parent, message.metadata ?? {}, message.buffers ?? []);
    else {
      if (channel === 'stdin') this.flushStream();
      this.send(channel, msgType, content, parent, message.metadata ?? {}, message.buffers ?? [], message.identities ?? []);
    }
  }

  /**
   * Sets the shared flag (compiled cell loops and throwIfInterrupted() see it at once), tells the main thread
   * (awaited promises are rejected when its event loop is free), and if the main thread stays inside one
   * synchronous vm run, sends SIGINT, which vm's breakOnSigint turns into an exception (library loops).
   */
  private interrupt(): void {
    const shared = this.data.shared;
    Atomics.store(shared, SLOT_INTERRUPT, 1);
    this.post({ kind: 'interrupt' });
    const phase = Atomics.load(shared, SLOT_PHASE);
    const run = Atomics.load(shared, SLOT_RUN);
    if (phase !== PHASE_SYNC_RUN) return;
    setTimeout(() => {
      // SIGINT is only safe while vm's SIGINT watchdog is installed, i.e. well inside the same run: outside it
      // Node's default SIGINT action would end the process.
      if (
        Atomics.load(shared, SLOT_PHASE) === PHASE_SYNC_RUN &&
        Atomics.load(shared, SLOT_RUN) === run &&
        Atomics.load(shared, SLOT_INTERRUPT) !== 0
      ) {
        this.log.info('main thread still busy in a synchronous run: sending SIGINT');
        process.kill(process.pid, 'SIGINT');
      }
    }, SIGINT_GRACE_MS);
  }

  private startShutdown(channel: ReplyChannel, request: RoutedMessage): void {
    if (this.shutdown !== undefined) {
      this.reply(channel, request, 'shutdown_reply', { status: 'ok', restart: request.content.restart === true });
      return;
    }
    this.shutdown = { request, channel, finished: false };
    this.publish('status', { execution_state: 'busy' }, request.header);
    this.post({ kind: 'shutdown', restart: request.content.restart === true });
    setTimeout(() => {
      if (this.shutdown?.finished === false) this.interrupt();
    }, SHUTDOWN_INTERRUPT_MS).unref();
    setTimeout(() => {
      if (this.shutdown?.finished === false) void this.finishShutdown(true);
    }, SHUTDOWN_FORCE_MS).unref();
  }

  private async finishShutdown(forced: boolean): Promise<void> {
    const shutdown = this.shutdown;
    if (shutdown === undefined || shutdown.finished) return;
    shutdown.finished = true;
    const content = { status: 'ok', restart: shutdown.request.content.restart === true };
    this.reply(shutdown.channel, shutdown.request, 'shutdown_reply', content);
    this.publish('shutdown_reply', content, shutdown.request.header);
    this.publish('status', { execution_state: 'idle' }, shutdown.request.header);
    await Promise.all(Object.values(this.outboxes).map((outbox) => outbox.drained()));
    for (const socket of [this.shell, this.control, this.stdin, this.iopub, this.hb]) socket.close();
    if (forced) {
      this.log.warn('main thread did not finish shutting down in time: terminating');
      setTimeout(() => process.kill(process.pid, 'SIGKILL'), 200);
    }
    this.post({ kind: 'closed' });
  }

  /** Exit with the frontend that started us (jupyter_client sets JPY_PARENT_PID), as ipykernel does. */
  private watchParent(): void {
    const parent = Number(process.env.JPY_PARENT_PID);
    if (!Number.isInteger(parent) || parent <= 1 || process.platform === 'win32') return;
    const original = process.ppid;
    setInterval(() => {
      if (process.ppid !== original) {
        this.log.warn(`parent process ${parent} is gone: exiting`);
        process.kill(process.pid, 'SIGTERM');
      }
    }, 3000).unref();
  }
}

if (!isMainThread && parentPort !== null && (workerData as Partial<IoThreadData> | undefined)?.connection !== undefined) {
  const port = parentPort;
  const io = new IoThread(workerData as IoThreadData, port);
  io.start().catch((error: unknown) => {
    port.postMessage({ kind: 'fatal', error: error instanceof Error ? error.message : String(error) } satisfies ToMain);
  });
}
