// Comms (Jupyter messaging spec, "Custom messages"): a two-way channel between library code in the kernel and
// a frontend extension (widgets, live telemetry). The registry lives here so library code can register
// targets and open comms without knowing the wire protocol; the kernel installs the transport and feeds it
// the comm_open / comm_msg / comm_close messages that arrive from frontends.
import { randomUUID } from 'node:crypto';

export interface CommMessage {
  data: unknown;
  metadata: Record<string, unknown>;
  buffers: Uint8Array[];
}

export interface SendOptions {
  metadata?: Record<string, unknown>;
  buffers?: Uint8Array[];
}

export interface Comm {
  readonly commId: string;
  readonly targetName: string;
  readonly closed: boolean;
  /** Sends comm_msg to the frontend. Throws once the comm is closed. */
  send(data?: unknown, options?: SendOptions): void;
  /** Sends comm_close (once) and runs the close handlers. */
  close(data?: unknown, options?: SendOptions): void;
  /** Handles comm_msg from the frontend; returns an unsubscribe function. */
  onMsg(handler: (message: CommMessage) => unknown): () => void;
  /** Runs when either side closes the comm; returns an unsubscribe function. */
  onClose(handler: (message: CommMessage) => unknown): () => void;
}

/** Called when a frontend opens a comm for this target; `message` is the comm_open payload. */
export type CommTarget = (comm: Comm, message: CommMessage) => unknown;

export type CommMsgType = 'comm_open' | 'comm_msg' | 'comm_close';

export interface CommTransport {
  send(msgType: CommMsgType, content: Record<string, unknown>, metadata: Record<string, unknown>, buffers: Uint8Array[]): void;
  /** Errors thrown (or rejected) by targets and handlers; the kernel shows them on stderr. */
  reportError(error: unknown): void;
}

type Handler = (message: CommMessage) => unknown;

class KernelComm implements Comm {
  closed = false;
  private readonly msgHandlers = new Set<Handler>();
  private readonly closeHandlers = new Set<Handler>();

  constructor(
    private readonly registry: CommRegistry,
    readonly commId: string,
    readonly targetName: string,
  ) {}

  send(data: unknown = {}, options: SendOptions = {}): void {
    if (this.closed) throw new Error(`comm ${this.commId} (${this.targetName}) is closed`);
    this.registry.transmit('comm_msg', { comm_id: this.commId, data }, options);
  }

  close(data: unknown = {}, options: SendOptions = {}): void {
    if (this.closed) return;
    this.registry.transmit('comm_close', { comm_id: this.commId, data }, options);
    this.closedBy({ data, metadata: options.metadata ?? {}, buffers: options.buffers ?? [] });
  }

  onMsg(handler: Handler): () => void {
    this.msgHandlers.add(handler);
    return () => this.msgHandlers.delete(handler);
  }

  onClose(handler: Handler): () => void {
    this.closeHandlers.add(handler);
    return () => this.closeHandlers.delete(handler);
  }

  received(message: CommMessage): void {
    for (const handler of [...this.msgHandlers]) this.registry.guard(() => handler(message));
  }

  closedBy(message: CommMessage): void {
    if (this.closed) return;
    this.closed = true;
    this.registry.forget(this.commId);
    for (const handler of [...this.closeHandlers]) this.registry.guard(() => handler(message));
  }
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

export class CommRegistry {
  private readonly targets = new Map<string, CommTarget>();
  private readonly open = new Map<string, KernelComm>();
  private transport: CommTransport | undefined;

  installTransport(transport: CommTransport | undefined): void {
    this.transport = transport;
  }

  /** Registers the handler for comms a frontend opens with this target name; returns an unregister function. */
  registerTarget(targetName: string, target: CommTarget): () => void {
    this.targets.set(targetName, target);
    return () => {
      if (this.targets.get(targetName) === target) this.targets.delete(targetName);
    };
  }

  /** Opens a comm from the kernel side (comm_open to the frontend). */
  openComm(targetName: string, data: unknown = {}, options: SendOptions = {}): Comm {
    if (this.transport === undefined) throw new Error('comms need a Jupyter kernel: no frontend is connected');
    const comm = new KernelComm(this, randomUUID().replaceAll('-', ''), targetName);
    this.open.set(comm.commId, comm);
    this.transmit('comm_open', { comm_id: comm.commId, target_name: targetName, data }, options);
    return comm;
  }

  /** comm_info_reply's `comms`: open comms, optionally only those of one target. */
  info(targetName?: string): Record<string, { target_name: string }> {
    const comms: Record<string, { target_name: string }> = {};
    for (const comm of this.open.values()) {
      if (targetName === undefined || comm.targetName === targetName) comms[comm.commId] = { target_name: comm.targetName };
    }
    return comms;
  }

  /** A frontend's comm_open. An unknown target is answered with comm_close, as ipykernel does. */
  handleOpen(content: Record<string, unknown>, metadata: Record<string, unknown>, buffers: Uint8Array[]): void {
    const commId = content.comm_id;
    const targetName = content.target_name;
    if (typeof commId !== 'string' || typeof targetName !== 'string') throw new TypeError('comm_open needs string comm_id and target_name');
    const target = this.targets.get(targetName);
    if (target === undefined) {
      this.transmit('comm_close', { comm_id: commId, data: {} }, {});
      throw new Error(`no comm target registered under '${targetName}'`);
    }
    const comm = new KernelComm(this, commId, targetName);
    this.open.set(commId, comm);
    this.guard(() => target(comm, { data: content.data ?? {}, metadata, buffers }));
  }

  handleMsg(content: Record<string, unknown>, metadata: Record<string, unknown>, buffers: Uint8Array[]): void {
    this.find(content).received({ data: content.data ?? {}, metadata, buffers });
  }

  handleClose(content: Record<string, unknown>, metadata: Record<string, unknown>, buffers: Uint8Array[]): void {
    this.find(content).closedBy({ data: content.data ?? {}, metadata, buffers });
  }

  /** Closes every open comm on the kernel side (kernel shutdown). */
  closeAll(): void {
    for (const comm of [...this.open.values()]) comm.close();
  }

  transmit(msgType: CommMsgType, content: Record<string, unknown>, options: SendOptions): void {
    if (this.transport === undefined) throw new Error('comms need a Jupyter kernel: no frontend is connected');
    this.transport.send(msgType, content, asRecord(options.metadata), options.buffers ?? []);
  }

  forget(commId: string): void {
    this.open.delete(commId);
  }

  guard(run: () => unknown): void {
    try {
      const result = run();
      if (result instanceof Promise) result.catch((error: unknown) => this.transport?.reportError(error));
    } catch (error) {
      if (this.transport === undefined) throw error;
      this.transport.reportError(error);
    }
  }

  private find(content: Record<string, unknown>): KernelComm {
    const comm = typeof content.comm_id === 'string' ? this.open.get(content.comm_id) : undefined;
    if (comm === undefined) throw new Error(`no open comm with id ${String(content.comm_id)}`);
    return comm;
  }
}

/** The process-wide registry the kernel serves. */
export const comms = new CommRegistry();

export function registerCommTarget(targetName: string, target: CommTarget): () => void {
  return comms.registerTarget(targetName, target);
}

export function openComm(targetName: string, data?: unknown, options?: SendOptions): Comm {
  return comms.openComm(targetName, data, options);
}
