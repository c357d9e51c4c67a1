// Shutdown hooks: library code that holds native resources (device memory, pinned buffers, CUDA graphs)
// registers a hook; the kernel runs them on shutdown_request (restart too) before the process exits, so the
// next kernel starts with the GPU free. Hooks run newest first, like destructors.

type Hook = () => unknown;

const hooks: Hook[] = [];

/** Registers a hook to run when the kernel shuts down; returns a function that unregisters it. */
export function onShutdown(hook: Hook): () => void {
  hooks.push(hook);
  return () => {
    const index = hooks.lastIndexOf(hook);
    if (index >= 0) hooks.splice(index, 1);
  };
}

/**
 * Kernel side: runs every hook (newest first), each bounded by `timeoutMs`, and returns the errors they threw
 * instead of stopping at the first one.
 */
export async function runShutdownHooks(timeoutMs: number): Promise<unknown[]> {
  const errors: unknown[] = [];
  for (const hook of hooks.splice(0).reverse()) {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.resolve().then(hook),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`shutdown hook did not finish within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (error) {
      errors.push(error);
    } finally {
      clearTimeout(timer);
    }
  }
  return errors;
}
