import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nativeGpuMemory } from './gpu-memory.js';

describe('GPU memory for usage_reply', () => {
  it('reports nothing, and loads nothing, until something has loaded the native addon', () => {
    const path = require.resolve('@fluxlab/native');
    assert.equal(require.cache[path], undefined);
    assert.deepEqual(nativeGpuMemory(), []);
    assert.equal(require.cache[path], undefined, 'the provider loaded the addon itself');
  });

  it("then reports the current device's memory when CUDA is available, else nothing", () => {
    const native = require('@fluxlab/native') as { cuda: { isAvailable(): boolean } };
    const devices = nativeGpuMemory();
    if (!native.cuda.isAvailable()) {
      assert.deepEqual(devices, []);
      return;
    }
    assert.equal(devices.length, 1);
    const [device] = devices;
    assert.ok(device.total > 0 && device.free <= device.total && (device.reserved ?? 0) >= (device.allocated ?? 0));
    assert.equal(typeof device.name, 'string');
  });
});
