import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decode, DELIMITER, encode, newHeader, Signer, type Message } from './wire.js';

const signer = new Signer('secret-key', 'hmac-sha256');

function message(msgType = 'execute_request'): Message {
  return { header: newHeader(msgType, 'session-1', 'tester'), parent_header: {}, metadata: { m: 1 }, content: { code: '1 + 1' }, buffers: [new Uint8Array([1, 2, 3])] };
}

describe('wire', () => {
  it('round-trips a signed message with identities and buffers', () => {
    const original = message();
    const frames = encode(original, [Buffer.from('peer')], signer);
    assert.equal(frames[1].toString(), DELIMITER);
    assert.equal(frames[2].toString().length, 64);
    const decoded = decode(frames, signer);
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.message.header, original.header);
    assert.deepEqual(decoded.message.content, original.content);
    assert.deepEqual(decoded.message.metadata, original.metadata);
    assert.deepEqual([...decoded.message.identities[0]], [...Buffer.from('peer')]);
    assert.deepEqual([...decoded.message.buffers[0]], [1, 2, 3]);
    assert.equal(decoded.message.header.version, '5.4');
  });

  it('rejects a wrong key, a tampered frame and a missing signature', () => {
    const frames = encode(message(), [], signer);
    assert.deepEqual(decode(frames, new Signer('other-key', 'hmac-sha256')), { ok: false, reason: 'bad signature' });
    const tampered = frames.map((f) => Buffer.from(f));
    tampered[5] = Buffer.from('{"code":"evil()"}');
    assert.deepEqual(decode(tampered, signer), { ok: false, reason: 'bad signature' });
    const unsigned = frames.map((f) => Buffer.from(f));
    unsigned[1] = Buffer.alloc(0);
    assert.deepEqual(decode(unsigned, signer), { ok: false, reason: 'bad signature' });
  });

  it('rejects malformed framing and JSON with a reason instead of throwing', () => {
    const good = encode(message(), [], signer);
    assert.equal((decode([Buffer.from('x')], signer) as { reason: string }).reason, 'no <IDS|MSG> delimiter');
    assert.match((decode(good.slice(0, 4), signer) as { reason: string }).reason, /frames after the delimiter/);
    const parts = ['{"msg_type":', '{}', '{}', '{}'].map((s) => Buffer.from(s));
    assert.deepEqual(decode([Buffer.from(DELIMITER), Buffer.from(signer.sign(parts)), ...parts], signer), { ok: false, reason: 'header is not valid JSON' });
    const array = ['[1]', '{}', '{}', '{}'].map((s) => Buffer.from(s));
    assert.deepEqual(decode([Buffer.from(DELIMITER), Buffer.from(signer.sign(array)), ...array], signer), { ok: false, reason: 'header is not a JSON object' });
    const noType = ['{"msg_id":"a","session":"s"}', '{}', '{}', '{}'].map((s) => Buffer.from(s));
    assert.deepEqual(decode([Buffer.from(DELIMITER), Buffer.from(signer.sign(noType)), ...noType], signer), {
      ok: false,
      reason: 'header.msg_type is not a non-empty string',
    });
  });

  it('signs nothing and accepts anything with an empty key (the spec: authentication disabled)', () => {
    const open = new Signer('', 'hmac-sha256');
    const frames = encode(message(), [], open);
    assert.equal(frames[1].length, 0);
    assert.ok(decode(frames, open).ok);
  });

  it('supports other HMAC digests and refuses unknown schemes', () => {
    const sha512 = new Signer('k', 'hmac-sha512');
    assert.ok(decode(encode(message(), [], sha512), sha512).ok);
    assert.throws(() => new Signer('k', 'rsa'), /unsupported signature_scheme/);
    assert.throws(() => new Signer('k', 'hmac-nope'));
  });
});
