import type { Clock, DeploymentDimension, DeploymentEvent, DeploymentRecord, DeploymentRef, JobMessage, Logger, StepName, StepOutcome, WorkerAdapters } from '@zepid/core';
import { asDeployError, backoffMs, DeployError, firstUnfinishedStep, isTerminal, STEPS, updateDeployment } from '@zepid/core';
import { DeploymentLog } from './deployment-log.ts';
import { recordedImage } from './steps/deploy.ts';
import type { Step, StepContext, StepOutput, WorkerSettings } from './steps/step.ts';

/** What the consumer does with the message once a run ends. */
export type Settlement =
  | { action: 'complete' }
  /** Transient failure: deliver again after a back-off. */
  | { action: 'retry'; delayMs: number }
  /** The worker is stopping: give the job back at once; the next delivery resumes. */
  | { action: 'release' }
  /** Someone else owns the deployment now (lost lock): touch nothing. */
  | { action: 'none' };

/** Why a run was stopped from outside its steps. */
type StopReason = 'cancel' | 'timeout' | 'shutdown' | 'lost';

class RunStopped extends Error {
  readonly reason: StopReason;
  constructor(reason: StopReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** StepDuration's outcome of a step that threw: stopped by a cancel, the timeout or the worker, or failed on its own. */
function stepOutcome(stopped: RunStopped | null): StepOutcome {
  switch (stopped?.reason) {
    case undefined:
      return 'failed';
    case 'cancel':
      return 'cancelled';
    case 'timeout':
      return 'timed out';
    case 'shutdown':
    case 'lost':
      return 'interrupted';
  }
}

/** A write the run may no longer make: the deployment moved on without it. */
class OwnershipLost extends Error {}

export interface WorkflowOptions {
  adapters: WorkerAdapters;
  steps: readonly Step[];
  settings: WorkerSettings;
  logger: Logger;
  clock: Clock;
  /** How often a running deployment is re-read to notice a cancel. */
  cancelPollMs?: number;
  /** How long compensation may take. */
  compensationTimeoutMs?: number;
}

export interface Delivery {
  deliveryCount: number;
  maxDeliveryCount: number;
  /** Aborted when the worker shuts down or loses the job's lock. */
  signal: AbortSignal;
}

/**
 * Runs one attempt of a deployment: the six steps from the first unfinished one, recording every
 * change through the state machine, honouring cancel, the deployment timeout and worker shutdown;
 * on failure or cancel, compensates what the attempt created, in reverse order.
 */
export class Workflow {
  private readonly options: WorkflowOptions;
  private readonly stepsByName: Map<StepName, Step>;

  constructor(options: WorkflowOptions) {
    this.options = options;
    this.stepsByName = new Map(options.steps.map((step) => [step.name, step]));
  }

  /** `known`: the record as this run last wrote it; the write is tried on it before reading again. */
  private update(ref: DeploymentRef, attempt: number, events: (current: DeploymentRecord) => DeploymentEvent[] | null, known?: DeploymentRecord) {
    return updateDeployment(
      this.options.adapters.store,
      ref,
      (current) => {
        if (current.attempt !== attempt || isTerminal(current.status)) throw new OwnershipLost(`deployment ${ref.deploymentId} moved on`);
        return events(current);
      },
      this.options.clock,
      known,
    );
  }

  async run(job: JobMessage, delivery: Delivery): Promise<Settlement> {
    const { adapters, logger, clock, settings } = this.options;
    const ref = { orgId: job.orgId, deploymentId: job.deploymentId };
    const secrets = Object.values(await adapters.secrets.get(job.deploymentId));
    const log = new DeploymentLog({ artifacts: adapters.artifacts, deploymentId: job.deploymentId, secrets, logger });
    const controller = new AbortController();
    const stop = (reason: StopReason, message: string) => {
      if (!controller.signal.aborted) controller.abort(new RunStopped(reason, message));
    };
    const timers: NodeJS.Timeout[] = [];
    const onOuterAbort = () => stop(delivery.signal.reason === 'lost' ? 'lost' : 'shutdown', 'the worker is stopping');
    delivery.signal.addEventListener('abort', onOuterAbort, { once: true });

    try {
      // Store writes are merged where nothing can happen in between: the attempt starting with its
      // first step starting, a step's completion with the next one's start, the last step's completion
      // with the deployment's. Each write still marks a moment a client sees (a step begins) and keeps
      // what a crash needs (the outputs of every finished step, before the next one runs). 8 writes a
      // deployment instead of 15; BENCHMARKS.md has the count.
      let record: DeploymentRecord;
      try {
        record = await this.update(ref, job.attempt, (current) => {
          if (current.cancelRequested) return null;
          const first = firstUnfinishedStep(current.steps);
          return [{ type: 'attempt_started' }, ...(first === null ? [] : [{ type: 'step_started' as const, step: first }])];
        });
      } catch (error) {
        if (error instanceof OwnershipLost) return { action: 'complete' };
        throw error;
      }
      if (record.cancelRequested) return await this.finishStopped(record, new RunStopped('cancel', 'cancelled'), log);

      const startedAt = Date.parse(record.attemptStartedAt ?? record.updatedAt);
      const remaining = startedAt + settings.deploymentTimeoutMs - clock().getTime();
      const resumeAt = firstUnfinishedStep(record.steps);
      log.write(null, `attempt ${record.attempt} ${delivery.deliveryCount > 1 || record.attempt > 1 ? `resumes at ${resumeAt ?? 'the end'}` : 'started'}`);
      if (record.attempt === 1 && delivery.deliveryCount === 1) {
        adapters.telemetry.metric('QueueWait', startedAt - Date.parse(record.createdAt), this.properties(record));
      }
      if (remaining <= 0) stop('timeout', `the deployment did not finish within ${settings.deploymentTimeoutMs} ms`);
      else timers.push(setTimeout(() => stop('timeout', `the deployment did not finish within ${settings.deploymentTimeoutMs} ms`), remaining));
      timers.push(this.watchForCancel(ref, job.attempt, () => stop('cancel', 'cancelled'), (why) => stop('lost', why)));

      /** The last step's completion, not yet written: it goes with the next write. */
      let carried: DeploymentEvent[] = [];
      const flush = async () => {
        if (carried.length > 0) record = await this.update(ref, job.attempt, () => carried, record);
        carried = [];
        return record;
      };
      for (const step of STEPS) {
        if (record.steps[step].status === 'completed' || (carried[0]?.type === 'step_completed' && carried[0].step === step)) continue;
        if (controller.signal.aborted) {
          // The step started with the previous write (if any) has not begun its work: not "in" it.
          const begun = record.steps[step].status === 'in_progress' ? step : undefined;
          return await this.finishStopped(await flush(), controller.signal.reason as RunStopped, log, begun);
        }
        const implementation = this.stepsByName.get(step);
        if (implementation === undefined) throw new Error(`no implementation of step ${step}`);
        if (record.steps[step].status !== 'in_progress' || carried.length > 0) {
          const events: DeploymentEvent[] = [...carried, { type: 'step_started', step }];
          record = await this.update(ref, job.attempt, () => events, record);
          carried = [];
        }
        const stepLog = log.sink(step);
        const began = performance.now();
        let output: StepOutput;
        try {
          output = await implementation.invoke({ record, adapters, signal: controller.signal, log: stepLog, settings });
        } catch (error) {
          // Failed and stopped steps are timed too: the dashboard's step durations would otherwise hide
          // the slow ones that end in a timeout.
          const stopped = controller.signal.aborted ? (controller.signal.reason as RunStopped) : null;
          adapters.telemetry.metric('StepDuration', performance.now() - began, { ...this.properties(record), step, outcome: stepOutcome(stopped) });
          if (stopped !== null) return await this.finishStopped(record, stopped, log, step);
          return await this.finishFailed(record, step, asDeployError(error), delivery, log);
        }
        // Written with the next step's start (or the deployment's completion): `record` stays the
        // stored version, and the next step sees this output in the record that write returns.
        carried = [{ type: 'step_completed', step, output }];
        adapters.telemetry.metric('StepDuration', performance.now() - began, { ...this.properties(record), step, outcome: 'completed' satisfies StepOutcome });
      }

      if (controller.signal.aborted) return await this.finishStopped(await flush(), controller.signal.reason as RunStopped, log);
      const deployed = record.steps.deploy.output;
      const built = record.steps.build.output;
      const completed: DeploymentEvent = {
        type: 'completed',
        result: {
          image: recordedImage(built),
          revision: (deployed.revision as string | null) ?? null,
          url: (deployed.url as string | null) ?? null,
        },
      };
      try {
        const events = [...carried, completed];
        // Whoever sees the deployment completed finds every step's lines in its log.
        await log.flush();
        record = await this.update(ref, job.attempt, () => events, record);
        carried = [];
      } catch (error) {
        // A cancel that landed after the last step still wins: the new revision is rolled back.
        if (error instanceof DeployError && error.code === 'INVALID_STATE') {
          const current = await flush().then(() => adapters.store.get(ref));
          if (current?.cancelRequested === true) return await this.finishStopped(current, new RunStopped('cancel', 'cancelled'), log);
        }
        throw error;
      }
      log.write(null, `deployment completed: ${record.result.url ?? ''}`);
      adapters.telemetry.event('DeploymentCompleted', { ...this.properties(record), url: record.result.url ?? '' });
      adapters.telemetry.metric('DeploymentDuration', clock().getTime() - startedAt, this.properties(record));
      return { action: 'complete' };
    } catch (error) {
      if (error instanceof OwnershipLost) {
        logger.warn({ deploymentId: job.deploymentId }, 'deployment moved on while running; leaving it');
        return { action: 'none' };
      }
      throw error;
    } finally {
      for (const timer of timers) clearTimeout(timer);
      delivery.signal.removeEventListener('abort', onOuterAbort);
      await log.close();
    }
  }

  private properties(record: DeploymentRecord): Record<DeploymentDimension, string> {
    return { deploymentId: record.id, orgId: record.orgId, projectId: record.projectId, environment: record.environment };
  }

  /** Re-reads the record now and then; a cancel request (or a takeover) stops the run. */
  private watchForCancel(ref: DeploymentRef, attempt: number, onCancel: () => void, onLost: (why: string) => void): NodeJS.Timeout {
    const timer = setInterval(() => {
      void this.options.adapters.store.get(ref).then(
        (current) => {
          if (current === null || current.attempt !== attempt || isTerminal(current.status)) onLost('the deployment moved on');
          else if (current.cancelRequested) onCancel();
        },
        () => undefined,
      );
    }, this.options.cancelPollMs ?? 250);
    timer.unref();
    return timer;
  }

  private async finishStopped(record: DeploymentRecord, stopped: RunStopped, log: DeploymentLog, step?: StepName): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const { telemetry } = this.options.adapters;
    switch (stopped.reason) {
      case 'lost':
        return { action: 'none' };
      case 'shutdown':
        if (step !== undefined) {
          await this.update(ref, record.attempt, () => [{ type: 'step_deferred', step, error: 'the worker stopped; the step runs again on the next delivery' }]);
        }
        log.write(step ?? null, 'worker stopping: the deployment resumes on another delivery', 'warn');
        return { action: 'release' };
      case 'cancel': {
        if (step !== undefined) record = await this.update(ref, record.attempt, () => [{ type: 'step_cancelled', step }]);
        log.write(step ?? null, 'cancel requested: removing what this deployment created', 'warn');
        record = await this.compensate(record, log);
        await log.flush();
        record = await this.update(ref, record.attempt, () => [{ type: 'cancelled' }]);
        log.write(null, 'deployment cancelled');
        telemetry.event('DeploymentCancelled', { ...this.properties(record), step: step ?? '' });
        return { action: 'complete' };
      }
      case 'timeout': {
        const error = new DeployError('TIMEOUT', `The deployment did not finish within ${this.options.settings.deploymentTimeoutMs} ms`);
        return this.fail(record, step ?? null, error, log);
      }
    }
  }

  private async finishFailed(record: DeploymentRecord, step: StepName, error: DeployError, delivery: Delivery, log: DeploymentLog): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    if (error.retryable && delivery.deliveryCount < delivery.maxDeliveryCount) {
      const delayMs = backoffMs(delivery.deliveryCount);
      await this.update(ref, record.attempt, () => [{ type: 'step_deferred', step, error: `${error.message} (retrying in ${Math.round(delayMs / 1000)} s)` }]);
      log.write(step, `${error.message}; retrying in ${Math.round(delayMs / 1000)} s (delivery ${delivery.deliveryCount} of ${delivery.maxDeliveryCount})`, 'warn');
      this.options.logger.warn({ deploymentId: record.id, step, code: error.code, delayMs }, 'transient failure; retrying');
      return { action: 'retry', delayMs };
    }
    const final = error.retryable ? new DeployError('RETRIES_EXHAUSTED', `${error.message} (gave up after ${delivery.deliveryCount} deliveries)`) : error;
    return this.fail(record, step, final, log);
  }

  /** Marks the step failed, compensates, and ends the deployment as failed with the error's code. */
  async fail(record: DeploymentRecord, step: StepName | null, error: DeployError, log: DeploymentLog): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    if (step !== null && record.steps[step].status === 'in_progress') {
      record = await this.update(ref, record.attempt, () => [{ type: 'step_failed', step, error: error.message }]);
    }
    log.write(step, `${error.code}: ${error.message}`, 'error');
    record = await this.compensate(record, log);
    // The error and what compensation did are in the log before the deployment shows as failed.
    await log.flush();
    record = await this.update(ref, record.attempt, () => [{ type: 'failed', error: { code: error.code, message: error.message, step } }]);
    this.options.adapters.telemetry.event('DeploymentFailed', { ...this.properties(record), errorCode: error.code, step: step ?? '' });
    this.options.logger.info({ deploymentId: record.id, code: error.code, step }, 'deployment failed');
    return { action: 'complete' };
  }

  /** Undoes, newest first, every step of this attempt that ran; failures are logged, never thrown. */
  private async compensate(record: DeploymentRecord, log: DeploymentLog): Promise<DeploymentRecord> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const signal = AbortSignal.timeout(this.options.compensationTimeoutMs ?? 120_000);
    for (const step of [...STEPS].reverse()) {
      const state = record.steps[step];
      if (state.status === 'pending') continue;
      const implementation = this.stepsByName.get(step);
      if (implementation?.compensate === undefined) continue;
      const context: StepContext = { record, adapters: this.options.adapters, signal, log: log.sink(step), settings: this.options.settings };
      try {
        await implementation.compensate(context, state.output);
        record = await this.update(ref, record.attempt, () => [{ type: 'step_rolled_back', step }]);
      } catch (error) {
        if (error instanceof OwnershipLost) throw error;
        log.write(step, `could not undo ${step}: ${asDeployError(error).message}`, 'error');
        this.options.logger.error({ err: error, deploymentId: record.id, step }, 'compensation failed');
      }
    }
    return record;
  }

  /**
   * Ends a deployment whose attempt ran past its timeout without a worker (its job was lost or
   * dead-lettered): the sweeper calls this.
   */
  async expire(record: DeploymentRecord): Promise<void> {
    const log = new DeploymentLog({
      artifacts: this.options.adapters.artifacts,
      deploymentId: record.id,
      secrets: Object.values(await this.options.adapters.secrets.get(record.id)),
      logger: this.options.logger,
    });
    try {
      const step = record.currentStep !== null && record.steps[record.currentStep].status === 'in_progress' ? record.currentStep : null;
      await this.fail(record, step, new DeployError('TIMEOUT', `The deployment did not finish within ${this.options.settings.deploymentTimeoutMs} ms`), log);
    } catch (error) {
      if (!(error instanceof OwnershipLost)) throw error;
    } finally {
      await log.close();
    }
  }
}
