import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readJson } from './config';
import { fixturesDir, goldenCases, goldenFile } from './golden';
import { FlowMatchEulerDiscreteScheduler, calculateShift, fluxSchedule, linspace } from './scheduler';

function schedulerOf(pipeline: string): FlowMatchEulerDiscreteScheduler {
  return new FlowMatchEulerDiscreteScheduler(readJson(join(fixturesDir(), pipeline, 'scheduler', 'scheduler_config.json'), 'scheduler'));
}

describe('FlowMatchEulerDiscreteScheduler', () => {
  for (const c of [...goldenCases('manifest.json'), ...goldenCases('manifest-nf4.json')]) {
    it(`reproduces sigmas and timesteps bit for bit: ${c.pipeline}/${c.name}`, () => {
      const scheduler = schedulerOf(c.pipeline);
      const golden = goldenFile(c);
      const imageSeqLen = c.tensors.latents_init[1];
      fluxSchedule(scheduler, c.steps, imageSeqLen);
      assert.deepEqual([...scheduler.sigmas], [...(golden.readArray('sigmas') as Float32Array)]);
      assert.deepEqual([...scheduler.timesteps], [...(golden.readArray('timesteps') as Float32Array)]);
      for (let i = 0; i < c.num_steps_recorded; i++) {
        // The pipeline hands the transformer timestep / 1000 in float32.
        const t = Math.fround(scheduler.timesteps[i] / 1000);
        const recorded = (golden.readArray(`step${i}.timestep`) as Float32Array)[0];
        assert.ok(Math.abs(t - recorded) <= 4e-8, `step ${i}: ${t} vs ${recorded}`);
      }
    });
  }

  it('computes the FLUX.1-dev schedule at 1024x1024 (4096 tokens, mu = max_shift)', () => {
    const scheduler = new FlowMatchEulerDiscreteScheduler({ shift: 3.0, use_dynamic_shifting: true, base_shift: 0.5, max_shift: 1.15 });
    const { mu } = fluxSchedule(scheduler, 28, 4096);
    assert.ok(Math.abs(mu - 1.15) < 1e-12);
    assert.equal(scheduler.sigmas.length, 29);
    assert.equal(scheduler.sigmas[0], 1);
    assert.equal(scheduler.sigmas[28], 0);
    for (let i = 1; i < 29; i++) assert.ok(scheduler.sigmas[i] < scheduler.sigmas[i - 1]);
    assert.equal(scheduler.stepDelta(27), Math.fround(0 - scheduler.sigmas[27]));
  });

  it('shifts statically without dynamic shifting and keeps float64 until the end without custom sigmas', () => {
    const scheduler = new FlowMatchEulerDiscreteScheduler({ shift: 3.0 });
    scheduler.setTimesteps(4);
    // sigma_max = 1, sigma_min = shift * 0.001 / (1 + 2 * 0.001) after the static shift in __init__.
    const sMin = Math.fround(Math.fround(3 * Math.fround(0.001)) / Math.fround(1 + Math.fround(2 * Math.fround(0.001))));
    const lin = linspace(1000, sMin * 1000, 4).map((t) => t / 1000);
    const expected = lin.map((s) => Math.fround((3 * s) / (1 + 2 * s)));
    assert.deepEqual([...scheduler.sigmas.subarray(0, 4)], [...expected]);
  });

  it('requires mu with dynamic shifting and rejects unsupported sigma options', () => {
    const scheduler = new FlowMatchEulerDiscreteScheduler({ use_dynamic_shifting: true });
    assert.throws(() => scheduler.setTimesteps(4, { sigmas: [1, 0.5] }), /mu is required/);
    assert.throws(() => new FlowMatchEulerDiscreteScheduler({ use_karras_sigmas: true }), /use_karras_sigmas is not supported/);
    assert.throws(() => scheduler.stepDelta(0), /step index 0 outside/);
  });

  it('calculate_shift is linear between the base and max sequence lengths', () => {
    assert.ok(Math.abs(calculateShift(256) - 0.5) < 1e-12);
    assert.ok(Math.abs(calculateShift(4096) - 1.15) < 1e-12);
  });

  it('linspace matches numpy including a single point', () => {
    assert.deepEqual([...linspace(1, 0.25, 4)], [1, 0.75, 0.5, 0.25]);
    assert.deepEqual([...linspace(1, 1, 1)], [1]);
  });
});
