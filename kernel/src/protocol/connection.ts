// Connection files (Jupyter client docs, "Connection files"): where the kernel binds its five sockets and the
// key it signs messages with.
import { readFileSync } from 'node:fs';

export type Channel = 'shell' | 'control' | 'stdin' | 'iopub' | 'hb';
export const CHANNELS: readonly Channel[] = ['shell', 'control', 'stdin', 'iopub', 'hb'];

export interface ConnectionInfo {
  transport: 'tcp' | 'ipc';
  ip: string;
  shell_port: number;
  control_port: number;
  stdin_port: number;
  iopub_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
  kernel_name?: string;
}

export function parseConnectionInfo(json: unknown): ConnectionInfo {
  if (typeof json !== 'object' || json === null) throw new Error('connection file is not a JSON object');
  const info = json as Record<string, unknown>;
  const transport = info.transport ?? 'tcp';
  if (transport !== 'tcp' && transport !== 'ipc') throw new Error(`unsupported transport '${String(transport)}'`);
  const ip = info.ip ?? '127.0.0.1';
  if (typeof ip !== 'string' || ip === '') throw new Error('connection file: ip must be a string');
  const ports: Partial<Record<`${Channel}_port`, number>> = {};
  for (const channel of CHANNELS) {
    const port = info[`${channel}_port`];
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new Error(`connection file: ${channel}_port must be a port number`);
    }
    ports[`${channel}_port`] = port;
  }
  const key = info.key ?? '';
  if (typeof key !== 'string') throw new Error('connection file: key must be a string');
  const scheme = info.signature_scheme ?? 'hmac-sha256';
  if (typeof scheme !== 'string') throw new Error('connection file: signature_scheme must be a string');
  return {
    transport,
    ip,
    ...(ports as Record<`${Channel}_port`, number>),
    key,
    signature_scheme: scheme,
    ...(typeof info.kernel_name === 'string' ? { kernel_name: info.kernel_name } : {}),
  };
}

export function readConnectionFile(path: string): ConnectionInfo {
  return parseConnectionInfo(JSON.parse(readFileSync(path, 'utf8')));
}

/** The ZeroMQ endpoint of a channel: tcp://ip:port, or ipc://ip-port as jupyter_client names IPC sockets. */
export function endpoint(info: ConnectionInfo, channel: Channel): string {
  const port = info[`${channel}_port`];
  return info.transport === 'tcp' ? `tcp://${info.ip}:${port}` : `ipc://${info.ip}-${port}`;
}
