// A Jupyter client over ZeroMQ (what jupyter_client does, minus Python): launches a kernel process on a fresh
// connection file and talks to it. Used by `fluxlab run`, the kernel benchmark and the protocol specs.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer, Subscriber } from 'zeromq';
import { endpoint, type ConnectionInfo } from './connection.js';
import { decode, encode, newHeader, Signer, type JsonObject, type Message, type RoutedMessage } from './wire.js';

const BIN = join(__dirname, '..', '..', 'bin', 'fluxlab.js');

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface LaunchOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Command that runs the kernel; `{connection_file}` is replaced. Default: this package's `fluxlab kernel`. */
  argv?: string[];
  /** Where the kernel's stderr goes (default: inherited). */
  stderr?: 'inherit' | 'pipe' | 'ignore';
}

export interface LaunchedKernel {
  connection: ConnectionInfo;
  connectionFile: string;
  process: ChildProcess;
  /** Kills the process if still running and removes the connection file. */
  dispose(): void;
}

export async function launchKernel(options: LaunchOptions = {}): Promise<LaunchedKernel> {
  const ip = '127.0.0.1';
  const ports: number[] = [];
  while (ports.length < 5) {
    const port = await freePort(ip);
    if (!ports.includes(port)) ports.push(port);
  }
  const connection: ConnectionInfo = {
    transport: 'tcp',
    ip,
    shell_port: ports[0],
    iopub_port: ports[1],
    stdin_port: ports[2],
    control_port: ports[3],
    hb_port: ports[4],
    key: randomUUID(),
    signature_scheme: 'hmac-sha256',
    kernel_name: 'fluxlab',
  };
  const dir = mkdtempSync(join(tmpdir(), 'fluxlab-kernel-'));
  const connectionFile = join(dir, 'connection.json');
  writeFileSync(connectionFile, JSON.stringify(connection), { mode: 0o600 });
  const argv = (options.argv ?? [process.execPath, BIN, 'kernel', '-f', '{connection_file}']).map((arg) =>
    arg.replaceAll('{connection_file}', connectionFile),
  );
  const child = spawn(argv[0], argv.slice(1), {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'ignore', options.stderr ?? 'inherit'],
  });
  return {
    connection,
    connectionFile,
    process: child,
    dispose() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Listener = (message: RoutedMessage) => void;

export class KernelClient {
  readonly session = randomUUID();
  private readonly signer: Signer;
  // A kernel binds its sockets a moment after it starts: retry connecting every 10 ms, not ZeroMQ's 100 ms.
  private readonly shell = new Dealer({ linger: 0, reconnectInterval: 10 });
  private readonly control = new Dealer({ linger: 0, reconnectInterval: 10 });
  private readonly stdin = new Dealer({ linger: 0, reconnectInterval: 10 });
  private readonly iopub = new Subscriber({ linger: 0, reconnectInterval: 10 });
  private readonly replies = new Map<string, (message: RoutedMessage) => void>();
  private readonly iopubListeners = new Map<string, Listener>();
  private sendTails = new Map<Dealer, Promise<void>>();
  private closed = false;

  constructor(private readonly connection: ConnectionInfo) {
    this.signer = new Signer(connection.key, connection.signature_scheme);
    // stdin requests are routed to the identity the shell request came from (as jupyter_client does).
    this.shell.routingId = this.session;
    this.stdin.routingId = this.session;
    this.shell.connect(endpoint(connection, 'shell'));
    this.control.connect(endpoint(connection, 'control'));
    this.stdin.connect(endpoint(connection, 'stdin'));
    this.iopub.connect(endpoint(connection, 'iopub'));
    this.iopub.subscribe();
    void this.receive(this.shell, (m) => this.replies.get(String((m.parent_header as JsonObject).msg_id))?.(m));
    void this.receive(this.control, (m) => this.replies.get(String((m.parent_header as JsonObject).msg_id))?.(m));
    void this.receive(this.iopub, (m) => this.iopubListeners.get(String((m.parent_header as JsonObject).msg_id))?.(m));
  }

  private async receive(socket: Dealer | Subscriber, handle: Listener): Promise<void> {
    try {
      for await (const frames of socket) {
        const decoded = decode(frames, this.signer);
        if (decoded.ok) handle(decoded.message);
      }
    } catch (error) {
      if (!this.closed) throw error;
    }
  }

  /** Sends a request; `onIopub` sees the iopub messages it causes. Resolves with the message id. */
  send(channel: 'shell' | 'control', msgType: string, content: JsonObject, onIopub?: Listener): string {
    const socket = channel === 'shell' ? this.shell : this.control;
    const message: Message = { header: newHeader(msgType, this.session, 'fluxlab-client'), parent_header: {}, metadata: {}, content, buffers: [] };
    if (onIopub !== undefined) this.iopubListeners.set(message.header.msg_id, onIopub);
    const frames = encode(message, [], this.signer);
    const tail = (this.sendTails.get(socket) ?? Promise.resolve()).then(() => socket.send(frames));
    this.sendTails.set(socket, tail);
    return message.header.msg_id;
  }

  /** A request and its reply (rejects after `timeoutMs`). */
  request(channel: 'shell' | 'control', msgType: string, content: JsonObject = {}, timeoutMs = 30_000, onIopub?: Listener): Promise<RoutedMessage> {
    const id = this.send(channel, msgType, content, onIopub);
    return this.replyTo(id, timeoutMs, msgType);
  }

  private replyTo(id: string, timeoutMs: number, what: string): Promise<RoutedMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replies.delete(id);
        reject(new Error(`no reply to ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.replies.set(id, (reply) => {
        clearTimeout(timer);
        this.replies.delete(id);
        resolve(reply);
      });
    });
  }

  /**
   * Waits until the kernel answers kernel_info_request and its iopub messages arrive (a SUB socket misses what
   * is published before its subscription reaches the kernel), retrying as jupyter_client does.
   */
  async waitForReady(timeoutMs = 60_000): Promise<RoutedMessage> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let sawIopub = false;
      const id = this.send('shell', 'kernel_info_request', {}, () => {
        sawIopub = true;
      });
      try {
        const reply = await this.replyTo(id, Math.min(1000, Math.max(1, deadline - Date.now())), 'kernel_info_request');
        for (let i = 0; i < 10 && !sawIopub; i++) await new Promise((r) => setTimeout(r, 5));
        this.iopubListeners.delete(id);
        if (sawIopub) return reply;
      } catch {
        this.iopubListeners.delete(id);
      }
    }
    throw new Error(`kernel not ready within ${timeoutMs} ms`);
  }

  /**
   * Runs code; `onOutput` sees every iopub message of the request except status. Resolves when both the
   * reply and the final idle status arrived.
   */
  async execute(
    code: string,
    options: { onOutput?: Listener; timeoutMs?: number; silent?: boolean; storeHistory?: boolean; stopOnError?: boolean } = {},
  ): Promise<RoutedMessage> {
    let idle: () => void = () => undefined;
    const idleSeen = new Promise<void>((resolve) => (idle = resolve));
    const id = this.send(
      'shell',
      'execute_request',
      {
        code,
        silent: options.silent ?? false,
        store_history: options.storeHistory ?? true,
        user_expressions: {},
        allow_stdin: false,
        stop_on_error: options.stopOnError ?? true,
      },
      (message) => {
        if (message.header.msg_type === 'status') {
          if (message.content.execution_state === 'idle') idle();
        } else options.onOutput?.(message);
      },
    );
    try {
      const reply = await this.replyTo(id, options.timeoutMs ?? 2 ** 31 - 1, 'execute_request');
      await idleSeen;
      return reply;
    } finally {
      this.iopubListeners.delete(id);
    }
  }

  interrupt(): Promise<RoutedMessage> {
    return this.request('control', 'interrupt_request', {}, 10_000);
  }

  shutdown(restart = false): Promise<RoutedMessage> {
    return this.request('control', 'shutdown_request', { restart }, 10_000);
  }

  close(): void {
    this.closed = true;
    for (const socket of [this.shell, this.control, this.stdin, this.iopub]) socket.close();
  }
}
