// Interrupt contract between the kernel (which receives interrupt_request / SIGINT) and library code (which
// must stop a long job, e.g. a generation at its next step boundary, and free what it allocated).
//
// Two ways to observe an interrupt, because a JavaScript thread that never yields cannot run event handlers:
// - asynchronous code: `interruptSignal()` (an AbortSignal) or `onInterrupt(handler)`;
// - synchronous loops: `throwIfInterrupted()` / `interruptRequested()`, which read a flag in shared memory
//   that the kernel's I/O thread sets the moment the request arrives, even while this thread is busy.
// Both are scoped to the current execution: the kernel starts a fresh scope for every executed cell, so a
// handler registered during one cell never fires for a later one.
//
// Outside a kernel (a plain Node program using the library) nothing ever interrupts: the signal never aborts.

/** The error an interrupted execution ends with (named like Python's, which Jupyter users know). */
export class KeyboardInterrupt extends Error {
  constructor(message = 'Interrupted') {
    super(message);
    this.name = 'KeyboardInterrupt';
  }
}

let controller = new AbortController();
let sharedFlag: Int32Array | undefined;

function syncWithSharedFlag(): void {
  if (sharedFlag !== undefined && Atomics.load(sharedFlag, 0) !== 0 && !controller.signal.aborted) {
    controller.abort(new KeyboardInterrupt());
  }
}

/** The AbortSignal of the current execution; aborted (reason: KeyboardInterrupt) when the user interrupts. */
export function interruptSignal(): AbortSignal {
  syncWithSharedFlag();
  return controller.signal;
}

/** Whether the current execution has been interrupted; cheap enough to call at every step of a loop. */
export function interruptRequested(): boolean {
  syncWithSharedFlag();
  return controller.signal.aborted;
}

/** Throws the KeyboardInterrupt of the current execution if the user interrupted it. */
export function throwIfInterrupted(): void {
  syncWithSharedFlag();
  if (controller.signal.aborted) throw controller.signal.reason;
}

/**
 * Calls `handler` once when the current execution is interrupted (immediately, in a microtask, if it already
 * was). Returns a function that unregisters it; call it when the guarded work finishes.
 */
export function onInterrupt(handler: (reason: KeyboardInterrupt) => void): () => void {
  const signal = interruptSignal();
  if (signal.aborted) {
    let cancelled = false;
    queueMicrotask(() => {
      if (!cancelled) handler(signal.reason as KeyboardInterrupt);
    });
    return () => {
      cancelled = true;
    };
  }
  const listener = (): void => handler(signal.reason as KeyboardInterrupt);
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

// ---- Host side: used by the kernel only (not re-exported from the package entry). ----

/**
 * Connects the interrupt scope to a flag in shared memory (index 0 of `flag`) that another thread sets to a
 * non-zero value to request an interrupt.
 */
export function attachInterruptFlag(flag: Int32Array): void {
  sharedFlag = flag;
}

/** Starts the interrupt scope of a new execution: clears the shared flag and gives it a fresh signal. */
export function beginInterruptScope(): void {
  if (sharedFlag !== undefined) Atomics.store(sharedFlag, 0, 0);
  controller = new AbortController();
}

/** Interrupts the current execution: sets the shared flag and aborts its signal (runs the handlers). */
export function requestInterrupt(): void {
  if (sharedFlag !== undefined) Atomics.store(sharedFlag, 0, 1);
  if (!controller.signal.aborted) controller.abort(new KeyboardInterrupt());
}

/** Whether the shared flag is set; for the kernel's compiled loop checks (no allocation, no event). */
export function interruptFlagSet(): boolean {
  return sharedFlag !== undefined && sharedFlag[0] !== 0;
}
