import type { AppRecord, AppRef, Environment } from '@zepid/core';
import type {
  CreateOptions,
  DependencyHealth,
  DeploymentRecord,
  DeploymentRef,
  DeploymentStatus,
  DeploymentStore,
  OutboxEvent,
  Page,
  PendingEvent,
  WorkerHeartbeat,
} from '@zepid/core';
import { DEPLOYMENT_STATUSES, DeployError, probe, quotaExceeded, secureRandomBytes, withoutOutbox } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { runSqlite } from './database.ts';
import { orgHasWebhook } from './webhooks.ts';

interface Row {
  doc: string;
  etag: string;
}

const newEtag = () => secureRandomBytes(9).toString('base64url');

function toRecord(row: Row): DeploymentRecord {
  return { ...(JSON.parse(row.doc) as DeploymentRecord), etag: row.etag };
}

function buildKeyOf(record: DeploymentRecord): string | null {
  const key = record.steps.validate.output.buildKey;
  return typeof key === 'string' ? key : null;
}

function columns(record: DeploymentRecord, etag: string) {
  // The events the write carries go to outbox_events (writeOutbox), not into the document.
  const { etag: _old, outbox: _events, ...doc } = record;
  return {
    id: record.id,
    org_id: record.orgId,
    project_id: record.projectId,
    app_name: record.appName,
    status: record.status,
    created_at: record.createdAt,
    updated_at: record.updatedAt,
    attempt_started_at: record.attemptStartedAt,
    finished_at: record.finishedAt,
    published_at: record.publishedAt,
    idempotency_key: record.idempotency?.key ?? null,
    build_key: buildKeyOf(record),
    etag,
    doc: JSON.stringify(doc),
  };
}

function encodeCursor(record: DeploymentRecord): string {
  return Buffer.from(JSON.stringify([record.createdAt, record.id])).toString('base64url');
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(value) && value.length === 2 && value.every((part) => typeof part === 'string')) return value as [string, string];
  } catch {
    // fall through
  }
  throw new DeployError('VALIDATION_ERROR', 'cursor is not one this service returned', { details: [{ field: 'cursor', message: 'is invalid' }] });
}

/** GET /apps' cursor: the last app name of the page. */
function decodeAppCursor(cursor: string): string {
  const name = Buffer.from(cursor, 'base64url').toString('utf8');
  if (name === '' || Buffer.from(name).toString('base64url') !== cursor) {
    throw new DeployError('VALIDATION_ERROR', 'cursor is not one this service returned', { details: [{ field: 'cursor', message: 'is invalid' }] });
  }
  return name;
}

/**
 * The webhook events a record's write carries, into the outbox table (migration 10), inside the
 * caller's transaction: committed with the record or not at all. An event written twice (a caller
 * writing a record it got back from an older write) is kept once. An org without any webhook at the
 * write's commit keeps none (`orgHasWebhook`, checked in the same transaction): they would fan out
 * to no one (a webhook receives the events of changes written after it was registered), and each
 * cost an insert here and a read and a delete in the dispatcher (issue 16).
 */
function writeOutbox(db: SqliteDatabase, record: DeploymentRecord): void {
  const events = record.outbox ?? [];
  if (events.length === 0 || !orgHasWebhook(db, record.orgId)) return;
  for (const event of events) {
    db.connection
      .prepare('INSERT OR IGNORE INTO outbox_events (event_id, org_id, deployment_id, project_id, event) VALUES (?, ?, ?, ?, ?)')
      .run(event.id, record.orgId, record.id, record.projectId, JSON.stringify(event));
  }
}

/** Queued plus in-progress deployments of an org: one row kept by triggers (migration 3). */
export function activeCount(db: SqliteDatabase, orgId: string): number {
  return (db.connection.prepare('SELECT n FROM active_counts WHERE org_id = ?').get(orgId) as { n: number } | undefined)?.n ?? 0;
}

/**
 * Inserts a record inside the caller's transaction after checking the org's active limit; the check
 * and the insert are atomic because the transaction holds SQLite's write lock.
 */
export function insertDeployment(db: SqliteDatabase, record: DeploymentRecord, options: CreateOptions): DeploymentRecord {
  const connection = db.connection;
  const active = { n: activeCount(db, record.orgId) };
  if (active.n >= options.maxActivePerOrg) throw quotaExceeded(active.n, options.maxActivePerOrg);
  const etag = newEtag();
  try {
    connection
      .prepare(
        `INSERT INTO deployments (id, org_id, project_id, app_name, status, created_at, updated_at, attempt_started_at, finished_at,
           published_at, idempotency_key, build_key, etag, doc)
         VALUES (:id, :org_id, :project_id, :app_name, :status, :created_at, :updated_at, :attempt_started_at, :finished_at,
           :published_at, :idempotency_key, :build_key, :etag, :doc)`,
      )
      .run(columns(record, etag));
  } catch (error) {
    if (error instanceof Error && /UNIQUE constraint failed/.test(error.message)) {
      throw new DeployError('CONFLICT', `Deployment ${record.id} or its idempotency key already exists`, { cause: error });
    }
    throw error;
  }
  writeOutbox(db, record);
  return { ...withoutOutbox(record), etag };
}

/** Conditional replace inside the caller's transaction. */
export function replaceDeployment(db: SqliteDatabase, record: DeploymentRecord): DeploymentRecord {
  const etag = newEtag();
  const values = columns(record, etag);
  const result = db.connection
    .prepare(
      `UPDATE deployments SET status = :status, updated_at = :updated_at, attempt_started_at = :attempt_started_at,
         finished_at = :finished_at, published_at = :published_at, build_key = :build_key, etag = :etag, doc = :doc
       WHERE id = :id AND org_id = :org_id AND etag = :expected`,
    )
    .run({
      status: values.status,
      updated_at: values.updated_at,
      attempt_started_at: values.attempt_started_at,
      finished_at: values.finished_at,
      published_at: values.published_at,
      build_key: values.build_key,
      etag,
      doc: values.doc,
      id: record.id,
      org_id: record.orgId,
      expected: record.etag,
    });
  if (result.changes === 0) {
    const exists = db.connection.prepare('SELECT 1 FROM deployments WHERE id = ? AND org_id = ?').get(record.id, record.orgId);
    if (exists === undefined) throw new DeployError('NOT_FOUND', `Deployment ${record.id} not found`);
    throw new DeployError('CONCURRENT_UPDATE', `Deployment ${record.id} changed since it was read`, { retryable: true });
  }
  writeOutbox(db, record);
  return { ...withoutOutbox(record), etag };
}

export class SqliteDeploymentStore implements DeploymentStore {
  private readonly db: SqliteDatabase;

  constructor(db: SqliteDatabase) {
    this.db = db;
  }

  start(): Promise<void> {
    this.db.open();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => Promise.resolve(this.db.connection.prepare('SELECT COUNT(*) FROM deployments LIMIT 1').get()));
  }

  create(record: DeploymentRecord, options: CreateOptions): Promise<DeploymentRecord> {
    return runSqlite(() => this.db.transaction(() => insertDeployment(this.db, record, options)));
  }

  get(ref: DeploymentRef): Promise<DeploymentRecord | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT doc, etag FROM deployments WHERE id = ? AND org_id = ?').get(ref.deploymentId, ref.orgId) as
        | Row
        | undefined;
      return row === undefined ? null : toRecord(row);
    });
  }

  etagOf(ref: DeploymentRef): Promise<string | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT etag FROM deployments WHERE id = ? AND org_id = ?').get(ref.deploymentId, ref.orgId) as
        | { etag: string }
        | undefined;
      return row?.etag ?? null;
    });
  }

  /** The database's commit mark (`SqliteDatabase.writeMark`): every table, every process. */
  writeMark(): string | null {
    return this.db.writeMark();
  }

  /**
   * In the group commit (`SqliteDatabase.batch`): the replaces of one event-loop turn (a worker running
   * 50 deployments at once writes several per turn) share one COMMIT, each in its own savepoint, and
   * each promise settles after that COMMIT. The worker's CPU per deployment at concurrency 50 went
   * 4.59 / 5.41 / 5.83 → 3.95 / 3.82 / 3.86 ms (BENCHMARKS.md); at concurrency 5 it did not move.
   */
  replace(record: DeploymentRecord): Promise<DeploymentRecord> {
    return this.db.batch(() => replaceDeployment(this.db, record));
  }

  delete(ref: DeploymentRef): Promise<void> {
    return runSqlite(() => {
      this.db.connection.prepare('DELETE FROM deployments WHERE id = ? AND org_id = ?').run(ref.deploymentId, ref.orgId);
    });
  }

  findByIdempotencyKey(orgId: string, key: string): Promise<DeploymentRecord | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT doc, etag FROM deployments WHERE org_id = ? AND idempotency_key = ?').get(orgId, key) as
        | Row
        | undefined;
      return row === undefined ? null : toRecord(row);
    });
  }

  listByProject(orgId: string, projectId: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>> {
    return this.newestFirst('project_id', orgId, projectId, page);
  }

  /** Deployments of the org whose `column` (indexed with created_at, id) equals `value`, newest first. */
  private newestFirst(column: 'project_id' | 'app_name', orgId: string, value: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>> {
    return runSqlite(() => {
      const after = page.cursor === null ? null : decodeCursor(page.cursor);
      const rows = (
        after === null
          ? this.db.connection
              .prepare(`SELECT doc, etag FROM deployments WHERE org_id = ? AND ${column} = ? ORDER BY created_at DESC, id DESC LIMIT ?`)
              .all(orgId, value, page.limit + 1)
          : this.db.connection
              .prepare(
                `SELECT doc, etag FROM deployments WHERE org_id = ? AND ${column} = ? AND (created_at, id) < (?, ?)
                 ORDER BY created_at DESC, id DESC LIMIT ?`,
              )
              .all(orgId, value, after[0], after[1], page.limit + 1)
      ) as unknown as Row[];
      const items = rows.slice(0, page.limit).map(toRecord);
      const last = items.at(-1);
      return { items, nextCursor: rows.length > page.limit && last !== undefined ? encodeCursor(last) : null };
    });
  }

  listRecent(orgId: string, limit: number): Promise<DeploymentRecord[]> {
    return runSqlite(() =>
      (
        this.db.connection
          .prepare('SELECT doc, etag FROM deployments WHERE org_id = ? ORDER BY created_at DESC, id DESC LIMIT ?')
          .all(orgId, limit) as unknown as Row[]
      ).map(toRecord),
    );
  }

  countByStatus(orgId: string): Promise<Record<DeploymentStatus, number>> {
    return runSqlite(() => {
      const counts = Object.fromEntries(DEPLOYMENT_STATUSES.map((status) => [status, 0])) as Record<DeploymentStatus, number>;
      const rows = this.db.connection.prepare('SELECT status, COUNT(*) AS n FROM deployments WHERE org_id = ? GROUP BY status').all(orgId) as {
        status: DeploymentStatus;
        n: number;
      }[];
      for (const row of rows) counts[row.status] = row.n;
      return counts;
    });
  }

  countActive(orgId: string): Promise<number> {
    return runSqlite(() => activeCount(this.db, orgId));
  }

  listFinishedBefore(orgId: string | null, before: Date, limit: number): Promise<DeploymentRecord[]> {
    return runSqlite(() => {
      const sql = `SELECT doc, etag FROM deployments WHERE finished_at IS NOT NULL AND finished_at < ? ${orgId === null ? '' : 'AND org_id = ?'}
                   AND status IN ('completed', 'failed', 'cancelled', 'superseded') ORDER BY finished_at LIMIT ?`;
      const params = orgId === null ? [before.toISOString(), limit] : [before.toISOString(), orgId, limit];
      return (this.db.connection.prepare(sql).all(...params) as unknown as Row[]).map(toRecord);
    });
  }

  latestCompleted(orgId: string, appName: string): Promise<DeploymentRecord | null> {
    return runSqlite(() => {
      const row = this.db.connection
        .prepare(
          `SELECT doc, etag FROM deployments WHERE org_id = ? AND app_name = ? AND status = 'completed' ORDER BY finished_at DESC LIMIT 1`,
        )
        .get(orgId, appName) as Row | undefined;
      return row === undefined ? null : toRecord(row);
    });
  }

  latestCompletedEnvNames(orgId: string, appName: string): Promise<{ deploymentId: string; envVariableNames: string[] } | null> {
    return runSqlite(() => {
      // SQLite's JSON reader takes the one field out of the stored text: no JavaScript object of the whole record.
      const row = this.db.connection
        .prepare(
          `SELECT id, json_extract(doc, '$.spec.envVariableNames') AS names FROM deployments
           WHERE org_id = ? AND app_name = ? AND status = 'completed' ORDER BY finished_at DESC LIMIT 1`,
        )
        .get(orgId, appName) as { id: string; names: string | null } | undefined;
      if (row === undefined) return null;
      return { deploymentId: row.id, envVariableNames: row.names === null ? [] : (JSON.parse(row.names) as string[]) };
    });
  }

  latestCompletedWithBuildKey(orgId: string, projectId: string, buildKey: string): Promise<DeploymentRecord | null> {
    return runSqlite(() => {
      const row = this.db.connection
        .prepare(
          `SELECT doc, etag FROM deployments WHERE org_id = ? AND project_id = ? AND build_key = ? AND status = 'completed'
           ORDER BY finished_at DESC LIMIT 1`,
        )
        .get(orgId, projectId, buildKey) as Row | undefined;
      return row === undefined ? null : toRecord(row);
    });
  }

  listUnpublished(before: Date, limit: number): Promise<DeploymentRecord[]> {
    return runSqlite(() =>
      (
        this.db.connection
          .prepare(
            `SELECT doc, etag FROM deployments WHERE published_at IS NULL AND status = 'queued' AND updated_at < ? ORDER BY updated_at LIMIT ?`,
          )
          .all(before.toISOString(), limit) as unknown as Row[]
      ).map(toRecord),
    );
  }

  listRunningStartedBefore(before: Date, limit: number): Promise<DeploymentRecord[]> {
    return runSqlite(() =>
      (
        this.db.connection
          .prepare(
            `SELECT doc, etag FROM deployments WHERE status = 'in_progress' AND attempt_started_at < ? ORDER BY attempt_started_at LIMIT ?`,
          )
          .all(before.toISOString(), limit) as unknown as Row[]
      ).map(toRecord),
    );
  }

  /** The outbox table in insertion order (its rowid): pending events only, so a short read (migration 10). */
  listOutbox(limit: number, orgId?: string): Promise<PendingEvent[]> {
    return runSqlite(() => {
      const rows = (
        orgId === undefined
          ? this.db.connection.prepare('SELECT org_id, deployment_id, project_id, event FROM outbox_events ORDER BY seq LIMIT ?').all(limit)
          : this.db.connection
              .prepare('SELECT org_id, deployment_id, project_id, event FROM outbox_events WHERE org_id = ? ORDER BY seq LIMIT ?')
              .all(orgId, limit)
      ) as { org_id: string; deployment_id: string; project_id: string; event: string }[];
      return rows.map((row) => ({ orgId: row.org_id, deploymentId: row.deployment_id, projectId: row.project_id, event: JSON.parse(row.event) as OutboxEvent }));
    });
  }

  removeOutbox(events: readonly { orgId: string; eventId: string }[]): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    return runSqlite(() =>
      this.db.transaction(() => {
        const statement = this.db.connection.prepare('DELETE FROM outbox_events WHERE event_id = ? AND org_id = ?');
        for (const { orgId, eventId } of events) statement.run(eventId, orgId);
      }),
    );
  }

  recordHeartbeat(heartbeat: WorkerHeartbeat): Promise<void> {
    return runSqlite(() => {
      this.db.connection
        .prepare(
          `INSERT INTO workers (worker_id, last_seen_at, doc) VALUES (?, ?, ?)
           ON CONFLICT (worker_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, doc = excluded.doc`,
        )
        .run(heartbeat.workerId, heartbeat.lastSeenAt, JSON.stringify(heartbeat));
      // Forget workers not seen for a day, so the list stays about the living.
      this.db.connection.prepare('DELETE FROM workers WHERE last_seen_at < ?').run(new Date(Date.now() - 86_400_000).toISOString());
    });
  }

  listHeartbeats(): Promise<WorkerHeartbeat[]> {
    return runSqlite(() =>
      (this.db.connection.prepare('SELECT doc FROM workers ORDER BY last_seen_at DESC').all() as { doc: string }[]).map(
        (row) => JSON.parse(row.doc) as WorkerHeartbeat,
      ),
    );
  }

  // Apps (issue 12): the `apps` table (migration 8) beside the deployments.
  getApp(orgId: string, appName: string): Promise<AppRecord | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT doc, etag FROM apps WHERE org_id = ? AND app_name = ?').get(orgId, appName) as Row | undefined;
      return row === undefined ? null : { ...(JSON.parse(row.doc) as AppRecord), etag: row.etag };
    });
  }

  putApp(app: AppRecord): Promise<AppRecord> {
    return runSqlite(() =>
      this.db.transaction(() => {
        const etag = newEtag();
        const { etag: expected, ...doc } = app;
        const connection = this.db.connection;
        if (expected === '') {
          const result = connection
            .prepare(
              `INSERT INTO apps (org_id, app_name, project_id, environment, etag, doc) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (org_id, app_name) DO NOTHING`,
            )
            .run(app.orgId, app.appName, app.projectId, app.environment, etag, JSON.stringify(doc));
          if (result.changes === 0) throw new DeployError('CONFLICT', `App ${app.appName} already has a record`);
        } else {
          const result = connection
            .prepare('UPDATE apps SET etag = ?, doc = ? WHERE org_id = ? AND app_name = ? AND etag = ?')
            .run(etag, JSON.stringify(doc), app.orgId, app.appName, expected);
          if (result.changes === 0) throw new DeployError('CONCURRENT_UPDATE', `App ${app.appName} changed since it was read`, { retryable: true });
        }
        return { ...app, etag };
      }),
    );
  }

  deleteApp(orgId: string, appName: string): Promise<void> {
    return runSqlite(() => {
      this.db.connection.prepare('DELETE FROM apps WHERE org_id = ? AND app_name = ?').run(orgId, appName);
    });
  }

  listApps(orgId: string, page: { limit: number; cursor: string | null }): Promise<Page<AppRef>> {
    return runSqlite(() => {
      const after = page.cursor === null ? '' : decodeAppCursor(page.cursor);
      // Apps known by deployments (one row per app: the deployments_by_app index is walked in order)
      // and apps known by a record only, merged by name.
      const rows = this.db.connection
        .prepare(
          `SELECT app_name, MIN(project_id) AS project_id, MIN(environment) AS environment FROM (
             SELECT app_name, project_id, json_extract(doc, '$.environment') AS environment
               FROM deployments WHERE org_id = :org AND app_name > :after
               GROUP BY app_name
             UNION ALL
             SELECT app_name, project_id, environment FROM apps WHERE org_id = :org AND app_name > :after
           ) GROUP BY app_name ORDER BY app_name LIMIT :limit`,
        )
        .all({ org: orgId, after, limit: page.limit + 1 }) as { app_name: string; project_id: string; environment: Environment }[];
      const items = rows
        .slice(0, page.limit)
        .map((row): AppRef => ({ orgId, projectId: row.project_id, environment: row.environment, appName: row.app_name }));
      const last = items.at(-1);
      return { items, nextCursor: rows.length > page.limit && last !== undefined ? Buffer.from(last.appName).toString('base64url') : null };
    });
  }

  listByApp(orgId: string, appName: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>> {
    return this.newestFirst('app_name', orgId, appName, page);
  }
}
