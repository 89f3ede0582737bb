import { addStatusEvent } from './webhooks.ts';
import type { DeploymentErrorInfo, DeploymentRecord, DeploymentResult, StepState } from './deployment.ts';
import { firstUnfinishedStep, progressOf } from './deployment.ts';
import { DeployError } from './errors.ts';
import type { StepName } from './glossary.ts';
import { STEPS } from './glossary.ts';

/**
 * The one function through which a deployment's status changes. Every change is an event; an event
 * that does not fit the current state is an INVALID_STATE error (the API answers 409). The function
 * is pure: it returns a new record and leaves the store write, conditional on the etag, to the caller.
 *
 *   queued ──attempt_started──▶ in_progress ──completed──▶ completed
 *     │                            │  ▲ (redelivery resumes: attempt_started again, lease + 1)
 *     ├─cancel_requested─▶ cancelled ◀─cancelled─┤
 *     ├─failed─▶ failed ◀────────failed──────────┤
 *     └─superseded─▶ superseded ◀─superseded─────┘
 *   failed | cancelled ──retried──▶ queued (attempt + 1)
 *
 * `superseded` is final: a newer deployment of the app is live, and the live deployment only moves
 * forward, so a retry could only be superseded again. Putting an older deployment live on purpose is
 * a rollback (its own event, not this path).
 */
export type DeploymentEvent =
  | { type: 'attempt_started' }
  /**
   * Takes the lease without starting a run: the timeout sweeper, before it fails and compensates a
   * deployment whose worker went silent, so that worker (should it wake) is fenced off too.
   */
  | { type: 'lease_taken' }
  | { type: 'step_started'; step: StepName }
  | { type: 'step_completed'; step: StepName; output: StepState['output'] }
  /**
   * The step does not apply to this deployment (a rollback or config deployment builds nothing): it
   * ends `skipped` without running, from pending (or in_progress, on a resume), with what it hands on
   * (build: the reused image). Counts as done.
   */
  | { type: 'step_skipped'; step: StepName; output: StepState['output'] }
  /** A transient error: the step goes back to pending and runs again after a back-off. */
  | { type: 'step_deferred'; step: StepName; error: string }
  | { type: 'step_failed'; step: StepName; error: string }
  | { type: 'step_cancelled'; step: StepName }
  /** Compensation undid what the step created; a retry runs it again. */
  | { type: 'step_rolled_back'; step: StepName }
  | { type: 'completed'; result: DeploymentResult }
  | { type: 'failed'; error: DeploymentErrorInfo }
  /** A newer deployment of the same app is live; `error.code` is SUPERSEDED and names it. */
  | { type: 'superseded'; error: DeploymentErrorInfo }
  | { type: 'cancel_requested' }
  | { type: 'cancelled' }
  | { type: 'retried' }
  | { type: 'published' };

export type DeploymentEventType = DeploymentEvent['type'];

function illegal(record: DeploymentRecord, event: DeploymentEvent, why: string): DeployError {
  const step = 'step' in event ? ` (${event.step})` : '';
  return new DeployError('INVALID_STATE', `Cannot apply ${event.type}${step} to a ${record.status} deployment: ${why}`, {
    details: { status: record.status, event: event.type },
  });
}

function cloneSteps(steps: DeploymentRecord['steps']): DeploymentRecord['steps'] {
  const copy = {} as DeploymentRecord['steps'];
  for (const step of STEPS) copy[step] = { ...steps[step], output: { ...steps[step].output } };
  return copy;
}

/**
 * The record after `event`, a new object (`record` is not changed). Its steps are copied only by the
 * events that change a step; the others (published, lease_taken, cancel_requested, completed, …)
 * share `record`'s steps, which nothing changes in place (copying all six steps and their outputs
 * was ~0.8 KB of garbage per POST /deploy, for its `published`: BENCHMARKS.md).
 */
export function apply(record: DeploymentRecord, event: DeploymentEvent, now: Date): DeploymentRecord {
  const at = now.toISOString();
  const next: DeploymentRecord = { ...record, updatedAt: at };
  const requireStatus = (...allowed: DeploymentRecord['status'][]) => {
    if (!allowed.includes(record.status)) throw illegal(record, event, `allowed only when ${allowed.join(' or ')}`);
  };
  /** The steps of `next`, copied from `record`'s on first use, to be changed. */
  const ownSteps = () => {
    if (next.steps === record.steps) next.steps = cloneSteps(record.steps);
    return next.steps;
  };
  const stepOf = (step: StepName) => ownSteps()[step];

  switch (event.type) {
    case 'attempt_started': {
      requireStatus('queued', 'in_progress');
      if (record.cancelRequested) throw illegal(record, event, 'a cancel was requested');
      next.status = 'in_progress';
      next.startedAt = record.startedAt ?? at;
      // A redelivered attempt keeps its start: the timeout counts from the first delivery.
      next.attemptStartedAt = record.status === 'queued' ? at : (record.attemptStartedAt ?? at);
      // Every delivery that starts a run takes the lease: the write is conditional on the etag read,
      // so of two deliveries racing for the deployment one gets the epoch and the other a conflict.
      // (Records written before leases existed have none: they count as 0.)
      next.lease = (record.lease ?? 0) + 1;
      break;
    }
    case 'lease_taken': {
      requireStatus('in_progress');
      next.lease = (record.lease ?? 0) + 1;
      break;
    }
    case 'step_started': {
      requireStatus('in_progress');
      const expected = firstUnfinishedStep(record.steps);
      if (expected !== event.step) throw illegal(record, event, `the next step is ${expected ?? 'none'}`);
      const state = stepOf(event.step);
      if (state.status !== 'pending' && state.status !== 'in_progress') {
        throw illegal(record, event, `step is ${state.status}`);
      }
      // in_progress → in_progress is a resume after a crash or a lost lock.
      Object.assign(state, { status: 'in_progress', startedAt: at, finishedAt: null, error: null });
      next.currentStep = event.step;
      break;
    }
    case 'step_skipped': {
      requireStatus('in_progress');
      const expected = firstUnfinishedStep(record.steps);
      if (expected !== event.step) throw illegal(record, event, `the next step is ${expected ?? 'none'}`);
      const state = stepOf(event.step);
      if (state.status !== 'pending' && state.status !== 'in_progress') throw illegal(record, event, `step is ${state.status}`);
      // No startedAt: it never ran (and step-time estimates must not count it).
      Object.assign(state, { status: 'skipped', startedAt: null, finishedAt: at, error: null, output: { ...event.output } });
      break;
    }
    case 'step_completed':
    case 'step_deferred':
    case 'step_failed':
    case 'step_cancelled': {
      requireStatus('in_progress');
      const state = stepOf(event.step);
      if (state.status !== 'in_progress') throw illegal(record, event, `step is ${state.status}`);
      if (event.type === 'step_completed') {
        Object.assign(state, { status: 'completed', finishedAt: at, error: null, output: { ...event.output } });
      } else if (event.type === 'step_deferred') {
        Object.assign(state, { status: 'pending', finishedAt: null, error: event.error });
      } else if (event.type === 'step_failed') {
        Object.assign(state, { status: 'failed', finishedAt: at, error: event.error });
      } else {
        Object.assign(state, { status: 'cancelled', finishedAt: at, error: null });
      }
      break;
    }
    case 'step_rolled_back': {
      requireStatus('in_progress');
      const state = stepOf(event.step);
      if (state.status === 'pending' || state.status === 'skipped') throw illegal(record, event, `step ${state.status === 'pending' ? 'never ran' : 'was skipped'}`);
      state.output = {};
      // The step that stopped the attempt keeps failed/cancelled so the reason stays visible.
      if (state.status === 'completed' || state.status === 'in_progress') {
        Object.assign(state, { status: 'pending', startedAt: null, finishedAt: null });
      }
      break;
    }
    case 'completed': {
      requireStatus('in_progress');
      if (record.cancelRequested) throw illegal(record, event, 'a cancel was requested');
      const unfinished = firstUnfinishedStep(record.steps);
      if (unfinished !== null) throw illegal(record, event, `step ${unfinished} is not completed`);
      next.status = 'completed';
      next.result = { ...event.result };
      next.currentStep = null;
      next.error = null;
      next.finishedAt = at;
      break;
    }
    case 'failed': {
      requireStatus('queued', 'in_progress');
      next.status = 'failed';
      next.error = { ...event.error };
      next.currentStep = event.error.step;
      next.finishedAt = at;
      break;
    }
    case 'superseded': {
      requireStatus('queued', 'in_progress');
      next.status = 'superseded';
      next.error = { ...event.error };
      next.currentStep = event.error.step;
      next.finishedAt = at;
      break;
    }
    case 'cancel_requested': {
      requireStatus('queued', 'in_progress');
      if (record.status === 'queued') {
        // Nothing ran yet: the deployment ends here; the worker drops its job when it arrives.
        next.status = 'cancelled';
        next.finishedAt = at;
        next.cancelRequested = true;
      } else {
        next.cancelRequested = true;
      }
      break;
    }
    case 'cancelled': {
      requireStatus('queued', 'in_progress');
      next.status = 'cancelled';
      next.cancelRequested = true;
      next.finishedAt = at;
      next.error = null;
      break;
    }
    case 'retried': {
      requireStatus('failed', 'cancelled');
      next.status = 'queued';
      next.attempt = record.attempt + 1;
      next.cancelRequested = false;
      next.error = null;
      next.currentStep = null;
      next.finishedAt = null;
      next.attemptStartedAt = null;
      next.publishedAt = null;
      const steps = ownSteps();
      for (const step of STEPS) {
        const state = steps[step];
        if (state.status !== 'completed' && state.status !== 'skipped') {
          Object.assign(state, { status: 'pending', startedAt: null, finishedAt: null, error: null });
        }
      }
      break;
    }
    case 'published': {
      if (record.status !== 'queued' && record.status !== 'in_progress') {
        throw illegal(record, event, 'only a queued or running deployment has a job');
      }
      next.publishedAt = at;
      break;
    }
  }
  next.progress = next.status === 'completed' ? 100 : progressOf(next.steps);
  // A status change carries its webhook event in the same write (the outbox).
  return addStatusEvent(record, next, at);
}
