import type { CreateOptions, DeploymentIntake, DeploymentRecord, JobMessage } from '@zepid/core';
import { apply, publishOptionsFor, quotaExceeded } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { Doorbell } from './doorbell.ts';
import { insertJob } from './queue.ts';
import { activeCount, insertDeployment, replaceDeployment } from './store.ts';

/**
 * Local intake: the record and its job are written in one SQLite transaction, so a deployment is
 * never recorded without its job (nor the reverse), whatever happens to the process.
 */
export class SqliteIntake implements DeploymentIntake {
  private readonly db: SqliteDatabase;
  private readonly doorbell: Doorbell;
  private readonly now: () => Date;

  /** `doorbell`: the queue's (see createLocalAdapters); by default the file beside the database. */
  constructor(db: SqliteDatabase, doorbell: Doorbell = Doorbell.beside(db.path), now: () => Date = () => new Date()) {
    this.db = db;
    this.doorbell = doorbell;
    this.now = now;
  }

  /**
   * Group commit (SqliteDatabase.batch): concurrent submissions share one transaction, each in its
   * own savepoint, and each answers after the commit. Then the doorbell, once per commit however
   * many jobs it carried: the worker learns of them now instead of on its next look.
   */
  private write(fn: () => DeploymentRecord): Promise<DeploymentRecord> {
    return this.db.batch(fn, this.ring);
  }

  private readonly ring = () => this.doorbell.ring();

  submit(record: DeploymentRecord, job: JobMessage, options: CreateOptions): Promise<DeploymentRecord> {
    return this.write(() => {
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
