import { setTimeout as sleep } from 'node:timers/promises';
import type { AppJobMessage, DeploymentStore, JobMessage, JobQueue, Logger, QueuedJob, QueueMessage, Telemetry } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, ENVIRONMENTS, ID_PATTERN, isDeployError, isTerminal } from '@zepid/core';
import type { AppDeletion } from './app-deletion.ts';
import type { Settlement, Workflow } from './workflow.ts';

export interface ConsumerOptions {
  queue: JobQueue;
  store: DeploymentStore;
  workflow: Workflow;
  /** Runs delete-app jobs; without it they are dead-lettered as unknown (tests of deployments alone). */
  appDeletion?: AppDeletion;
  telemetry: Telemetry;
  logger: Logger;
  concurrency: number;
  /** How long in-flight deployments may run on after SIGTERM before they are released. */
  shutdownGraceMs: number;
}

const DEPLOYMENT_ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const ORG_ID = new RegExp(ID_PATTERN);
const PROJECT_ID = new RegExp(ID_PATTERN);

/** Reads a message body; null for anything that is not a job of ours (poison). */
export function parseJobMessage(body: unknown): JobMessage | null {
  if (body === null || typeof body !== 'object') return null;
  const candidate = body as Partial<JobMessage>;
  if (typeof candidate.deploymentId !== 'string' || !DEPLOYMENT_ID.test(candidate.deploymentId)) return null;
  if (typeof candidate.orgId !== 'string' || !ORG_ID.test(candidate.orgId)) return null;
  if (typeof candidate.attempt !== 'number' || !Number.isInteger(candidate.attempt) || candidate.attempt < 1) return null;
  const traceparent = typeof candidate.traceparent === 'string' ? candidate.traceparent : null;
  return { deploymentId: candidate.deploymentId, orgId: candidate.orgId, attempt: candidate.attempt, traceparent };
}

/** Reads a delete-app job's body (issue 12); null when malformed. */
export function parseAppJobMessage(body: unknown): AppJobMessage | null {
  if (body === null || typeof body !== 'object') return null;
  const candidate = body as Partial<AppJobMessage>;
  if (candidate.kind !== 'delete-app') return null;
  if (typeof candidate.orgId !== 'string' || !ORG_ID.test(candidate.orgId)) return null;
  if (typeof candidate.projectId !== 'string' || !PROJECT_ID.test(candidate.projectId)) return null;
  const environment = candidate.environment;
  if (environment !== null && !(typeof environment === 'string' && (ENVIRONMENTS as readonly string[]).includes(environment))) return null;
  if (typeof candidate.requestedAt !== 'string' || Number.isNaN(Date.parse(candidate.requestedAt))) return null;
  const traceparent = typeof candidate.traceparent === 'string' ? candidate.traceparent : null;
  return { kind: 'delete-app', orgId: candidate.orgId, projectId: candidate.projectId, environment: environment ?? null, requestedAt: candidate.requestedAt, traceparent };
}

/** Any message the queue carries: a deployment job (no kind, or `deployment`) or an app job; null for poison. */
export function parseQueueMessage(body: unknown): QueueMessage | null {
  if (body !== null && typeof body === 'object' && (body as { kind?: unknown }).kind === 'delete-app') return parseAppJobMessage(body);
  if (body !== null && typeof body === 'object' && (body as { kind?: unknown }).kind !== undefined && (body as { kind?: unknown }).kind !== 'deployment') return null;
  return parseJobMessage(body);
}

/**
 * Takes jobs off the queue, up to `concurrency` at once (the queue's sessions keep one project to
 * one job at a time), keeps each job's lock renewed while its deployment runs, and settles the
 * message as the workflow says. Poison messages go to the dead-letter queue with a reason.
 */
export class Consumer {
  private readonly options: ConsumerOptions;
  private readonly inFlight = new Map<string, { promise: Promise<void>; controller: AbortController }>();
  private readonly stopping = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(options: ConsumerOptions) {
    this.options = options;
  }

  get running(): number {
    return this.inFlight.size;
  }

  start(): void {
    this.loop ??= this.receiveLoop();
  }

  /** Takes no new jobs; waits for in-flight ones up to the grace, then releases the rest. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    const all = Promise.allSettled([...this.inFlight.values()].map((run) => run.promise));
    const grace = sleep(this.options.shutdownGraceMs, 'grace over', { ref: false });
    if ((await Promise.race([all, grace])) === 'grace over') {
      this.options.logger.warn({ running: this.inFlight.size }, 'shutdown grace over: releasing running deployments');
      for (const run of this.inFlight.values()) run.controller.abort('shutdown');
      await all;
    }
  }

  private async receiveLoop(): Promise<void> {
    const { queue, logger, concurrency } = this.options;
    while (!this.stopping.signal.aborted) {
      if (this.inFlight.size >= concurrency) {
        await Promise.race([...this.inFlight.values()].map((run) => run.promise));
        continue;
      }
      let job: QueuedJob | null;
      try {
        job = await queue.receive({ waitMs: 5000, signal: this.stopping.signal });
      } catch (error) {
        logger.warn({ err: error }, 'queue unavailable; trying again shortly');
        await sleep(1000, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        continue;
      }
      if (job === null) continue;
      const received = job;
      const controller = new AbortController();
      const promise = this.handle(received, controller).finally(() => this.inFlight.delete(received.messageId));
      this.inFlight.set(received.messageId, { promise, controller });
    }
  }

  private async handle(job: QueuedJob, controller: AbortController): Promise<void> {
    const { queue, store, workflow, logger, telemetry } = this.options;
    const parsed = parseQueueMessage(job.body);
    const log = logger.child({ messageId: job.messageId, deliveryCount: job.deliveryCount });
    try {
      if (parsed === null) {
        log.warn('malformed job message: dead-lettering');
        await queue.deadLetter(job, {
          reason: 'MALFORMED_MESSAGE',
          description: 'The body is neither {deploymentId, orgId, attempt, traceparent} nor {kind: "delete-app", orgId, projectId, environment, requestedAt, traceparent}',
        });
        return;
      }
      if (parsed.kind === 'delete-app') {
        await this.handleAppJob(job, parsed, controller);
        return;
      }
      const message = parsed;
      const record = await store.get({ orgId: message.orgId, deploymentId: message.deploymentId });
      if (record === null) {
        log.warn({ deploymentId: message.deploymentId }, 'job for an unknown deployment: dead-lettering');
        await queue.deadLetter(job, { reason: 'UNKNOWN_DEPLOYMENT', description: `No deployment ${message.deploymentId} in org ${message.orgId}` });
        return;
      }
      if (record.attempt !== message.attempt || isTerminal(record.status)) {
        // A job of an earlier attempt, or of a deployment that ended (e.g. cancelled while queued).
        await queue.complete(job);
        return;
      }
      const renewal = this.keepLocked(job, controller);
      let settlement: Settlement;
      try {
        settlement = await telemetry.withOperation('ProcessDeployment', message.traceparent, () =>
          workflow.run(message, { deliveryCount: job.deliveryCount, maxDeliveryCount: queue.maxDeliveryCount, signal: controller.signal }),
        );
      } finally {
        clearInterval(renewal);
      }
      await this.settle(job, settlement);
    } catch (error) {
      // Store or queue trouble mid-run: the record is intact; let the job come back after a pause.
      log.error({ err: error }, 'deployment run failed unexpectedly; the job will be delivered again');
      await queue.abandon(job, { delayMs: 5000 }).catch((abandonError: unknown) => log.warn({ err: abandonError }, 'could not abandon job'));
    }
  }

  private async handleAppJob(job: QueuedJob, message: AppJobMessage, controller: AbortController): Promise<void> {
    const { queue, telemetry, appDeletion } = this.options;
    if (appDeletion === undefined) {
      await queue.deadLetter(job, { reason: 'UNKNOWN_JOB', description: 'This worker runs no delete-app jobs' });
      return;
    }
    const renewal = this.keepLocked(job, controller);
    let settlement: Settlement;
    try {
      settlement = await telemetry.withOperation('ProcessAppJob', message.traceparent, () => appDeletion.run(message, job.messageId, controller.signal));
    } finally {
      clearInterval(renewal);
    }
    await this.settle(job, settlement);
  }

  private async settle(job: QueuedJob, settlement: Settlement): Promise<void> {
    const { queue } = this.options;
    try {
      if (settlement.action === 'complete') await queue.complete(job);
      else if (settlement.action === 'retry') await queue.abandon(job, { delayMs: settlement.delayMs });
      else if (settlement.action === 'release') await queue.abandon(job);
    } catch (error) {
      // A lost lock means another delivery owns the job now; nothing to settle.
      if (!isDeployError(error) || error.code !== 'CONCURRENT_UPDATE') throw error;
    }
  }

  /** Renews the lock at a third of its duration; a lost lock stops the run. */
  private keepLocked(job: QueuedJob, controller: AbortController): NodeJS.Timeout {
    const every = Math.max(200, Math.floor(this.options.queue.lockDurationMs / 3));
    const timer = setInterval(() => {
      this.options.queue.renewLock(job).catch((error: unknown) => {
        if (isDeployError(error) && error.code === 'CONCURRENT_UPDATE') {
          this.options.logger.warn({ messageId: job.messageId }, 'job lock lost; stopping this run');
          controller.abort('lost');
        }
      });
    }, every);
    timer.unref();
    return timer;
  }
}
