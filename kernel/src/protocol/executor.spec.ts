import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { display } from '../runtime/display.js';
import { attachInterruptFlag, requestInterrupt } from '../runtime/interrupt.js';
import { CellExecutor, type ExecutionOutcome } from './executor.js';

// The package entry is injected; the runtime's index stands in for it, which keeps these specs independent of
// the Flux library.
const executor = new CellExecutor({ packageEntry: join(__dirname, '..', 'runtime', 'index.js') });

async function value(code: string): Promise<unknown> {
  const outcome = await executor.execute(code, 'In[1]');
  assert.equal(outcome.status, 'ok', JSON.stringify(outcome));
  return (outcome as { value?: unknown }).value;
}

async function failure(code: string, label = 'In[7]'): Promise<Extract<ExecutionOutcome, { status: 'error' }>> {
  const outcome = await executor.execute(code, label);
  assert.equal(outcome.status, 'error');
  return outcome as Extract<ExecutionOutcome, { status: 'error' }>;
}

describe('CellExecutor', () => {
  it('keeps declarations across cells, and closures see the newest binding', async () => {
    await value('let count = 0;\nfunction bump() { return ++count }\nclass Pair { constructor(readonly a: number, readonly b: number) {} }');
    assert.equal(await value('bump(); bump()'), 2);
    assert.equal(await value('new Pair(count, 3).b'), 3);
    await value('const count = 10');
    assert.equal(await value('bump()'), 11);
    assert.deepEqual(executor.names.includes('bump'), true);
  });

  it('keeps notebook names off globalThis', async () => {
    await value('const notebookOnly = 1; function helperOnly() {}');
    assert.equal('notebookOnly' in globalThis, false);
    assert.equal('helperOnly' in globalThis, false);
    assert.equal(executor.scope.notebookOnly, 1);
  });

  it('imports node builtins, persistently, and maps fluxlab to the package entry', async () => {
    assert.equal(await value("import { join } from 'node:path';\nimport os from 'os';\njoin('a', 'b')"), join('a', 'b'));
    assert.equal(await value('typeof os.cpus'), 'function');
    assert.equal(await value("import { display as d } from 'fluxlab';\nd"), display);
  });

  it('returns the last expression as is: a promise stays a promise', async () => {
    const promise = await executor.execute('Promise.resolve(5)', 'In[1]');
    assert.ok(promise.status === 'ok' && promise.hasValue && promise.value instanceof Promise);
    assert.equal(await value('await Promise.resolve(5)'), 5);
    assert.deepEqual(await value('({ a: [1] })'), { a: [1] });
    const outcome = await executor.execute('const nothing = 1', 'In[2]');
    assert.deepEqual(outcome, { status: 'ok', hasValue: false });
  });

  it('reports errors with frames mapped into the cell and kernel frames removed', async () => {
    const error = await failure('const a = 1;\nfunction inner() {\n  throw new RangeError(`bad ${a}`)\n}\ninner()');
    assert.equal(error.ename, 'RangeError');
    assert.equal(error.evalue, 'bad 1');
    assert.deepEqual(error.traceback, ['RangeError: bad 1', '    at inner (In[7]:3:9)', '    at In[7]:5:1']);
    const afterAwait = await failure('await null;\n\nundefinedThing.x', 'In[8]');
    assert.equal(afterAwait.ename, 'ReferenceError');
    assert.match(afterAwait.traceback.join('\n'), /In\[8\]:3:1/);
    const thrown = await failure("throw 'plain'");
    assert.deepEqual([thrown.ename, thrown.evalue], ['Uncaught', "'plain'"]);
    const caused = await failure("throw new Error('outer', { cause: new Error('inner') })");
    assert.ok(caused.traceback.includes('Caused by:'));
  });

  it('reports syntax errors without running anything', async () => {
    const error = await failure('globalThis.ranSyntax = true;\nconst = 5', 'In[9]');
    assert.equal(error.ename, 'SyntaxError');
    assert.equal(error.compileError, true);
    assert.equal(error.traceback[1], '    at In[9]:2:7');
    assert.equal((globalThis as Record<string, unknown>).ranSyntax, undefined);
  });

  it('re-runs a remembered compilation only while the names it uses mean the same', async () => {
    (globalThis as Record<string, unknown>).shadowed = () => 'global';
    assert.equal(await value('shadowed()'), 'global');
    await value("function shadowed() { return 'notebook' }");
    assert.equal(await value('shadowed()'), 'notebook');
    delete (globalThis as Record<string, unknown>).shadowed;
  });

  it('evaluates user expressions without persisting anything', async () => {
    await value('const base = 20');
    const outcome = await executor.evaluate('base + 1');
    assert.deepEqual(outcome, { status: 'ok', hasValue: true, value: 21 });
    assert.equal((await executor.evaluate('const sneaky = 1')).status, 'error');
  });

  describe('interrupts', () => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    attachInterruptFlag(flag);

    function setFlagFromAnotherThread(afterMs: number): Worker {
      // The main thread is blocked in the cell, so only another thread can set the flag (as the I/O thread does).
      return new Worker(
        `const { workerData } = require('node:worker_threads');
         setTimeout(() => Atomics.store(workerData, 0, 1), ${afterMs});`,
        { eval: true, workerData: flag },
      );
    }

    it('stops a synchronous busy loop compiled from the cell, and the state survives', async () => {
      await value("let survivor = 'here'");
      const worker = setFlagFromAnotherThread(100);
      const started = Date.now();
      const error = await failure('while (true) {}', 'In[10]');
      await worker.terminate();
      assert.equal(error.ename, 'KeyboardInterrupt');
      assert.deepEqual(error.traceback, ['KeyboardInterrupt: Interrupted', '    at In[10]:1:1']);
      assert.ok(Date.now() - started < 2000);
      assert.equal(await value('survivor'), 'here');
    });

    it('stops a busy loop that runs after an await', async () => {
      const worker = setFlagFromAnotherThread(100);
      const error = await failure('await null;\nfor (;;) {}');
      await worker.terminate();
      assert.equal(error.ename, 'KeyboardInterrupt');
    });

    it('ends an awaited promise and runs library interrupt handlers', async () => {
      setTimeout(() => requestInterrupt(), 50);
      const error = await failure("import { onInterrupt } from 'fluxlab';\nlet seen = '';\nonInterrupt((reason) => { seen = reason.name });\nawait new Promise(() => {})");
      assert.equal(error.ename, 'KeyboardInterrupt');
      assert.equal(await value('seen'), 'KeyboardInterrupt');
      // A new execution starts a fresh scope: nothing is interrupted any more.
      assert.equal(await value("import { interruptSignal } from 'fluxlab';\ninterruptSignal().aborted"), false);
    });
  });
});
