// Jupyter wire format (messaging spec 5.4, "The Wire Protocol"):
//   [routing identities…, '<IDS|MSG>', HMAC hex, header, parent_header, metadata, content, buffers…]
// The HMAC covers the four JSON frames and is keyed with the connection file's key; an empty key disables
// signing (the spec's "no authentication"). Anything that does not decode to a well-formed, correctly signed
// message is rejected with a reason, never thrown, so hostile input cannot take the kernel down.
import { createHmac, randomUUID, timingSafeEqual, type Hmac } from 'node:crypto';

export const PROTOCOL_VERSION = '5.4';
export const DELIMITER = '<IDS|MSG>';
const DELIMITER_BYTES = Buffer.from(DELIMITER);

export type JsonObject = Record<string, unknown>;

export interface Header {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
  [extra: string]: unknown;
}

export interface Message {
  header: Header;
  /** The header of the request this message answers, or {} for unsolicited messages. */
  parent_header: Header | JsonObject;
  metadata: JsonObject;
  content: JsonObject;
  buffers: Uint8Array[];
}

/** A message together with the ZeroMQ routing identities it came from (ROUTER sockets). */
export interface RoutedMessage extends Message {
  identities: Uint8Array[];
}

export type DecodeResult = { ok: true; message: RoutedMessage } | { ok: false; reason: string };

export class Signer {
  private readonly key: Buffer;
  private readonly algorithm: string;

  constructor(key: string, signatureScheme: string) {
    this.key = Buffer.from(key, 'utf8');
    const match = /^hmac-([a-z0-9-]+)$/.exec(signatureScheme);
    if (match === null) throw new Error(`unsupported signature_scheme '${signatureScheme}' (expected hmac-<digest>)`);
    this.algorithm = match[1];
    // Fail at startup, not on the first message, when the digest is unknown to OpenSSL.
    createHmac(this.algorithm, 'probe');
  }

  get enabled(): boolean {
    return this.key.length > 0;
  }

  sign(frames: readonly Uint8Array[]): string {
    if (!this.enabled) return '';
    const hmac: Hmac = createHmac(this.algorithm, this.key);
    for (const frame of frames) hmac.update(frame);
    return hmac.digest('hex');
  }

  /** Constant-time comparison of the received hex signature with the expected one. */
  verify(frames: readonly Uint8Array[], signature: Uint8Array): boolean {
    if (!this.enabled) return true;
    const expected = Buffer.from(this.sign(frames), 'ascii');
    return signature.length === expected.length && timingSafeEqual(signature, expected);
  }
}

export function newHeader(msgType: string, session: string, username: string): Header {
  return {
    msg_id: randomUUID(),
    session,
    username,
    date: new Date().toISOString(),
    msg_type: msgType,
    version: PROTOCOL_VERSION,
  };
}

export function encode(message: Message, identities: readonly Uint8Array[], signer: Signer): Buffer[] {
  const parts = [
    Buffer.from(JSON.stringify(message.header)),
    Buffer.from(JSON.stringify(message.parent_header)),
    Buffer.from(JSON.stringify(message.metadata)),
    Buffer.from(JSON.stringify(message.content)),
  ];
  return [
    ...identities.map((identity) => Buffer.from(identity)),
    DELIMITER_BYTES,
    Buffer.from(signer.sign(parts)),
    ...parts,
    ...message.buffers.map((buffer) => Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength)),
  ];
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJsonObject(frame: Uint8Array, what: string): JsonObject | string {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('utf8'));
  } catch {
    return `${what} is not valid JSON`;
  }
  return isObject(value) ? value : `${what} is not a JSON object`;
}

export function decode(frames: readonly Uint8Array[], signer: Signer): DecodeResult {
  const delimiter = frames.findIndex((frame) => DELIMITER_BYTES.equals(frame));
  if (delimiter < 0) return { ok: false, reason: 'no <IDS|MSG> delimiter' };
  if (frames.length < delimiter + 6) return { ok: false, reason: `only ${frames.length - delimiter - 1} frames after the delimiter (need 5)` };
  const signature = frames[delimiter + 1];
  const parts = frames.slice(delimiter + 2, delimiter + 6);
  if (!signer.verify(parts, signature)) return { ok: false, reason: 'bad signature' };

  const [header, parentHeader, metadata, content] = parts.map((frame, i) =>
    parseJsonObject(frame, ['header', 'parent_header', 'metadata', 'content'][i]),
  );
  for (const part of [header, parentHeader, metadata, content]) if (typeof part === 'string') return { ok: false, reason: part };
  const h = header as JsonObject;
  if (typeof h.msg_type !== 'string' || h.msg_type === '') return { ok: false, reason: 'header.msg_type is not a non-empty string' };
  if (typeof h.msg_id !== 'string') return { ok: false, reason: 'header.msg_id is not a string' };
  if (typeof h.session !== 'string') return { ok: false, reason: 'header.session is not a string' };

  return {
    ok: true,
    message: {
      identities: frames.slice(0, delimiter),
      header: { username: '', date: '', version: PROTOCOL_VERSION, ...h } as Header,
      parent_header: parentHeader as JsonObject,
      metadata: metadata as JsonObject,
      content: content as JsonObject,
      buffers: frames.slice(delimiter + 6),
    },
  };
}
