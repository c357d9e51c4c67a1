import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpoint, parseConnectionInfo } from './connection.js';

const file = { transport: 'tcp', ip: '127.0.0.1', shell_port: 1, iopub_port: 2, stdin_port: 3, control_port: 4, hb_port: 5, key: 'k', signature_scheme: 'hmac-sha256' };

describe('connection files', () => {
  it('parses the fields and builds endpoints', () => {
    const info = parseConnectionInfo(file);
    assert.equal(endpoint(info, 'shell'), 'tcp://127.0.0.1:1');
    assert.equal(endpoint(info, 'hb'), 'tcp://127.0.0.1:5');
    assert.equal(endpoint({ ...info, transport: 'ipc', ip: '/tmp/kernel' }, 'iopub'), 'ipc:///tmp/kernel-2');
  });

  it('rejects bad ports, transports and keys', () => {
    assert.throws(() => parseConnectionInfo({ ...file, shell_port: 'x' }), /shell_port/);
    assert.throws(() => parseConnectionInfo({ ...file, hb_port: 70000 }), /hb_port/);
    assert.throws(() => parseConnectionInfo({ ...file, transport: 'udp' }), /transport/);
    assert.throws(() => parseConnectionInfo({ ...file, key: 5 }), /key/);
    assert.throws(() => parseConnectionInfo(null), /JSON object/);
  });
});
