// Deterministic tensor lifetimes: tidy() scopes for synchronous code, Scope objects for code that awaits.
// GPU memory must not wait for the JS garbage collector, which neither sees device memory nor runs on time.

/** Anything a scope can own. */
export interface Owned {
  dispose(): void;
  readonly isDisposed: boolean;
}

/** The collection a tensor is currently owned by (a tidy frame or a Scope), if any. */
export interface Owner {
  readonly members: Set<Owned>;
}

const ownerOf = new WeakMap<Owned, Owner>();
const tidyStack: Owner[] = [];

function setOwner(t: Owned, owner: Owner | undefined): void {
  const previous = ownerOf.get(t);
  if (previous === owner) return;
  previous?.members.delete(t);
  if (owner) {
    owner.members.add(t);
    ownerOf.set(t, owner);
  } else {
    ownerOf.delete(t);
  }
}

/** Called by every tensor constructor: the innermost tidy() frame owns it. */
export function adopt(t: Owned): void {
  const top = tidyStack[tidyStack.length - 1];
  if (top) setOwner(t, top);
}

/** Called by dispose(): the tensor leaves whichever scope held it. */
export function release(t: Owned): void {
  setOwner(t, undefined);
}

/** Takes `t` out of every scope: it lives until disposed explicitly. */
export function keep<T extends Owned>(t: T): T {
  setOwner(t, undefined);
  return t;
}

function isOwned(value: unknown): value is Owned {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Owned).dispose === 'function' &&
    typeof (value as Owned).isDisposed === 'boolean'
  );
}

/** Tensors reachable from a tidy() result: the value itself, arrays, plain objects and Map values, recursively. */
function collectReturned(value: unknown, out: Set<Owned>, seen: Set<unknown>): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (isOwned(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) collectReturned(item, out, seen);
  } else if (value instanceof Map) {
    for (const item of value.values()) collectReturned(item, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null) {
    for (const item of Object.values(value as Record<string, unknown>)) collectReturned(item, out, seen);
  }
}

/**
 * Runs `fn` and disposes every tensor created inside it, except those it returns (found in the returned value,
 * arrays, plain objects and Maps) and those marked with `keep()`. Returned tensors pass to the enclosing tidy(),
 * if any. `fn` must be synchronous: for code that awaits, use a {@link Scope}.
 */
export function tidy<T>(fn: () => T): T {
  const frame: Owner = { members: new Set() };
  tidyStack.push(frame);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    tidyStack.pop();
    disposeAll(frame);
    throw err;
  }
  tidyStack.pop();
  if (result instanceof Promise) {
    disposeAll(frame);
    throw new Error('tidy(fn): fn returned a Promise; tidy() scopes are synchronous, use a Scope across awaits');
  }
  const returned = new Set<Owned>();
  collectReturned(result, returned, new Set());
  const parent = tidyStack[tidyStack.length - 1];
  for (const t of returned) {
    if (ownerOf.get(t) === frame) setOwner(t, parent);
  }
  disposeAll(frame);
  return result;
}

function disposeAll(owner: Owner): void {
  const members = [...owner.members];
  owner.members.clear();
  for (const t of members) {
    ownerOf.delete(t);
    if (!t.isDisposed) t.dispose();
  }
}

/**
 * An explicit owner for tensors in asynchronous code (model loading, a generation spanning awaits):
 * `const scope = new Scope(); try { const a = scope.track(ops.add(x, y)); await …; } finally { scope.dispose(); }`.
 * Tracking a tensor takes it away from the tidy() frame that created it.
 */
export class Scope implements Owner {
  readonly members = new Set<Owned>();
  #disposed = false;

  /** Makes this scope the owner of `t` and returns it. */
  track<T extends Owned>(t: T): T {
    if (this.#disposed) throw new Error('Scope.track: the scope was already disposed');
    setOwner(t, this);
    return t;
  }

  /** Stops owning `t` (it then lives until disposed explicitly) and returns it. */
  untrack<T extends Owned>(t: T): T {
    if (ownerOf.get(t) === this) setOwner(t, undefined);
    return t;
  }

  /** Number of live tensors owned. */
  get size(): number {
    return this.members.size;
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** Disposes every tensor still owned. Further track() calls throw. */
  dispose(): void {
    this.#disposed = true;
    disposeAll(this);
  }
}
