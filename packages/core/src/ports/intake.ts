import type { DeploymentRecord, JobMessage } from '../deployment.ts';
import type { CreateOptions } from './store.ts';

/**
 * A new deployment's source manifest (core's encodeSourceManifest), given to the intake to store
 * with the record: never after it, so a recorded deployment always has its manifest.
 */
export interface IntakeSource {
  manifest: Buffer;
  /**
   * A `performance.now()` past which the manifest may no longer be stored without its objects being
   * looked up again (the delete-app job's upload window, core's removeAppObjects): past it the
   * intake records nothing and throws SourceWindowPassed, and the caller stores the manifest,
   * checks its objects, then submits without it. `Infinity` when the objects need no check (a
   * manifest copied from a recorded deployment).
   */
  storeBy: number;
}

/** The intake's answer when an IntakeSource's `storeBy` had passed: see there. */
export class SourceWindowPassed extends Error {
  constructor() {
    super('the upload window passed before the manifest was stored; its objects must be looked up again');
    this.name = 'SourceWindowPassed';
  }
}

/**
 * Intake: records a deployment (or its retry) and queues its job so that both happen, or neither
 * does, or a reconciler finishes the second. Locally one SQLite transaction writes both, and the
 * source manifest with them; with Cosmos DB and Service Bus (no shared transaction) the manifest
 * goes to Blob storage first, then the record is written with `publishedAt` null, then the job, then
 * `publishedAt`; a reconciler republishes what stayed unpublished, and duplicate detection on the
 * message id absorbs a double publish.
 */
export interface DeploymentIntake {
  /** `source`: the manifest to store with the record (see IntakeSource); without it the caller stored it before. */
  submit(record: DeploymentRecord, job: JobMessage, options: CreateOptions, source?: IntakeSource): Promise<DeploymentRecord>;
  /** `record` is the stored record after the `retried` event, with the etag it was read with. */
  resubmit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord>;
}
