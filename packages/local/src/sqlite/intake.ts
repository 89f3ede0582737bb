import type { ChangeSignal, CreateOptions, DeploymentIntake, DeploymentRecord, IntakeSource, JobMessage } from '@zepid/core';
import { apply, DEPLOYMENT_ID_PATTERN, publishOptionsFor, quotaExceeded, SourceWindowPassed } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { Doorbell } from './doorbell.ts';
import { insertManifest } from './manifests.ts';
import { insertJob } from './queue.ts';
import { activeCount, insertDeployment, replaceDeployment } from './store.ts';

const ID = new RegExp(DEPLOYMENT_ID_PATTERN);

/**
 * Local intake: the record and its job (and a new deployment's source manifest) are written in one
 * SQLite transaction, so a deployment is never recorded without its job or manifest (nor the
 * reverse), whatever happens to the process.
 */
export class SqliteIntake implements DeploymentIntake {
  private readonly db: SqliteDatabase;
  private readonly doorbell: Doorbell;
  private readonly changes: ChangeSignal | null;
  private readonly now: () => Date;

  /**
   * `doorbell`: the queue's (see createLocalAdapters); by default the file beside the database.
   * `changes`: the followers' change signal (SSE), rung with the doorbell once per commit.
   */
  constructor(db: SqliteDatabase, doorbell: Doorbell = Doorbell.beside(db.path), now: () => Date = () => new Date(), changes: ChangeSignal | null = null) {
    this.db = db;
    this.doorbell = doorbell;
    this.now = now;
    this.changes = changes;
  }

  /**
   * Group commit (SqliteDatabase.batch): concurrent submissions share one transaction, each in its
   * own savepoint, and each answers after the commit. Then the doorbell and the change signal, once
   * per commit however many deployments it carried (a file touch each: fifty POSTs used to touch the
   * change file fifty times): the worker and the followers learn of them now instead of on their
   * next look.
   */
  private write(fn: () => DeploymentRecord): Promise<DeploymentRecord> {
    return this.db.batch(fn, this.ring);
  }

  private readonly ring = () => {
    this.doorbell.ring();
    this.changes?.ring();
  };
  /**
   * With `source`, the manifest is stored in the same savepoint as the record and the job: one
   * commit per POST /deploy instead of two (BENCHMARKS.md). The upload window is checked inside the
   * transaction, which commits right after this batch's savepoints.
   */
  submit(record: DeploymentRecord, job: JobMessage, options: CreateOptions, source?: IntakeSource): Promise<DeploymentRecord> {
    // The manifest's key is a deployment id, as the artifact store's putSource checks it.
    if (source !== undefined && !ID.test(record.id)) return Promise.reject(new Error(`not a deployment id: ${JSON.stringify(record.id)}`));
    return this.write(() => {
      if (source !== undefined) {
        if (performance.now() > source.storeBy) throw new SourceWindowPassed();
        insertManifest(this.db, record.orgId, record.id, source.manifest);
      }
      const published = apply(record, { type: 'published' }, this.now());
      const created = insertDeployment(this.db, published, options);
      insertJob(this.db, job, publishOptionsFor(job, record.projectId), Date.now());
      return created;
    });
  }

  resubmit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord> {
    return this.write(() => {
      // The stored record is still failed or cancelled here, so it is not among the active ones.
      const active = activeCount(this.db, record.orgId);
      if (active >= options.maxActivePerOrg) throw quotaExceeded(active, options.maxActivePerOrg);
      const stored = replaceDeployment(this.db, apply(record, { type: 'published' }, this.now()));
      insertJob(this.db, job, publishOptionsFor(job, record.projectId), Date.now());
      return stored;
    });
  }
}
