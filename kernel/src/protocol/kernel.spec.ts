// The kernel process over real sockets, driven by this package's own client (no Python needed).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Dealer } from 'zeromq';
import { KernelClient, launchKernel, type LaunchedKernel } from './client.js';
import { endpoint } from './connection.js';
import type { RoutedMessage } from './wire.js';

describe('kernel process', () => {
  let kernel: LaunchedKernel;
  let client: KernelClient;

  before(async () => {
    kernel = await launchKernel();
    client = new KernelClient(kernel.connection);
    await client.waitForReady(60_000);
  });

  after(() => {
    client.close();
    kernel.dispose();
  });

  async function run(code: string): Promise<{ reply: RoutedMessage; outputs: RoutedMessage[] }> {
    const outputs: RoutedMessage[] = [];
    const reply = await client.execute(code, { onOutput: (m) => outputs.push(m) });
    return { reply, outputs };
  }

  it('answers kernel_info with protocol 5.4 and the TypeScript language_info', async () => {
    const info = await client.request('shell', 'kernel_info_request');
    assert.equal(info.content.protocol_version, '5.4');
    assert.equal(info.content.implementation, 'fluxlab');
    const language = info.content.language_info as Record<string, unknown>;
    assert.deepEqual([language.name, language.file_extension, language.mimetype], ['typescript', '.ts', 'text/typescript']);
    assert.match(String(info.content.banner), /TypeScript 5\.9/);
  });

  it('executes cells: execute_input, streams, execute_result, counts', async () => {
    const { reply, outputs } = await run("const greeting = 'hi';\nconsole.log(greeting);\ngreeting.length");
    assert.equal(reply.content.status, 'ok');
    assert.deepEqual(
      outputs.map((m) => m.header.msg_type),
      ['execute_input', 'stream', 'execute_result'],
    );
    assert.equal(outputs[1].content.text, 'hi\n');
    assert.deepEqual(outputs[2].content.data, { 'text/plain': '2' });
    const next = await run('greeting');
    assert.equal(next.reply.content.execution_count, (reply.content.execution_count as number) + 1);
  });

  it('answers the heartbeat while a cell blocks the main thread, and interrupts it', async () => {
    const execution = run('while (true) {}');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const hb = new Dealer({ linger: 0 });
    hb.connect(endpoint(kernel.connection, 'hb'));
    await hb.send([Buffer.alloc(0), Buffer.from('ping')]);
    const [, echo] = await hb.receive();
    hb.close();
    assert.equal(echo.toString(), 'ping');
    const usage = await client.request('control', 'usage_request', {}, 5000);
    assert.equal(usage.content.pid, kernel.process.pid);
    await client.interrupt();
    const { reply } = await execution;
    assert.equal(reply.content.ename, 'KeyboardInterrupt');
    assert.deepEqual((await run('greeting')).outputs[1].content.data, { 'text/plain': "'hi'" });
  });

  it('exits with status 0 on shutdown_request', async () => {
    const exited = new Promise<number | null>((resolve) => kernel.process.once('exit', (code) => resolve(code)));
    const reply = await client.shutdown();
    assert.deepEqual(reply.content, { status: 'ok', restart: false });
    assert.equal(await exited, 0);
  });
});
