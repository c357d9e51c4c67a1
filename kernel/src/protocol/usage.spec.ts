import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hostVirtualMemory, UsageReporter } from './usage.js';

describe('usage_reply content', () => {
  it("has ipykernel's fields, and gpu_memory only when a device is reported", () => {
    const reporter = new UsageReporter();
    const content = reporter.content([]);
    for (const key of ['hostname', 'pid', 'kernel_cpu', 'kernel_memory', 'cpu_count', 'host_virtual_memory']) assert.ok(key in content, key);
    assert.equal(content.pid, process.pid);
    assert.equal('gpu_memory' in content, false);
    const gpu = [{ device: 0, name: 'H100', total: 80e9, free: 70e9, allocated: 5e9, reserved: 8e9 }];
    assert.deepEqual(reporter.content(gpu).gpu_memory, gpu);
  });

  it('reports host memory in psutil.virtual_memory() terms', () => {
    const memory = hostVirtualMemory();
    assert.ok(memory.total > 0 && memory.available > 0 && memory.available <= memory.total);
    assert.ok(memory.percent >= 0 && memory.percent <= 100);
  });
});
