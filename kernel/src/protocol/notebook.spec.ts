import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cellSource, OutputCollector, type NotebookCell } from './notebook.js';
import { newHeader, type RoutedMessage } from './wire.js';

function message(msgType: string, content: Record<string, unknown>): RoutedMessage {
  return { identities: [], header: newHeader(msgType, 's', 'u'), parent_header: {}, metadata: {}, content, buffers: [] };
}

function cell(): NotebookCell {
  return { cell_type: 'code', source: ['a\n', 'b'], metadata: {} };
}

describe('OutputCollector', () => {
  it('merges consecutive stream text per stream name', () => {
    const collector = new OutputCollector();
    const c = cell();
    collector.begin(c);
    for (const [name, text] of [['stdout', 'a'], ['stdout', 'b'], ['stderr', 'x'], ['stdout', 'c']]) collector.add(message('stream', { name, text }));
    assert.deepEqual(c.outputs, [
      { output_type: 'stream', name: 'stdout', text: 'ab' },
      { output_type: 'stream', name: 'stderr', text: 'x' },
      { output_type: 'stream', name: 'stdout', text: 'c' },
    ]);
    assert.equal(cellSource(c), 'a\nb');
  });

  it('clears at once, or at the next output with wait', () => {
    const collector = new OutputCollector();
    const c = cell();
    collector.begin(c);
    collector.add(message('stream', { name: 'stdout', text: 'old' }));
    collector.add(message('clear_output', { wait: true }));
    assert.equal(c.outputs?.length, 1);
    collector.add(message('execute_result', { execution_count: 3, data: { 'text/plain': '1' }, metadata: {} }));
    assert.deepEqual(c.outputs, [{ output_type: 'execute_result', data: { 'text/plain': '1' }, metadata: {}, execution_count: 3 }]);
    collector.add(message('clear_output', { wait: false }));
    assert.deepEqual(c.outputs, []);
  });

  it('updates every output with a display id, in earlier cells too', () => {
    const collector = new OutputCollector();
    const first = cell();
    const second = cell();
    collector.begin(first);
    collector.add(message('display_data', { data: { 'text/plain': 'v1' }, metadata: {}, transient: { display_id: 'd' } }));
    collector.begin(second);
    collector.add(message('display_data', { data: { 'text/plain': 'v1' }, metadata: {}, transient: { display_id: 'd' } }));
    collector.add(message('update_display_data', { data: { 'text/plain': 'v2' }, metadata: { m: 1 }, transient: { display_id: 'd' } }));
    for (const c of [first, second]) assert.deepEqual(c.outputs, [{ output_type: 'display_data', data: { 'text/plain': 'v2' }, metadata: { m: 1 } }]);
  });

  it('records errors', () => {
    const collector = new OutputCollector();
    const c = cell();
    collector.begin(c);
    collector.add(message('error', { ename: 'E', evalue: 'v', traceback: ['E: v'] }));
    assert.deepEqual(c.outputs, [{ output_type: 'error', ename: 'E', evalue: 'v', traceback: ['E: v'] }]);
  });
});
