import { randomBytes } from 'node:crypto';
import type { DeadLetteredJob, DependencyHealth, JobMessage, JobQueue, PublishOptions, QueueCounts, QueuedJob } from '@zepid/core';
import { DeployError, probe } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { runSqlite } from './database.ts';
import { Doorbell } from './doorbell.ts';

export interface SqliteQueueOptions {
  /** How long a received job stays locked without renewal (Service Bus default: 60 s). */
  lockDurationMs: number;
  /** Deliveries before a job is dead-lettered (MaxDeliveryCountExceeded). */
  maxDeliveryCount: number;
  /** How long a message id is remembered after completion, so a re-publish is dropped. */
  duplicateDetectionWindowMs: number;
  /**
   * A waiting `receive` is woken by the doorbell (see doorbell.ts) when a job becomes deliverable, and
   * sleeps exactly until the next scheduled job or expiring lock; it also looks this often in case a
   * ring from another process was missed (filesystems where watching a file is unreliable).
   */
  fallbackPollMs: number;
  /** Rung after every change that can make a job deliverable; default: the file beside the database. */
  doorbell?: Doorbell;
  now?: () => number;
}

export const DEFAULT_QUEUE_OPTIONS: SqliteQueueOptions = {
  lockDurationMs: 60_000,
  maxDeliveryCount: 10,
  duplicateDetectionWindowMs: 24 * 3600_000,
  fallbackPollMs: 1000,
};

interface JobRow {
  seq: number;
  message_id: string;
  session_id: string;
  body: string;
  enqueued_at: number;
  delivery_count: number;
}

interface LocalJob extends QueuedJob {
  readonly seq: number;
  readonly lockToken: string;
}

function parseBody(body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return body;
  }
}

/** Inserts a job inside the caller's transaction; a message id seen within the window is dropped. */
export function insertJob(db: SqliteDatabase, body: unknown, options: PublishOptions, now: number): boolean {
  const result = db.connection
    .prepare(
      `INSERT INTO jobs (message_id, session_id, body, state, enqueued_at, visible_at)
       VALUES (?, ?, ?, 'active', ?, ?) ON CONFLICT (message_id) DO NOTHING`,
    )
    .run(options.messageId, options.sessionId, typeof body === 'string' ? body : JSON.stringify(body), now, now + (options.delayMs ?? 0));
  return result.changes > 0;
}

/**
 * The embedded job queue: a SQLite table with Service Bus semantics (see the JobQueue port).
 * A session (project) with a locked job delivers nothing else until that job is settled.
 *
 * Receiving does not poll: every change that can make a job deliverable (publish, the intake's
 * submit, complete and dead-letter, which free the session's next job, abandon) rings the doorbell
 * after its commit, and a waiting receiver otherwise sleeps until the next scheduled job or expiring
 * lock, or the slow fallback poll.
 */
export class SqliteJobQueue implements JobQueue {
  readonly lockDurationMs: number;
  readonly maxDeliveryCount: number;
  private readonly db: SqliteDatabase;
  private readonly options: SqliteQueueOptions;
  private readonly now: () => number;
  private readonly doorbell: Doorbell;
  /** Aborted by close(): ends every waiting receive. */
  private closing = new AbortController();

  constructor(db: SqliteDatabase, options: Partial<SqliteQueueOptions> = {}) {
    this.db = db;
    this.options = { ...DEFAULT_QUEUE_OPTIONS, ...options };
    this.lockDurationMs = this.options.lockDurationMs;
    this.maxDeliveryCount = this.options.maxDeliveryCount;
    this.now = this.options.now ?? Date.now;
    this.doorbell = this.options.doorbell ?? Doorbell.beside(db.path);
  }

  start(): Promise<void> {
    this.db.open();
    if (this.closing.signal.aborted) this.closing = new AbortController();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closing.abort();
    this.doorbell.close();
    this.db.close();
    return Promise.resolve();
  }

  /** After a commit that can make a job deliverable: once per group commit however many writes it held. */
  private readonly ring = (): void => this.doorbell.ring();

  /**
   * Runs a write in the database's group commit (`SqliteDatabase.batch`: it shares the COMMIT with
   * the store's writes of the same turn, and waits for the write lock without blocking the event
   * loop) and rings the doorbell once it has committed.
   */
  private write<T>(fn: () => T): Promise<T> {
    return this.db.batch(fn, this.ring);
  }

  health(): Promise<DependencyHealth> {
    return probe(() => Promise.resolve(this.db.connection.prepare('SELECT COUNT(*) FROM jobs LIMIT 1').get()));
  }

  publish(body: JobMessage, options: PublishOptions): Promise<void> {
    return this.write(() => {
      this.forgetSettled();
      insertJob(this.db, body, options, this.now());
    });
  }

  async receive(options: { waitMs: number; signal?: AbortSignal }): Promise<QueuedJob | null> {
    const signal = options.signal === undefined ? this.closing.signal : AbortSignal.any([this.closing.signal, options.signal]);
    const deadline = this.now() + options.waitMs;
    for (;;) {
      if (this.closing.signal.aborted) return null;
      // Read before looking: a ring that comes while we look makes the wait below return at once.
      const seen = this.doorbell.rung;
      const job = await this.tryReceive();
      if (job !== null) return job;
      const now = this.now();
      if (signal.aborted || now >= deadline) return null;
      const due = await runSqlite(() => this.nextChangeAt(now));
      const wakeAt = Math.min(deadline, now + this.options.fallbackPollMs, due ?? Number.POSITIVE_INFINITY);
      await this.doorbell.wait(seen, Math.max(1, wakeAt - now), signal);
    }
  }

  /**
   * When the table changes by itself: the next scheduled job becomes visible, or the next lock expires
   * (its job comes back, and its session's other jobs are unblocked). Null when nothing is pending.
   */
  private nextChangeAt(now: number): number | null {
    const row = this.db.connection
      .prepare(
        `SELECT MIN(t) AS at FROM (
           SELECT MIN(visible_at) AS t FROM jobs WHERE state = 'active' AND visible_at > :now
           UNION ALL
           SELECT MIN(locked_until) AS t FROM jobs WHERE state = 'active' AND locked_until > :now)`,
      )
      .get({ now }) as { at: number | null } | undefined;
    return row?.at ?? null;
  }

  private async tryReceive(): Promise<LocalJob | null> {
    // A waiting receiver looks at every ring, and most rings have nothing for it (another receiver took
    // the job, or the session is busy): look without the write lock first, so these looks never queue
    // behind (or in front of) the API's writes when there is nothing to deliver.
    const candidate = await runSqlite(() =>
      this.db.connection
        .prepare(`SELECT 1 FROM jobs WHERE state = 'active' AND visible_at <= :now AND (locked_until IS NULL OR locked_until <= :now) LIMIT 1`)
        .get({ now: this.now() }),
    );
    if (candidate === undefined) return null;
    // In the group commit, without the doorbell: taking a lock makes nothing deliverable.
    return this.db.batch(() => {
      for (;;) {
        const now = this.now();
        // The oldest deliverable job whose session has nothing locked and nothing older waiting.
        const row = this.db.connection
          .prepare(
            `SELECT seq, message_id, session_id, body, enqueued_at, delivery_count FROM jobs j
             WHERE state = 'active' AND visible_at <= :now AND (locked_until IS NULL OR locked_until <= :now)
               AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.session_id = j.session_id AND k.state = 'active'
                               AND k.locked_until > :now)
               AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.session_id = j.session_id AND o.state = 'active'
                               AND o.visible_at <= :now AND o.seq < j.seq)
             ORDER BY visible_at, seq LIMIT 1`,
          )
          .get({ now }) as JobRow | undefined;
        if (row === undefined) return null;
        if (row.delivery_count >= this.maxDeliveryCount) {
          // Its last lock expired without a settlement: the delivery that crashed was the last allowed.
          this.settleDead(row.seq, 'MaxDeliveryCountExceeded', `Lock expired after ${row.delivery_count} deliveries`, now);
          continue;
        }
        const lockToken = randomBytes(12).toString('base64url');
        const lockedUntil = now + this.lockDurationMs;
        this.db.connection
          .prepare('UPDATE jobs SET lock_token = ?, locked_until = ?, delivery_count = delivery_count + 1 WHERE seq = ?')
          .run(lockToken, lockedUntil, row.seq);
        return {
          seq: row.seq,
          lockToken,
          messageId: row.message_id,
          sessionId: row.session_id,
          body: parseBody(row.body),
          deliveryCount: row.delivery_count + 1,
          enqueuedAt: new Date(row.enqueued_at),
          lockedUntil: new Date(lockedUntil),
        };
      }
    });
  }

  private locked(job: QueuedJob): LocalJob {
    const local = job as LocalJob;
    if (typeof local.seq !== 'number' || typeof local.lockToken !== 'string') throw new Error('not a job of this queue');
    return local;
  }

  private lockLost(job: QueuedJob): DeployError {
    return new DeployError('CONCURRENT_UPDATE', `The lock on job ${job.messageId} was lost (expired, or settled elsewhere)`);
  }

  /** Updates the job if this receiver still holds its lock. */
  private settle(job: QueuedJob, sql: string, ...params: (string | number | null)[]): void {
    const local = this.locked(job);
    const result = this.db.connection
      .prepare(`${sql} WHERE seq = ? AND lock_token = ? AND locked_until > ?`)
      .run(...params, local.seq, local.lockToken, this.now());
    if (result.changes === 0) throw this.lockLost(job);
  }

  private settleDead(seq: number, reason: string, description: string, now: number): void {
    this.db.connection
      .prepare(
        `UPDATE jobs SET state = 'dead', lock_token = NULL, locked_until = NULL, dead_reason = ?, dead_description = ?, settled_at = ?
         WHERE seq = ?`,
      )
      .run(reason, description.slice(0, 1024), now, seq);
  }

  async renewLock(job: QueuedJob): Promise<void> {
    const lockedUntil = await this.db.batch(() => {
      const until = this.now() + this.lockDurationMs;
      this.settle(job, 'UPDATE jobs SET locked_until = ?', until);
      return until;
    });
    job.lockedUntil = new Date(lockedUntil);
  }

  complete(job: QueuedJob): Promise<void> {
    // Frees the session: its next job becomes deliverable.
    return this.write(() =>
      this.settle(job, `UPDATE jobs SET state = 'done', lock_token = NULL, locked_until = NULL, settled_at = ?`, this.now()),
    );
  }

  abandon(job: QueuedJob, options: { delayMs?: number } = {}): Promise<void> {
    // Rung also with a delay: waiting receivers learn the new visible time and sleep until it.
    return this.write(() => {
      if (job.deliveryCount >= this.maxDeliveryCount) {
        this.settle(
          job,
          `UPDATE jobs SET state = 'dead', lock_token = NULL, locked_until = NULL, dead_reason = ?, dead_description = ?, settled_at = ?`,
          'MaxDeliveryCountExceeded',
          `Abandoned on delivery ${job.deliveryCount} of ${this.maxDeliveryCount}`,
          this.now(),
        );
        return;
      }
      this.settle(job, 'UPDATE jobs SET lock_token = NULL, locked_until = NULL, visible_at = ?', this.now() + (options.delayMs ?? 0));
    });
  }

  deadLetter(job: QueuedJob, reason: { reason: string; description: string }): Promise<void> {
    return this.write(() =>
      this.settle(
        job,
        `UPDATE jobs SET state = 'dead', lock_token = NULL, locked_until = NULL, dead_reason = ?, dead_description = ?, settled_at = ?`,
        reason.reason.slice(0, 128),
        reason.description.slice(0, 1024),
        this.now(),
      ),
    );
  }

  counts(): Promise<QueueCounts> {
    return runSqlite(() => {
      const row = this.db.connection
        .prepare(
          `SELECT
             COALESCE(SUM(CASE WHEN state = 'active' AND visible_at <= :now THEN 1 ELSE 0 END), 0) AS active,
             COALESCE(SUM(CASE WHEN state = 'active' AND visible_at > :now THEN 1 ELSE 0 END), 0) AS scheduled,
             COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) AS dead
           FROM jobs WHERE state IN ('active', 'dead')`,
        )
        .get({ now: this.now() }) as { active: number; scheduled: number; dead: number };
      return { active: row.active, scheduled: row.scheduled, deadLettered: row.dead };
    });
  }

  listDeadLettered(limit: number): Promise<DeadLetteredJob[]> {
    return runSqlite(() =>
      (
        this.db.connection
          .prepare(
            `SELECT message_id, dead_reason, dead_description, settled_at FROM jobs WHERE state = 'dead' ORDER BY settled_at DESC LIMIT ?`,
          )
          .all(limit) as { message_id: string; dead_reason: string; dead_description: string; settled_at: number }[]
      ).map((row) => ({
        messageId: row.message_id,
        reason: row.dead_reason,
        description: row.dead_description,
        deadLetteredAt: new Date(row.settled_at).toISOString(),
      })),
    );
  }

  /** Drops completed jobs older than the duplicate-detection window. */
  private forgetSettled(): void {
    this.db.connection
      .prepare(`DELETE FROM jobs WHERE state = 'done' AND settled_at < ?`)
      .run(this.now() - this.options.duplicateDetectionWindowMs);
  }
}
