import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommRegistry, type CommMsgType } from './comm.js';

function registry(): { comms: CommRegistry; sent: [CommMsgType, Record<string, unknown>][]; errors: unknown[] } {
  const comms = new CommRegistry();
  const sent: [CommMsgType, Record<string, unknown>][] = [];
  const errors: unknown[] = [];
  comms.installTransport({ send: (type, content) => sent.push([type, content]), reportError: (error) => errors.push(error) });
  return { comms, sent, errors };
}

describe('CommRegistry', () => {
  it('routes a frontend-opened comm to its target, both ways, until closed', () => {
    const { comms, sent } = registry();
    const received: unknown[] = [];
    let closed = false;
    comms.registerTarget('echo', (comm, open) => {
      comm.send({ hello: open.data });
      comm.onMsg((message) => received.push(message.data));
      comm.onClose(() => {
        closed = true;
      });
    });
    comms.handleOpen({ comm_id: 'c1', target_name: 'echo', data: { x: 1 } }, {}, []);
    comms.handleMsg({ comm_id: 'c1', data: 'ping' }, {}, []);
    assert.deepEqual(comms.info(), { c1: { target_name: 'echo' } });
    assert.deepEqual(comms.info('other'), {});
    comms.handleClose({ comm_id: 'c1', data: {} }, {}, []);
    assert.deepEqual(sent, [['comm_msg', { comm_id: 'c1', data: { hello: { x: 1 } } }]]);
    assert.deepEqual(received, ['ping']);
    assert.equal(closed, true);
    assert.deepEqual(comms.info(), {});
    assert.throws(() => comms.handleMsg({ comm_id: 'c1', data: {} }, {}, []), /no open comm/);
  });

  it('opens comms from the kernel side and closes them once', () => {
    const { comms, sent } = registry();
    const comm = comms.openComm('fluxlab.telemetry', { step: 0 });
    comm.send({ step: 1 });
    comm.close();
    comm.close();
    assert.deepEqual(sent.map(([type]) => type), ['comm_open', 'comm_msg', 'comm_close']);
    assert.equal(sent[0][1].target_name, 'fluxlab.telemetry');
    assert.throws(() => comm.send({}), /closed/);
  });

  it('answers an unknown target with comm_close and reports handler errors instead of throwing', async () => {
    const { comms, sent, errors } = registry();
    assert.throws(() => comms.handleOpen({ comm_id: 'z', target_name: 'nobody' }, {}, []), /no comm target/);
    assert.deepEqual(sent, [['comm_close', { comm_id: 'z', data: {} }]]);
    comms.registerTarget('bad', () => {
      throw new Error('sync failure');
    });
    comms.registerTarget('worse', async () => {
      throw new Error('async failure');
    });
    comms.handleOpen({ comm_id: 'b', target_name: 'bad' }, {}, []);
    comms.handleOpen({ comm_id: 'w', target_name: 'worse' }, {}, []);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(errors.map((e) => (e as Error).message), ['sync failure', 'async failure']);
  });

  it('needs a kernel to open comms', () => {
    assert.throws(() => new CommRegistry().openComm('x'), /need a Jupyter kernel/);
  });
});
