import { setTimeout as sleep } from 'node:timers/promises';
import type { DeploymentStore, JobMessage, JobQueue, Logger, QueuedJob, Telemetry } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, ID_PATTERN, isDeployError, isTerminal } from '@zepid/core';
import type { Settlement, Workflow } from './workflow.ts';

export interface ConsumerOptions {
  queue: JobQueue;
  store: DeploymentStore;
  workflow: Workflow;
  telemetry: Telemetry;
  logger: Logger;
  concurrency: number;
  /** How long in-flight deployments may run on after SIGTERM before they are released. */
  shutdownGraceMs: number;
}

const DEPLOYMENT_ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const ORG_ID = new RegExp(ID_PATTERN);

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
    const message = parseJobMessage(job.body);
    const log = logger.child({ messageId: job.messageId, deliveryCount: job.deliveryCount });
    try {
      if (message === null) {
        log.warn('malformed job message: dead-lettering');
        await queue.deadLetter(job, { reason: 'MALFORMED_MESSAGE', description: 'The body is not {deploymentId, orgId, attempt, traceparent}' });
        return;
      }
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
