import { hostname } from 'node:os';
import type { DeploymentStore, JobQueue, Logger } from '@zepid/core';
import { reconcileOutbox, SERVICE_VERSION } from '@zepid/core';
import type { ImageRetention } from './retention.ts';
import type { Workflow } from './workflow.ts';

export interface MaintenanceOptions {
  store: DeploymentStore;
  queue: JobQueue;
  workflow: Workflow;
  /** Image retention: projects whose run after a completion failed are run again here. */
  retention?: ImageRetention;
  logger: Logger;
  workerId: string;
  capacity: number;
  running: () => number;
  deploymentTimeoutMs: number;
  intervalMs?: number;
  /** A queued record unpublished for this long gets its job published again (outbox). */
  outboxGraceMs?: number;
}

/**
 * The worker's background duties, every few seconds:
 * - heartbeat, so /health/detailed can tell a worker is alive;
 * - outbox: publish jobs whose publish was never confirmed (API died between record and job);
 * - timeout sweep: a deployment whose attempt ran well past its timeout with no worker on it (its
 *   job was lost or dead-lettered after a crash) is failed with TIMEOUT and compensated;
 * - image retention (KEEP_IMAGES_PER_APP) of projects whose run after a completion failed.
 */
export class Maintenance {
  private readonly options: MaintenanceOptions;
  private readonly startedAt = new Date().toISOString();
  private timer: NodeJS.Timeout | null = null;
  private tick: Promise<void> = Promise.resolve();

  constructor(options: MaintenanceOptions) {
    this.options = options;
  }

  start(): void {
    const every = this.options.intervalMs ?? 5000;
    this.tick = this.runOnce();
    this.timer = setInterval(() => {
      this.tick = this.tick.then(() => this.runOnce());
    }, every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.tick;
  }

  async runOnce(): Promise<void> {
    const { store, queue, workflow, logger } = this.options;
    try {
      await store.recordHeartbeat({
        workerId: this.options.workerId,
        host: hostname(),
        version: SERVICE_VERSION,
        startedAt: this.startedAt,
        lastSeenAt: new Date().toISOString(),
        running: this.options.running(),
        capacity: this.options.capacity,
      });
      const republished = await reconcileOutbox(store, queue, { graceMs: this.options.outboxGraceMs ?? 10_000, limit: 100 });
      if (republished > 0) logger.warn({ republished }, 'published jobs that never reached the queue');
      // Twice the timeout: the worker running it has had every chance to end it itself.
      const overdue = await store.listRunningStartedBefore(new Date(Date.now() - 2 * this.options.deploymentTimeoutMs - 60_000), 20);
      for (const record of overdue) {
        logger.warn({ deploymentId: record.id }, 'deployment ran past its timeout with no worker: failing it');
        await workflow.expire(record);
      }
      await this.options.retention?.runPending();
    } catch (error) {
      logger.warn({ err: error }, 'maintenance round failed; next round in a few seconds');
    }
  }
}
