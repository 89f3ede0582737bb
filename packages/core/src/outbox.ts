import type { DeploymentRecord, JobMessage } from './deployment.ts';
import { jobFor } from './deployment.ts';
import { isDeployError, quotaExceeded } from './errors.ts';
import { messageIdFor } from './ids.ts';
import { projectKey } from './naming.ts';
import type { ArtifactStore } from './ports/artifacts.ts';
import type { DeploymentIntake, IntakeSource } from './ports/intake.ts';
import { SourceWindowPassed } from './ports/intake.ts';
import type { JobQueue } from './ports/queue.ts';
import type { CreateOptions, DeploymentStore } from './ports/store.ts';
import type { Clock } from './update.ts';
import { systemClock, updateDeployment } from './update.ts';

export function publishOptionsFor(job: JobMessage, projectId: string) {
  return { messageId: messageIdFor(job.deploymentId, job.attempt), sessionId: projectKey(job.orgId, projectId) };
}

async function markPublished(store: DeploymentStore, record: DeploymentRecord, clock: Clock): Promise<DeploymentRecord> {
  return updateDeployment(
    store,
    { orgId: record.orgId, deploymentId: record.id },
    (current) => (current.attempt === record.attempt && current.publishedAt === null && current.status === 'queued' ? [{ type: 'published' }] : null),
    clock,
  );
}

/**
 * Intake for a store and a queue that share no transaction (Cosmos DB + Service Bus): record first,
 * then the job, then `publishedAt`. Once the record is written the deployment is accepted: if the
 * publish fails (or the process dies right there), `reconcileOutbox` in the worker publishes the job
 * later, and the message id makes a double publish harmless. Answering an error after the record
 * exists would only invite the client to submit a second deployment. A source manifest given with
 * the record goes to the artifact store (Blob) before the record.
 */
export class OutboxIntake implements DeploymentIntake {
  private readonly store: DeploymentStore;
  private readonly queue: JobQueue;
  private readonly clock: Clock;
  private readonly onPublishFailure: (error: unknown, record: DeploymentRecord) => void;
  private readonly artifacts: ArtifactStore | null;

  /** `artifacts`: where a manifest given to `submit` is stored; without it such a submit fails. */
  constructor(
    store: DeploymentStore,
    queue: JobQueue,
    options: { clock?: Clock; onPublishFailure?: (error: unknown, record: DeploymentRecord) => void; artifacts?: ArtifactStore } = {},
  ) {
    this.store = store;
    this.queue = queue;
    this.artifacts = options.artifacts ?? null;
    this.clock = options.clock ?? systemClock;
    this.onPublishFailure = options.onPublishFailure ?? (() => undefined);
  }

  async submit(record: DeploymentRecord, job: JobMessage, options: CreateOptions, source?: IntakeSource): Promise<DeploymentRecord> {
    if (source !== undefined) {
      if (this.artifacts === null) throw new Error('OutboxIntake was given a source manifest but no artifact store to put it in');
      await this.artifacts.putSource({ orgId: record.orgId, deploymentId: record.id }, source.manifest);
      // Stored, but past the window: the caller looks the objects up again before anything is recorded.
      if (performance.now() > source.storeBy) throw new SourceWindowPassed();
    }
    const created = await this.store.create(record, options);
    return this.publish(created, job);
  }

  /** Publishes and marks the record; a failure leaves it for the outbox repair. */
  private async publish(stored: DeploymentRecord, job: JobMessage): Promise<DeploymentRecord> {
    try {
      await this.queue.publish(job, publishOptionsFor(job, stored.projectId));
      return await markPublished(this.store, stored, this.clock);
    } catch (error) {
      this.onPublishFailure(error, stored);
      return stored;
    }
  }

  async resubmit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord> {
    const active = await this.store.countActive(record.orgId);
    if (active >= options.maxActivePerOrg) throw quotaExceeded(active, options.maxActivePerOrg);
    const stored = await this.store.replace(record);
    return this.publish(stored, job);
  }
}

/**
 * Publishes the job of every queued deployment whose publish was not confirmed within `graceMs`.
 * Runs in the worker every few seconds; returns how many it republished.
 */
export async function reconcileOutbox(
  store: DeploymentStore,
  queue: JobQueue,
  options: { graceMs: number; limit: number },
  clock: Clock = systemClock,
): Promise<number> {
  const stale = await store.listUnpublished(new Date(clock().getTime() - options.graceMs), options.limit);
  let republished = 0;
  for (const record of stale) {
    const job = jobFor(record, null);
    await queue.publish(job, publishOptionsFor(job, record.projectId));
    try {
      await markPublished(store, record, clock);
    } catch (error) {
      // Moved on meanwhile (started, cancelled): its job was delivered or is no longer needed.
      if (!isDeployError(error) || error.code !== 'INVALID_STATE') throw error;
    }
    republished += 1;
  }
  return republished;
}
