// For the *.gpu.spec files: whether CUDA is usable, and the skip option of their suites. Without a usable device
// they skip with the reason printed, except under FLUXLAB_REQUIRE_GPU=1 (the GPU machine), where they run and the
// first assertion (`assertGpu`) fails with the reason.
import { cuda } from '@fluxlab/native';
import assert from 'node:assert/strict';

function gpuUnavailableReason(): string | undefined {
  try {
    return cuda.isAvailable() ? undefined : cuda.unavailableReason() || 'no CUDA device';
  } catch (err) {
    return (err as Error).message;
  }
}

/** The `skip` option for a GPU suite of `spec` (false: run it), printing why it skips. */
export function gpuSuiteSkip(spec: string): string | false {
  const reason = gpuUnavailableReason();
  const skip = reason !== undefined && process.env.FLUXLAB_REQUIRE_GPU !== '1' ? `no GPU: ${reason}` : false;
  if (skip) console.log(`${spec}: skipped (${skip}); FLUXLAB_REQUIRE_GPU=1 makes this a failure`);
  return skip;
}

/** Fails with the reason when CUDA is unusable (suites that run under FLUXLAB_REQUIRE_GPU=1 call it first). */
export function assertGpu(): void {
  const reason = gpuUnavailableReason();
  assert.equal(reason, undefined, `FLUXLAB_REQUIRE_GPU=1 but CUDA is unusable: ${reason}`);
}
