import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onShutdown, runShutdownHooks } from './shutdown.js';

describe('shutdown hooks', () => {
  it('runs every hook newest first, collecting failures and timeouts', async () => {
    const order: string[] = [];
    onShutdown(() => {
      order.push('first');
    });
    onShutdown(async () => {
      order.push('second');
      throw new Error('second failed');
    });
    onShutdown(() => new Promise(() => order.push('hangs')));
    const removed = onShutdown(() => {
      order.push('removed');
    });
    removed();
    const errors = await runShutdownHooks(50);
    assert.deepEqual(order, ['hangs', 'second', 'first']);
    assert.deepEqual(errors.map((e) => (e as Error).message), ['shutdown hook did not finish within 50 ms', 'second failed']);
    assert.deepEqual(await runShutdownHooks(50), []);
  });
});
