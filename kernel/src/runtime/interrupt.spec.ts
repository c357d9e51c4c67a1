import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  attachInterruptFlag,
  beginInterruptScope,
  interruptRequested,
  interruptSignal,
  KeyboardInterrupt,
  onInterrupt,
  requestInterrupt,
  throwIfInterrupted,
} from './interrupt.js';

describe('interrupt scope', () => {
  it('never interrupts outside a kernel', () => {
    assert.equal(interruptSignal().aborted, false);
    assert.doesNotThrow(() => throwIfInterrupted());
  });

  it('aborts the signal, runs handlers once and throws KeyboardInterrupt', () => {
    beginInterruptScope();
    const reasons: string[] = [];
    const unregister = onInterrupt((reason) => reasons.push(reason.name));
    const removed = onInterrupt(() => reasons.push('removed'));
    removed();
    requestInterrupt();
    requestInterrupt();
    assert.deepEqual(reasons, ['KeyboardInterrupt']);
    assert.ok(interruptSignal().reason instanceof KeyboardInterrupt);
    assert.throws(() => throwIfInterrupted(), KeyboardInterrupt);
    unregister();
  });

  it('sees a flag set by another thread synchronously, without the event loop', () => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    attachInterruptFlag(flag);
    beginInterruptScope();
    let handled = 0;
    onInterrupt(() => handled++);
    assert.equal(interruptRequested(), false);
    Atomics.store(flag, 0, 1);
    assert.equal(interruptRequested(), true);
    assert.equal(handled, 1);
    assert.throws(() => throwIfInterrupted(), { name: 'KeyboardInterrupt' });
  });

  it('gives every execution a fresh scope; late handlers of an interrupted one still run', async () => {
    requestInterrupt();
    let late = false;
    onInterrupt(() => {
      late = true;
    });
    await Promise.resolve();
    assert.equal(late, true);
    beginInterruptScope();
    assert.equal(interruptSignal().aborted, false);
    let stale = false;
    onInterrupt(() => {
      stale = true;
    });
    beginInterruptScope();
    requestInterrupt();
    assert.equal(stale, false, 'a handler of an earlier execution fired');
  });
});
