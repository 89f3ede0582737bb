import { describe, expect, it } from 'vitest';
import type { DeploymentRecord, StepName } from '@zepid/core';
import { emptySteps, progressAt, progressOf, STEPS } from '@zepid/core';
import { makeRecord } from '@zepid/testkit';
import { recentTimes, RecentTimesCache } from '../src/estimates.ts';

const T0 = Date.parse('2026-12-06T12:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();

/** A completed deployment created at T0 whose steps took `stepMs` each, one after another. */
function completed(stepMs: Record<StepName, number>): DeploymentRecord {
  const steps = emptySteps();
  let t = 0;
  for (const step of STEPS) {
    steps[step] = { ...steps[step], status: 'completed', startedAt: at(t), finishedAt: at(t + stepMs[step]) };
    t += stepMs[step];
  }
  return makeRecord({ status: 'completed', steps, progress: 100, finishedAt: at(t) }, new Date(T0));
}

const quick = { validate: 100, sync: 200, sandbox: 200, build: 3_000, deploy: 400, cleanup: 100 };
const slow = { validate: 100, sync: 300, sandbox: 300, build: 38_000, deploy: 1_200, cleanup: 100 };

describe('estimatedDuration from recent deployments', () => {
  it('gives the range of what completed deployments took, and the median of each step', () => {
    const times = recentTimes([completed(quick), completed(slow), completed(quick), makeRecord({ status: 'failed' })]);
    expect(times.summary).toBe('4 s to 40 s (last 3 completed deployments)');
    expect(times.stepMs.build).toBe(3_000);
  });

  it('has nothing to say before any deployment completed (the API then gives its configured text)', () => {
    expect(recentTimes([makeRecord({ status: 'queued' })])).toEqual({ summary: null, stepMs: {} });
  });

  it('reads the store at most once a minute per organization', async () => {
    let reads = 0;
    let now = T0;
    const cache = new RecentTimesCache(
      {
        listRecent: (orgId) => {
          reads += 1;
          return Promise.resolve(orgId === 'org_a' ? [completed(quick)] : []);
        },
      },
      () => now,
    );
    expect((await cache.forOrg('org_a')).summary).toBe('about 4 s (last completed deployment)');
    await cache.forOrg('org_a');
    expect(await cache.forOrg('org_b')).toMatchObject({ summary: null });
    expect(reads).toBe(2);
    now += 61_000;
    await cache.forOrg('org_a');
    expect(reads).toBe(3);
  });

  it('answers at once (no promise) only with a read of the last minute that has answered; a failed read is asked again', async () => {
    let now = T0;
    let fail = false;
    let release = () => {};
    const cache = new RecentTimesCache(
      {
        listRecent: () => {
          if (fail) return Promise.reject(new Error('database is locked'));
          return new Promise((resolve) => {
            release = () => resolve([completed(quick)]);
          });
        },
      },
      () => now,
    );
    expect(cache.settledFor('org_a')).toBeUndefined();
    const pending = cache.forOrg('org_a');
    // Asked, not answered yet.
    expect(cache.settledFor('org_a')).toBeUndefined();
    release();
    await pending;
    expect(cache.settledFor('org_a')?.summary).toBe('about 4 s (last completed deployment)');
    now += 61_000;
    expect(cache.settledFor('org_a')).toBeUndefined();
    fail = true;
    await expect(cache.forOrg('org_a')).rejects.toThrow('database is locked');
    expect(cache.settledFor('org_a')).toBeUndefined();
    fail = false;
    const again = cache.forOrg('org_a');
    release();
    expect((await again).summary).toBe('about 4 s (last completed deployment)');
    expect(cache.settledFor('org_a')?.summary).toBe('about 4 s (last completed deployment)');
  });
});

describe('progress while a step runs', () => {
  // Validate, sync and sandbox done; the build started at T0.
  const steps = emptySteps();
  for (const step of ['validate', 'sync', 'sandbox'] as const) steps[step] = { ...steps[step], status: 'completed', startedAt: at(0), finishedAt: at(0) };
  steps.build = { ...steps.build, status: 'in_progress', startedAt: at(0) };

  it('moves during a long build instead of standing at one number, and never reaches the next step', () => {
    // What the record stores (and the status used to show for the whole build).
    expect(progressOf(steps)).toBe(48);
    const seen = [0, 2_000, 10_000, 30_000, 120_000, 3_600_000].map((ms) => progressAt(steps, new Date(T0 + ms), { build: 20_000 }));
    expect(seen[0]).toBe(25);
    for (let i = 1; i < seen.length; i += 1) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1] ?? 0);
    expect(new Set(seen).size).toBeGreaterThanOrEqual(5);
    // Below what the completed build counts (25 + 45 = 70): the deploy step's start is never a step back.
    expect(Math.max(...seen)).toBeLessThan(70);
  });

  it('goes by what the step took lately: a 5 s build is further along after 5 s than a 60 s one', () => {
    expect(progressAt(steps, new Date(T0 + 5_000), { build: 5_000 })).toBeGreaterThan(progressAt(steps, new Date(T0 + 5_000), { build: 60_000 }));
  });
});
