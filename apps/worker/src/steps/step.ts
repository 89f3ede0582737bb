import type { BuildJob, BuildPlan, DeploymentRecord, LeaseCheck, LogSink, StepName, StepState, WorkerAdapters } from '@zepid/core';
import { DeployError } from '@zepid/core';

export type StepOutput = StepState['output'];

export interface WorkerSettings {
  deploymentTimeoutMs: number;
}

/** What a step gets: the record as it stood when the step started, the adapters, a log and a signal. */
export interface StepContext {
  record: DeploymentRecord;
  adapters: WorkerAdapters;
  /** Aborted on cancel, timeout, worker shutdown or a lost lease; `signal.reason` says which. */
  signal: AbortSignal;
  log: LogSink;
  settings: WorkerSettings;
  /** Asked before any side effect another delivery could rely on; false: stop, touch nothing (lease.ts). */
  fence: LeaseCheck;
}

/**
 * A step: `invoke` does the work and returns what it created; `compensate` undoes it (on failure
 * or cancel, in reverse order). Both are idempotent by deployment id: a redelivered job calls them
 * again. A step without `compensate` leaves nothing that needs undoing, and stays completed.
 */
export interface Step {
  readonly name: StepName;
  /**
   * When the step does not apply to this deployment (a rollback or config deployment builds nothing):
   * what it hands on (build: the reused image), recorded with the step `skipped`; `invoke` is not
   * called. Null (or no `skip`): the step runs.
   */
  skip?(context: StepContext): StepOutput | null;
  invoke(context: StepContext): Promise<StepOutput>;
  compensate?(context: StepContext, output: StepOutput): Promise<void>;
}

/** The build plan the validate step recorded. */
export function planOf(record: DeploymentRecord): BuildPlan {
  const raw = record.steps.validate.output.plan;
  if (typeof raw !== 'string') throw new DeployError('INTERNAL_ERROR', 'The validate step has no build plan recorded');
  return JSON.parse(raw) as BuildPlan;
}

export function buildJobOf(context: StepContext): BuildJob {
  const { record } = context;
  const contextUri = record.steps.sync.output.contextUri;
  return {
    deploymentId: record.id,
    orgId: record.orgId,
    projectId: record.projectId,
    appName: record.appName,
    plan: planOf(record),
    contextUri: typeof contextUri === 'string' ? contextUri : '',
    envVariableNames: record.spec.envVariableNames,
    signal: context.signal,
    log: context.log,
    fence: context.fence,
  };
}
