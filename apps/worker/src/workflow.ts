import type { Clock, DeploymentDimension, DeploymentEvent, DeploymentRecord, DeploymentRef, JobMessage, Logger, StepName, StepOutcome, WorkerAdapters } from '@zepid/core';
import { apply, asDeployError, backoffMs, DeployError, firstUnfinishedStep, isStepDone, isTerminal, kindOf, LEASE_LOST, STEPS, supersededBy, updateDeployment } from '@zepid/core';
import { DeploymentLog } from './deployment-log.ts';
import { Lease } from './lease.ts';
import { recordedImage } from './steps/deploy.ts';
import type { Step, StepContext, StepOutput, WorkerSettings } from './steps/step.ts';

/** What the consumer does with the message once a run ends. */
export type Settlement =
  | { action: 'complete' }
  /** Transient failure: deliver again after a back-off. */
  | { action: 'retry'; delayMs: number }
  /** The worker is stopping: give the job back at once; the next delivery resumes. */
  | { action: 'release' }
  /** Someone else owns the deployment now (lost lock or lease): touch nothing. */
  | { action: 'none' };

/** Why a run was stopped from outside its steps. */
type StopReason = 'cancel' | 'timeout' | 'shutdown' | 'lost';

class RunStopped extends Error {
  readonly reason: StopReason;
  constructor(reason: StopReason, message: string) {
    super(message);
    this.reason = reason;
    // Adapters tell a lost lease from a cancel by the name alone (isLeaseLost): on a lost lease they
    // must not undo anything on the way out, since what they would undo is the new owner's now.
    if (reason === 'lost') this.name = LEASE_LOST;
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
  /** Runs once a deployment completed (image retention); must not throw. */
  afterCompleted?: (record: DeploymentRecord) => Promise<void>;
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

  /**
   * `known`: the record as this run last wrote it; the write is tried on it before reading again.
   * `lease`: once the run holds one, a record with another epoch is not this run's to write: the
   * etag makes the check and the write one atomic step, so a fenced-off run can never write the record.
   */
  private async update(
    ref: DeploymentRef,
    attempt: number,
    events: (current: DeploymentRecord) => DeploymentEvent[] | null,
    known?: DeploymentRecord,
    lease?: Lease,
  ) {
    const written = await updateDeployment(
      this.options.adapters.store,
      ref,
      (current) => {
        if (current.attempt !== attempt || isTerminal(current.status)) throw new OwnershipLost(`deployment ${ref.deploymentId} moved on`);
        if (lease !== undefined && !lease.owns(current)) throw new OwnershipLost(`deployment ${ref.deploymentId} was taken over (lease ${current.lease})`);
        return events(current);
      },
      this.options.clock,
      known,
    );
    // This run ended the deployment: the periodic check must not take that for a takeover.
    if (isTerminal(written.status)) lease?.release();
    return written;
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
    const lease = new Lease({
      store: adapters.store,
      ref,
      attempt: job.attempt,
      logger,
      onLost: (why) => {
        log.silence();
        stop('lost', why);
      },
    });
    // A lost job lock counts as a lost lease even before anyone takes the deployment over: the next
    // delivery may be starting right now, and must find nothing undone under it.
    const onOuterAbort = () => (delivery.signal.reason === 'lost' ? lease.lose('the job lock was lost') : stop('shutdown', 'the worker is stopping'));
    delivery.signal.addEventListener('abort', onOuterAbort, { once: true });
    const update = (events: (current: DeploymentRecord) => DeploymentEvent[] | null, known?: DeploymentRecord) =>
      this.update(ref, job.attempt, events, known, lease);

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
      lease.take(record);
      if (record.cancelRequested) return await this.finishStopped(record, new RunStopped('cancel', 'cancelled'), log, lease);

      const startedAt = Date.parse(record.attemptStartedAt ?? record.updatedAt);
      const remaining = startedAt + settings.deploymentTimeoutMs - clock().getTime();
      const resumeAt = firstUnfinishedStep(record.steps);
      log.write(null, `attempt ${record.attempt} ${delivery.deliveryCount > 1 || record.attempt > 1 ? `resumes at ${resumeAt ?? 'the end'}` : 'started'}`);
      if (record.attempt === 1 && delivery.deliveryCount === 1) {
        adapters.telemetry.metric('QueueWait', startedAt - Date.parse(record.createdAt), this.properties(record));
      }
      if (remaining <= 0) stop('timeout', `the deployment did not finish within ${settings.deploymentTimeoutMs} ms`);
      else timers.push(setTimeout(() => stop('timeout', `the deployment did not finish within ${settings.deploymentTimeoutMs} ms`), remaining));
      timers.push(this.watchForCancel(ref, lease, () => stop('cancel', 'cancelled')));

      // A newer deployment of the app went live while this one waited (queued, or in a back-off):
      // this one can never take the traffic, so it ends here, before building anything.
      if (record.steps.deploy.status !== 'completed') {
        const newer = supersededBy(record, await adapters.store.latestCompleted(record.orgId, record.appName), { explicitRollback: kindOf(record) === 'rollback' });
        const begun = record.currentStep !== null && record.steps[record.currentStep].status === 'in_progress' ? record.currentStep : null;
        if (newer !== null) return await this.supersede(record, begun, supersededError(record, newer), log, lease);
      }

      /** The last step's completion, not yet written: it goes with the next write. */
      let carried: DeploymentEvent[] = [];
      const flush = async () => {
        if (carried.length > 0) record = await update(() => carried, record);
        carried = [];
        return record;
      };
      for (const step of STEPS) {
        if (isStepDone(record.steps[step].status) || carried.some((event) => 'step' in event && event.step === step)) continue;
        if (controller.signal.aborted) {
          // The step started with the previous write (if any) has not begun its work: not "in" it.
          const begun = record.steps[step].status === 'in_progress' ? step : undefined;
          return await this.finishStopped(await flush(), controller.signal.reason as RunStopped, log, lease, begun);
        }
        const implementation = this.stepsByName.get(step);
        if (implementation === undefined) throw new Error(`no implementation of step ${step}`);
        // A step that does not apply (nothing to build) ends skipped, written with the next write.
        // It sees the record as the carried events will make it (validate's output above all).
        const preview = implementation.skip === undefined ? record : carried.reduce((current, event) => apply(current, event, clock()), record);
        const skipped = implementation.skip?.({ record: preview, adapters, signal: controller.signal, log: log.sink(step), settings, fence: lease.check }) ?? null;
        if (skipped !== null) {
          carried = [...carried, { type: 'step_skipped', step, output: skipped }];
          continue;
        }
        if (record.steps[step].status !== 'in_progress' || carried.length > 0) {
          const events: DeploymentEvent[] = [...carried, { type: 'step_started', step }];
          record = await update(() => events, record);
          carried = [];
        }
        const stepLog = log.sink(step);
        const began = performance.now();
        let output: StepOutput;
        try {
          output = await implementation.invoke({ record, adapters, signal: controller.signal, log: stepLog, settings, fence: lease.check });
        } catch (error) {
          // Failed and stopped steps are timed too: the dashboard's step durations would otherwise hide
          // the slow ones that end in a timeout.
          const stopped = controller.signal.aborted ? (controller.signal.reason as RunStopped) : null;
          adapters.telemetry.metric('StepDuration', performance.now() - began, { ...this.properties(record), step, outcome: stepOutcome(stopped) });
          if (stopped !== null) return await this.finishStopped(record, stopped, log, lease, step);
          return await this.finishFailed(record, step, asDeployError(error), delivery, log, lease);
        }
        // Written with the next step's start (or the deployment's completion): `record` stays the
        // stored version, and the next step sees this output in the record that write returns.
        carried = [{ type: 'step_completed', step, output }];
        adapters.telemetry.metric('StepDuration', performance.now() - began, { ...this.properties(record), step, outcome: 'completed' satisfies StepOutcome });
      }

      if (controller.signal.aborted) return await this.finishStopped(await flush(), controller.signal.reason as RunStopped, log, lease);
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
        record = await update(() => events, record);
        carried = [];
      } catch (error) {
        // A cancel that landed after the last step still wins: the new revision is rolled back.
        if (error instanceof DeployError && error.code === 'INVALID_STATE') {
          const current = await flush().then(() => adapters.store.get(ref));
          if (current?.cancelRequested === true) return await this.finishStopped(current, new RunStopped('cancel', 'cancelled'), log, lease);
        }
        throw error;
      }
      log.write(null, `deployment completed: ${record.result.url ?? ''}`);
      adapters.telemetry.event('DeploymentCompleted', { ...this.properties(record), url: record.result.url ?? '' });
      adapters.telemetry.metric('DeploymentDuration', clock().getTime() - startedAt, this.properties(record));
      const kind = kindOf(record);
      if (kind === 'rollback') adapters.telemetry.event('AppRolledBack', { ...this.properties(record), rollbackOf: record.rollbackOf ?? '', url: record.result.url ?? '' });
      if (kind === 'config') adapters.telemetry.event('AppEnvChanged', { ...this.properties(record), imageOf: record.imageOf ?? '', url: record.result.url ?? '' });
      await this.options.afterCompleted?.(record);
      return { action: 'complete' };
    } catch (error) {
      if (error instanceof OwnershipLost) {
        lease.lose(error.message);
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

  /**
   * Re-reads the record now and then; a cancel request (or a takeover: a new attempt, an end, another
   * delivery's lease) stops the run. Between two looks the run is stopped by its own checks: every side
   * effect asks the lease first.
   */
  private watchForCancel(ref: DeploymentRef, lease: Lease, onCancel: () => void): NodeJS.Timeout {
    const timer = setInterval(() => {
      void this.options.adapters.store.get(ref).then(
        (current) => {
          if (!lease.owns(current)) lease.lose('the deployment moved on (seen by the periodic check)');
          else if (current?.cancelRequested === true) onCancel();
        },
        () => undefined,
      );
    }, this.options.cancelPollMs ?? 250);
    timer.unref();
    return timer;
  }

  private async finishStopped(record: DeploymentRecord, stopped: RunStopped, log: DeploymentLog, lease: Lease, step?: StepName): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const { telemetry } = this.options.adapters;
    switch (stopped.reason) {
      case 'lost':
        // No compensation, no record write: what this run created is the owning delivery's now.
        return { action: 'none' };
      case 'shutdown':
        if (step !== undefined) {
          await this.update(ref, record.attempt, () => [{ type: 'step_deferred', step, error: 'the worker stopped; the step runs again on the next delivery' }], undefined, lease);
        }
        log.write(step ?? null, 'worker stopping: the deployment resumes on another delivery', 'warn');
        return { action: 'release' };
      case 'cancel': {
        if (step !== undefined) record = await this.update(ref, record.attempt, () => [{ type: 'step_cancelled', step }], undefined, lease);
        log.write(step ?? null, 'cancel requested: removing what this deployment created', 'warn');
        record = await this.compensate(record, log, lease);
        await log.flush();
        record = await this.update(ref, record.attempt, () => [{ type: 'cancelled' }], undefined, lease);
        log.write(null, 'deployment cancelled');
        telemetry.event('DeploymentCancelled', { ...this.properties(record), step: step ?? '' });
        return { action: 'complete' };
      }
      case 'timeout': {
        const error = new DeployError('TIMEOUT', `The deployment did not finish within ${this.options.settings.deploymentTimeoutMs} ms`);
        return this.fail(record, step ?? null, error, log, lease);
      }
    }
  }

  private async finishFailed(record: DeploymentRecord, step: StepName, error: DeployError, delivery: Delivery, log: DeploymentLog, lease: Lease): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    if (error.code === 'SUPERSEDED') return this.supersede(record, step, error, log, lease);
    if (error.retryable && delivery.deliveryCount < delivery.maxDeliveryCount) {
      const delayMs = backoffMs(delivery.deliveryCount);
      await this.update(
        ref,
        record.attempt,
        () => [{ type: 'step_deferred', step, error: `${error.message} (retrying in ${Math.round(delayMs / 1000)} s)` }],
        undefined,
        lease,
      );
      log.write(step, `${error.message}; retrying in ${Math.round(delayMs / 1000)} s (delivery ${delivery.deliveryCount} of ${delivery.maxDeliveryCount})`, 'warn');
      this.options.logger.warn({ deploymentId: record.id, step, code: error.code, delayMs }, 'transient failure; retrying');
      return { action: 'retry', delayMs };
    }
    const final = error.retryable ? new DeployError('RETRIES_EXHAUSTED', `${error.message} (gave up after ${delivery.deliveryCount} deliveries)`) : error;
    return this.fail(record, step, final, log, lease);
  }

  /**
   * Ends a deployment that a newer live one supersedes: the step that found out (if any) failed with
   * SUPERSEDED, what this deployment created is removed (its image never goes live; rollback targets
   * deployments that were live), and the deployment ends `superseded`. Traffic was never moved.
   */
  private async supersede(record: DeploymentRecord, step: StepName | null, error: DeployError, log: DeploymentLog, lease: Lease): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    if (step !== null && record.steps[step].status === 'in_progress') {
      record = await this.update(ref, record.attempt, () => [{ type: 'step_failed', step, error: error.message }], undefined, lease);
    }
    log.write(step, `superseded: ${error.message}`, 'warn');
    record = await this.compensate(record, log, lease);
    await log.flush();
    record = await this.update(ref, record.attempt, () => [{ type: 'superseded', error: { code: 'SUPERSEDED', message: error.message, step } }], undefined, lease);
    this.options.adapters.telemetry.event('DeploymentSuperseded', { ...this.properties(record), step: step ?? '' });
    this.options.logger.info({ deploymentId: record.id, step }, 'deployment superseded by a newer live deployment');
    return { action: 'complete' };
  }

  /** Marks the step failed, compensates, and ends the deployment as failed with the error's code. */
  async fail(record: DeploymentRecord, step: StepName | null, error: DeployError, log: DeploymentLog, lease: Lease): Promise<Settlement> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    if (step !== null && record.steps[step].status === 'in_progress') {
      record = await this.update(ref, record.attempt, () => [{ type: 'step_failed', step, error: error.message }], undefined, lease);
    }
    log.write(step, `${error.code}: ${error.message}`, 'error');
    record = await this.compensate(record, log, lease);
    // The error and what compensation did are in the log before the deployment shows as failed.
    await log.flush();
    record = await this.update(ref, record.attempt, () => [{ type: 'failed', error: { code: error.code, message: error.message, step } }], undefined, lease);
    this.options.adapters.telemetry.event('DeploymentFailed', { ...this.properties(record), errorCode: error.code, step: step ?? '' });
    this.options.logger.info({ deploymentId: record.id, code: error.code, step }, 'deployment failed');
    return { action: 'complete' };
  }

  /**
   * Undoes, newest first, every step of this attempt that ran; failures are logged, never thrown. Only
   * while the run holds its lease: a run that lost it undoes nothing, since what it would undo (a build
   * container group, a revision) is what the owning delivery is using.
   */
  private async compensate(record: DeploymentRecord, log: DeploymentLog, lease: Lease): Promise<DeploymentRecord> {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const signal = AbortSignal.timeout(this.options.compensationTimeoutMs ?? 120_000);
    for (const step of [...STEPS].reverse()) {
      const state = record.steps[step];
      // A skipped step created nothing (a rollback's reused image above all stays).
      if (state.status === 'pending' || state.status === 'skipped') continue;
      const implementation = this.stepsByName.get(step);
      if (implementation?.compensate === undefined) continue;
      const context: StepContext = { record, adapters: this.options.adapters, signal, log: log.sink(step), settings: this.options.settings, fence: lease.check };
      if (!(await lease.check(`undoing the ${step} step`))) throw new OwnershipLost(`deployment ${ref.deploymentId} was taken over`);
      try {
        await implementation.compensate(context, state.output);
        record = await this.update(ref, record.attempt, () => [{ type: 'step_rolled_back', step }], undefined, lease);
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
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const lease = new Lease({ store: this.options.adapters.store, ref, attempt: record.attempt, logger: this.options.logger, onLost: () => log.silence() });
    try {
      // The sweeper takes the deployment over before undoing anything: should the silent worker wake
      // up, it finds itself fenced off instead of undoing what the sweeper is undoing.
      record = await this.update(ref, record.attempt, () => [{ type: 'lease_taken' }], record);
      lease.take(record);
      const step = record.currentStep !== null && record.steps[record.currentStep].status === 'in_progress' ? record.currentStep : null;
      await this.fail(record, step, new DeployError('TIMEOUT', `The deployment did not finish within ${this.options.settings.deploymentTimeoutMs} ms`), log, lease);
    } catch (error) {
      if (!(error instanceof OwnershipLost)) throw error;
    } finally {
      await log.close();
    }
  }
}

function supersededError(record: DeploymentRecord, live: DeploymentRecord): DeployError {
  return new DeployError(
    'SUPERSEDED',
    `${live.id}, submitted after this deployment, is already live on ${record.appName}; an app's live deployment only moves forward, so this one does not take the traffic`,
    { details: { liveDeploymentId: live.id } },
  );
}
