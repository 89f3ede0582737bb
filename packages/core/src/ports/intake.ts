import type { DeploymentRecord, JobMessage } from '../deployment.ts';
import type { CreateOptions } from './store.ts';

/**
 * Intake: records a deployment (or its retry) and queues its job so that both happen, or neither
 * does, or a reconciler finishes the second. Locally one SQLite transaction writes both; with Cosmos
 * DB and Service Bus (no shared transaction) the record is written first with `publishedAt` null,
 * then the job, then `publishedAt`; a reconciler republishes what stayed unpublished, and duplicate
 * detection on the message id absorbs a double publish.
 */
export interface DeploymentIntake {
  submit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord>;
  /** `record` is the stored record after the `retried` event, with the etag it was read with. */
  resubmit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord>;
}
