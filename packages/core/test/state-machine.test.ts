import { describe, expect, it } from 'vitest';
import type { DeploymentEvent, DeploymentRecord, DeploymentStatus } from '../src/index.ts';
import { apply, DeployError, DEPLOYMENT_STATUSES, isOlderDeployment, STEPS, supersededBy } from '../src/index.ts';
import { sampleRecord } from './fixtures.ts';

const now = new Date('2026-01-01T00:01:00Z');

/** A record in the given status, shaped as the workflow would leave it there. */
function inStatus(status: DeploymentStatus): DeploymentRecord {
  const record = sampleRecord();
  switch (status) {
    case 'queued':
      return record;
    case 'in_progress':
      return apply(record, { type: 'attempt_started' }, now);
    case 'completed': {
      let r = apply(record, { type: 'attempt_started' }, now);
      for (const step of STEPS) {
        r = apply(r, { type: 'step_started', step }, now);
        r = apply(r, { type: 'step_completed', step, output: {} }, now);
      }
      return apply(r, { type: 'completed', result: { image: 'i', revision: 'r', url: 'http://x' } }, now);
    }
    case 'failed':
      return apply(record, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'exit 1', step: 'build' } }, now);
    case 'cancelled':
      return apply(record, { type: 'cancel_requested' }, now);
    case 'superseded':
      return apply(record, { type: 'superseded', error: { code: 'SUPERSEDED', message: 'dep_x is newer', step: null } }, now);
  }
}

/** For each event, the statuses it may be applied to, and the status it leads to from each. */
const table: { event: DeploymentEvent; from: Partial<Record<DeploymentStatus, DeploymentStatus>> }[] = [
  { event: { type: 'attempt_started' }, from: { queued: 'in_progress', in_progress: 'in_progress' } },
  { event: { type: 'lease_taken' }, from: { in_progress: 'in_progress' } },
  { event: { type: 'step_started', step: 'validate' }, from: { in_progress: 'in_progress' } },
  { event: { type: 'failed', error: { code: 'TIMEOUT', message: 't', step: null } }, from: { queued: 'failed', in_progress: 'failed' } },
  { event: { type: 'cancel_requested' }, from: { queued: 'cancelled', in_progress: 'in_progress' } },
  { event: { type: 'cancelled' }, from: { queued: 'cancelled', in_progress: 'cancelled' } },
  { event: { type: 'superseded', error: { code: 'SUPERSEDED', message: 's', step: 'deploy' } }, from: { queued: 'superseded', in_progress: 'superseded' } },
  // superseded is final: a retry could only be superseded again (rollback is its own path).
  { event: { type: 'retried' }, from: { failed: 'queued', cancelled: 'queued' } },
  { event: { type: 'published' }, from: { queued: 'queued', in_progress: 'in_progress' } },
];

describe('deployment state machine', () => {
  for (const { event, from } of table) {
    for (const status of DEPLOYMENT_STATUSES) {
      const target = from[status];
      if (target !== undefined) {
        it(`${status} --${event.type}--> ${target}`, () => {
          expect(apply(inStatus(status), event, now).status).toBe(target);
        });
      } else {
        it(`${status} refuses ${event.type}`, () => {
          expect(() => apply(inStatus(status), event, now)).toThrowError(DeployError);
          try {
            apply(inStatus(status), event, now);
          } catch (error) {
            expect((error as DeployError).code).toBe('INVALID_STATE');
          }
        });
      }
    }
  }

  it('bumps the lease with every attempt_started: each delivery that starts a run takes the deployment over', () => {
    const queued = inStatus('queued');
    expect(queued.lease).toBe(0);
    const first = apply(queued, { type: 'attempt_started' }, now);
    expect(first.lease).toBe(1);
    // a redelivery of the same attempt (lost lock, crash) takes it over again
    const second = apply(first, { type: 'attempt_started' }, now);
    expect(second.lease).toBe(2);
    // the timeout sweeper takes it without starting a run
    expect(apply(second, { type: 'lease_taken' }, now).lease).toBe(3);
    // other events leave it alone
    expect(apply(second, { type: 'step_started', step: 'validate' }, now).lease).toBe(2);
    // a record written before leases existed counts as 0
    const { lease: _lease, ...legacy } = queued;
    expect(apply(legacy as DeploymentRecord, { type: 'attempt_started' }, now).lease).toBe(1);
  });

  it('completed needs every step completed', () => {
    const r = inStatus('in_progress');
    expect(() => apply(r, { type: 'completed', result: { image: null, revision: null, url: null } }, now)).toThrow(/step validate/);
    for (const status of DEPLOYMENT_STATUSES.filter((s) => s !== 'in_progress')) {
      expect(() => apply(inStatus(status), { type: 'completed', result: { image: null, revision: null, url: null } }, now)).toThrow(
        DeployError,
      );
    }
  });

  it('runs steps only in order, and only the first unfinished one', () => {
    let r = inStatus('in_progress');
    expect(() => apply(r, { type: 'step_started', step: 'sync' }, now)).toThrow(/next step is validate/);
    r = apply(r, { type: 'step_started', step: 'validate' }, now);
    expect(r.currentStep).toBe('validate');
    expect(r.steps.validate.status).toBe('in_progress');
    // a redelivery resumes the step that was running
    r = apply(r, { type: 'step_started', step: 'validate' }, now);
    r = apply(r, { type: 'step_completed', step: 'validate', output: { kind: 'static' } }, now);
    expect(r.steps.validate).toMatchObject({ status: 'completed', output: { kind: 'static' } });
    expect(() => apply(r, { type: 'step_completed', step: 'validate', output: {} }, now)).toThrow(/step is completed/);
    expect(() => apply(r, { type: 'step_started', step: 'validate' }, now)).toThrow(/next step is sync/);
  });

  it('step events need the step to be running', () => {
    const r = inStatus('in_progress');
    for (const type of ['step_completed', 'step_failed', 'step_deferred', 'step_cancelled'] as const) {
      const event = type === 'step_completed' ? { type, step: 'build' as const, output: {} } : { type, step: 'build' as const, error: 'x' };
      expect(() => apply(r, event as DeploymentEvent, now)).toThrow(/step is pending/);
    }
    expect(() => apply(r, { type: 'step_rolled_back', step: 'build' }, now)).toThrow(/never ran/);
    for (const status of ['queued', 'completed', 'failed', 'cancelled'] as const) {
      expect(() => apply(inStatus(status), { type: 'step_completed', step: 'validate', output: {} }, now)).toThrow(DeployError);
    }
  });

  it('a deferred step goes back to pending with its error, and runs again', () => {
    let r = apply(inStatus('in_progress'), { type: 'step_started', step: 'validate' }, now);
    r = apply(r, { type: 'step_deferred', step: 'validate', error: 'store busy' }, now);
    expect(r.steps.validate).toMatchObject({ status: 'pending', error: 'store busy' });
    r = apply(r, { type: 'step_started', step: 'validate' }, now);
    expect(r.steps.validate).toMatchObject({ status: 'in_progress', error: null });
  });

  it('rolling back resets completed steps and keeps the failing step visible', () => {
    let r = inStatus('in_progress');
    for (const step of ['validate', 'sync', 'sandbox'] as const) {
      r = apply(r, { type: 'step_started', step }, now);
      r = apply(r, { type: 'step_completed', step, output: { made: step } }, now);
    }
    r = apply(r, { type: 'step_started', step: 'build' }, now);
    r = apply(r, { type: 'step_failed', step: 'build', error: 'exit 1' }, now);
    r = apply(r, { type: 'step_rolled_back', step: 'build' }, now);
    r = apply(r, { type: 'step_rolled_back', step: 'sandbox' }, now);
    r = apply(r, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'exit 1', step: 'build' } }, now);
    expect(r.steps.sandbox).toMatchObject({ status: 'pending', output: {} });
    expect(r.steps.build).toMatchObject({ status: 'failed', error: 'exit 1' });
    expect(r.steps.sync.status).toBe('completed');
    expect(r.currentStep).toBe('build');
    // a retry is a new attempt that resumes at the first unfinished step
    const retried = apply(r, { type: 'retried' }, now);
    expect(retried).toMatchObject({ status: 'queued', attempt: 2, error: null, finishedAt: null });
    expect(retried.steps.build).toMatchObject({ status: 'pending', error: null });
    const resumed = apply(retried, { type: 'attempt_started' }, now);
    expect(() => apply(resumed, { type: 'step_started', step: 'build' }, now)).toThrow(/next step is sandbox/);
    expect(apply(resumed, { type: 'step_started', step: 'sandbox' }, now).currentStep).toBe('sandbox');
  });

  it('a cancel request on a running deployment is a flag until the worker finishes it', () => {
    let r = apply(inStatus('in_progress'), { type: 'cancel_requested' }, now);
    expect(r).toMatchObject({ status: 'in_progress', cancelRequested: true });
    expect(() => apply(r, { type: 'attempt_started' }, now)).toThrow(/cancel was requested/);
    expect(() => apply(r, { type: 'completed', result: { image: null, revision: null, url: null } }, now)).toThrow(DeployError);
    r = apply(r, { type: 'cancelled' }, now);
    expect(r).toMatchObject({ status: 'cancelled', finishedAt: now.toISOString() });
  });

  it('keeps the attempt start across redeliveries so the timeout cannot be reset', () => {
    const started = apply(inStatus('queued'), { type: 'attempt_started' }, now);
    const later = new Date(now.getTime() + 60_000);
    const redelivered = apply(started, { type: 'attempt_started' }, later);
    expect(redelivered.attemptStartedAt).toBe(now.toISOString());
  });

  it('a skipped step counts as done: in order only, never rolled back, kept by a retry, webhooks name the app event', () => {
    let r = apply(sampleRecord(), { type: 'attempt_started' }, now);
    expect(() => apply(r, { type: 'step_skipped', step: 'sync', output: {} }, now)).toThrow(/the next step is validate/);
    r = apply(r, { type: 'step_started', step: 'validate' }, now);
    r = apply(r, { type: 'step_completed', step: 'validate', output: {} }, now);
    for (const step of ['sync', 'sandbox', 'build'] as const) r = apply(r, { type: 'step_skipped', step, output: { reusedFrom: 'dep_a' } }, now);
    expect(r.steps.build).toMatchObject({ status: 'skipped', startedAt: null, finishedAt: now.toISOString(), output: { reusedFrom: 'dep_a' } });
    expect(r.progress).toBe(70);
    expect(() => apply(r, { type: 'step_skipped', step: 'build', output: {} }, now)).toThrow(DeployError);
    expect(() => apply(r, { type: 'step_rolled_back', step: 'build' }, now)).toThrow(/was skipped/);
    const failed = apply(r, { type: 'failed', error: { code: 'DEPLOY_UNHEALTHY', message: 'x', step: 'deploy' } }, now);
    expect(apply(failed, { type: 'retried' }, now).steps.sandbox.status).toBe('skipped');
    for (const step of ['deploy', 'cleanup'] as const) {
      r = apply(r, { type: 'step_started', step }, now);
      r = apply(r, { type: 'step_completed', step, output: {} }, now);
    }
    const build = apply(r, { type: 'completed', result: { image: 'i', revision: 'r', url: null } }, now);
    expect(build.outbox?.map((event) => event.type)).toEqual(['deployment.queued', 'deployment.started', 'deployment.succeeded']);
    const rollback = apply({ ...r, kind: 'rollback' }, { type: 'completed', result: { image: 'i', revision: 'r', url: null } }, now);
    expect(rollback.outbox?.slice(-2).map((event) => event.type)).toEqual(['deployment.succeeded', 'app.rolled_back']);
    expect(rollback.outbox?.at(-1)?.data).toEqual(rollback.outbox?.at(-2)?.data);
    const config = apply({ ...r, kind: 'config' }, { type: 'completed', result: { image: 'i', revision: 'r', url: null } }, now);
    expect(config.outbox?.at(-1)?.type).toBe('app.env_changed');
    const failedRollback = apply({ ...r, kind: 'rollback' }, { type: 'failed', error: { code: 'DEPLOY_UNHEALTHY', message: 'x', step: 'deploy' } }, now);
    expect(failedRollback.outbox?.map((event) => event.type)).not.toContain('app.rolled_back');
  });

  it('computes progress from the steps, 100 only when completed', () => {
    let r = inStatus('in_progress');
    expect(r.progress).toBe(0);
    r = apply(r, { type: 'step_started', step: 'validate' }, now);
    r = apply(r, { type: 'step_completed', step: 'validate', output: {} }, now);
    const afterValidate = r.progress;
    r = apply(r, { type: 'step_started', step: 'sync' }, now);
    expect(r.progress).toBeGreaterThan(afterValidate);
    expect(r.progress).toBeLessThan(100);
    expect(inStatus('completed').progress).toBe(100);
  });

  it('does not mutate its input', () => {
    const r = inStatus('in_progress');
    const copy = structuredClone(r);
    apply(r, { type: 'step_started', step: 'validate' }, now);
    expect(r).toEqual(copy);
  });

  it('does not mutate its input whatever the event, sharing the steps only with events that leave them as they are', () => {
    // Every event on a record in the state it needs, and whether the event changes a step.
    const started = apply(inStatus('in_progress'), { type: 'step_started', step: 'validate' }, now);
    const failed = apply(inStatus('in_progress'), { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, now);
    const cases: [DeploymentRecord, DeploymentEvent, boolean][] = [
      [inStatus('queued'), { type: 'published' }, false],
      [inStatus('queued'), { type: 'attempt_started' }, false],
      [inStatus('in_progress'), { type: 'lease_taken' }, false],
      [inStatus('queued'), { type: 'cancel_requested' }, false],
      [inStatus('in_progress'), { type: 'cancelled' }, false],
      [inStatus('in_progress'), { type: 'step_started', step: 'validate' }, true],
      [started, { type: 'step_completed', step: 'validate', output: { plan: 'p' } }, true],
      [started, { type: 'step_failed', step: 'validate', error: 'exit 1' }, true],
      [started, { type: 'step_rolled_back', step: 'validate' }, true],
      [failed, { type: 'retried' }, true],
    ];
    for (const [record, event, changesSteps] of cases) {
      const copy = structuredClone(record);
      const next = apply(record, event, now);
      expect(record, event.type).toEqual(copy);
      expect(next.steps === record.steps, event.type).toBe(!changesSteps);
      // The step objects of a changed record are its own: changing them would not reach `record`.
      if (changesSteps) for (const step of STEPS) expect(next.steps[step] === record.steps[step], `${event.type} ${step}`).toBe(false);
    }
  });
});

describe('live deployment order', () => {
  const at = (iso: string, id: string): DeploymentRecord => ({ ...sampleRecord(), createdAt: iso, id });
  const older = at('2026-01-01T00:00:00.000Z', 'dep_bbbbbbbbbbbbbbbbbbbbbbbbbb');
  const newer = at('2026-01-01T00:00:01.000Z', 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa');

  it('supersedes a deployment submitted before the live one, whenever it finishes', () => {
    expect(supersededBy(older, newer)?.id).toBe(newer.id);
    expect(supersededBy(newer, older)).toBeNull();
    expect(supersededBy(older, null)).toBeNull();
    expect(supersededBy(older, older)).toBeNull();
  });

  it('does not order two deployments submitted in the same millisecond (random ids would contradict the queue order)', () => {
    const twin = { ...older, id: 'dep_cccccccccccccccccccccccccc' };
    expect(isOlderDeployment(older, twin)).toBe(false);
    expect(isOlderDeployment(twin, older)).toBe(false);
    expect(supersededBy(older, twin)).toBeNull();
    expect(supersededBy(twin, older)).toBeNull();
  });

  it('lets an explicit rollback through (the hook rollback will use)', () => {
    expect(supersededBy(older, newer, { explicitRollback: true })).toBeNull();
  });
});
