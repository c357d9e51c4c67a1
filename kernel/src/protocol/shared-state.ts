// Memory shared by the main thread (which runs cells) and the I/O thread (which owns the sockets), read and
// written with Atomics so the I/O thread sees the main thread's phase even while it is busy in user code.
export const SLOT_INTERRUPT = 0; // non-zero: interrupt requested for the current execution (runtime/interrupt)
export const SLOT_PHASE = 1; // PHASE_* below
export const SLOT_RUN = 2; // increments on every synchronous run, so a stale phase reading is detectable

export const PHASE_IDLE = 0;
/** The main thread is inside vm.runInThisContext({ breakOnSigint: true }): SIGINT stops it safely. */
export const PHASE_SYNC_RUN = 1;

export function createSharedState(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT));
}
