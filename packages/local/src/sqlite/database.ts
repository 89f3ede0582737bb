import { closeSync, mkdirSync, openSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import { DeployError } from '@zepid/core';

/**
 * The embedded database: one SQLite file under DATA_DIR holding the deployment store and the job
 * queue, opened by the API process and the worker process at once (WAL lets readers and one writer
 * work side by side; busy_timeout makes a writer wait its turn instead of failing).
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE deployments (
     id TEXT PRIMARY KEY,
     org_id TEXT NOT NULL,
     project_id TEXT NOT NULL,
     app_name TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL,
     attempt_started_at TEXT,
     finished_at TEXT,
     published_at TEXT,
     idempotency_key TEXT,
     etag TEXT NOT NULL,
     doc TEXT NOT NULL
   );
   CREATE INDEX deployments_by_project ON deployments (org_id, project_id, created_at DESC, id DESC);
   CREATE INDEX deployments_by_org_status ON deployments (org_id, status, created_at DESC);
   CREATE INDEX deployments_by_finish ON deployments (finished_at) WHERE finished_at IS NOT NULL;
   CREATE INDEX deployments_unpublished ON deployments (updated_at) WHERE published_at IS NULL AND status = 'queued';
   CREATE INDEX deployments_running ON deployments (attempt_started_at) WHERE status = 'in_progress';
   CREATE UNIQUE INDEX deployments_by_idempotency_key ON deployments (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
   CREATE TABLE workers (
     worker_id TEXT PRIMARY KEY,
     last_seen_at TEXT NOT NULL,
     doc TEXT NOT NULL
   );
   CREATE TABLE jobs (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     message_id TEXT NOT NULL UNIQUE,
     session_id TEXT NOT NULL,
     body TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('active', 'dead', 'done')),
     enqueued_at INTEGER NOT NULL,
     visible_at INTEGER NOT NULL,
     delivery_count INTEGER NOT NULL DEFAULT 0,
     lock_token TEXT,
     locked_until INTEGER,
     dead_reason TEXT,
     dead_description TEXT,
     settled_at INTEGER
   );
   CREATE INDEX jobs_ready ON jobs (state, visible_at, seq);
   CREATE INDEX jobs_by_session ON jobs (session_id, state, seq);
   CREATE INDEX jobs_settled ON jobs (settled_at) WHERE state = 'done';`,
  // Build reuse: the key the validate step records (steps.validate.output.buildKey), kept beside the
  // record by every insert and replace. Records written before carry no key and are never reused.
  `ALTER TABLE deployments ADD COLUMN build_key TEXT;
   CREATE INDEX deployments_by_build_key ON deployments (org_id, project_id, build_key, finished_at DESC)
     WHERE build_key IS NOT NULL AND status = 'completed';`,
  // Queued + in-progress deployments per org, kept by triggers in the writing transaction: the quota
  // check on every POST /deploy reads one row instead of counting the org's queue (which made
  // intake slower the longer the queue grew; BENCHMARKS.md).
  `CREATE TABLE active_counts (org_id TEXT PRIMARY KEY, n INTEGER NOT NULL);
   INSERT INTO active_counts (org_id, n)
     SELECT org_id, COUNT(*) FROM deployments WHERE status IN ('queued', 'in_progress') GROUP BY org_id;
   CREATE TRIGGER active_on_insert AFTER INSERT ON deployments WHEN NEW.status IN ('queued', 'in_progress')
   BEGIN
     INSERT INTO active_counts (org_id, n) VALUES (NEW.org_id, 1) ON CONFLICT (org_id) DO UPDATE SET n = n + 1;
   END;
   CREATE TRIGGER active_on_delete AFTER DELETE ON deployments WHEN OLD.status IN ('queued', 'in_progress')
   BEGIN
     UPDATE active_counts SET n = n - 1 WHERE org_id = OLD.org_id;
   END;
   CREATE TRIGGER active_on_update AFTER UPDATE OF status ON deployments
     WHEN (OLD.status IN ('queued', 'in_progress')) != (NEW.status IN ('queued', 'in_progress'))
   BEGIN
     INSERT INTO active_counts (org_id, n) VALUES (NEW.org_id, CASE WHEN NEW.status IN ('queued', 'in_progress') THEN 1 ELSE -1 END)
       ON CONFLICT (org_id) DO UPDATE SET n = n + excluded.n;
   END;`,
  // Source manifests (small: paths and digests) beside the records instead of one file each: creating
  // and renaming a file per POST /deploy cost ~0.7 ms of system time, an insert ~0.02 ms (BENCHMARKS.md).
  `CREATE TABLE manifests (
     org_key TEXT NOT NULL,
     deployment_id TEXT NOT NULL,
     data BLOB NOT NULL,
     PRIMARY KEY (org_key, deployment_id)
   ) WITHOUT ROWID;`,
  // Local isolation: the uid of each app and the gid of each project, allocated once from a reserved
  // range (builder/tenant-ids.ts), so a restart, a rollback or a redeploy runs under the same ids.
  `CREATE TABLE tenant_ids (
     key TEXT PRIMARY KEY,
     id INTEGER NOT NULL UNIQUE
   ) WITHOUT ROWID;`,
  // The app's live deployment (latestCompleted): every delivery and every deploy step reads it to keep
  // an app's live deployment moving forward only. Without this index the read scanned all of an
  // org's completed deployments: quadratic over a burst (test/load/burst.test.ts ran out of time).
  `CREATE INDEX deployments_live ON deployments (org_id, app_name, finished_at DESC) WHERE status = 'completed';`,
  // Webhooks: records whose outbox holds events (indexed by the same expression the dispatcher
  // queries), the endpoints, and their deliveries.
  `CREATE INDEX deployments_outbox ON deployments (updated_at) WHERE json_array_length(doc, '$.outbox') > 0;
   CREATE TABLE webhooks (
     id TEXT PRIMARY KEY,
     org_id TEXT NOT NULL,
     created_at TEXT NOT NULL,
     etag TEXT NOT NULL,
     doc TEXT NOT NULL
   );
   CREATE INDEX webhooks_by_org ON webhooks (org_id, created_at);
   CREATE TABLE webhook_deliveries (
     id TEXT PRIMARY KEY,
     org_id TEXT NOT NULL,
     webhook_id TEXT NOT NULL,
     status TEXT NOT NULL,
     next_attempt_at TEXT,
     created_at TEXT NOT NULL,
     etag TEXT NOT NULL,
     doc TEXT NOT NULL
   );
   CREATE INDEX deliveries_by_webhook ON webhook_deliveries (org_id, webhook_id, created_at DESC);
   CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';`,
  // Apps (issue 12): an app's record (env variable names and scopes, deletion) keyed by org and app
  // name; an app's deployments by app, newest first (GET /apps, rollback, env changes, deletion).
  `CREATE TABLE apps (
     org_id TEXT NOT NULL,
     app_name TEXT NOT NULL,
     project_id TEXT NOT NULL,
     environment TEXT NOT NULL,
     etag TEXT NOT NULL,
     doc TEXT NOT NULL,
     PRIMARY KEY (org_id, app_name)
   ) WITHOUT ROWID;
   CREATE INDEX deployments_by_app ON deployments (org_id, app_name, created_at DESC, id DESC);`,
  // Stream leases (issue 13): one row per open event stream, counted per token across API processes
  // until it expires (its process renews it while the stream is open).
  `CREATE TABLE stream_leases (
     id TEXT PRIMARY KEY,
     org_id TEXT NOT NULL,
     token_key TEXT NOT NULL,
     expires_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX stream_leases_by_token ON stream_leases (org_id, token_key, expires_at);`,
  // 10. The webhook outbox gets a table of its own (issue 16): a record's write inserts the events it
  // carries in the same transaction, the dispatcher reads the table in insertion order and deletes
  // what it fanned out. Before, each pass scanned the deployments' JSON and parsed every record still
  // holding events (running deployments kept theirs until they ended): most of the worker's CPU with
  // hundreds in flight (BENCHMARKS.md). The table holds pending events only, so it stays small and a
  // pass is one short read. Events already in records move here (a running deployment's may have
  // been fanned out already: delivery ids derive from event + webhook, so nothing is sent twice).
  `CREATE TABLE outbox_events (
     seq INTEGER PRIMARY KEY,
     event_id TEXT NOT NULL UNIQUE,
     org_id TEXT NOT NULL,
     deployment_id TEXT NOT NULL,
     project_id TEXT NOT NULL,
     event TEXT NOT NULL
   );
   INSERT INTO outbox_events (event_id, org_id, deployment_id, project_id, event)
     SELECT json_extract(e.value, '$.id'), d.org_id, d.id, d.project_id, e.value
       FROM deployments AS d, json_each(d.doc, '$.outbox') AS e
       WHERE json_array_length(d.doc, '$.outbox') > 0
       ORDER BY d.updated_at, d.id, e.key;
   UPDATE deployments SET doc = json_remove(doc, '$.outbox') WHERE json_type(doc, '$.outbox') IS NOT NULL;
   DROP INDEX deployments_outbox;`,
];

/**
 * The WAL-index header at the start of `<database>-shm`: two copies of a 48-byte header holding a
 * counter incremented by every committed transaction (`iChange`), the number of committed WAL frames
 * (`mxFrame`), the salts (new on every WAL reset) and a checksum. A writer updates it when it
 * commits, and a reader learns of the commit only through it; SQLite's `PRAGMA data_version` is
 * derived from it. Format: https://www.sqlite.org/walformat.html ("The WAL-Index Header"); the
 * unix VFS keeps it in native byte order, version 3007000, `isInit` 1 once written.
 */
const WAL_INDEX_HEADER_BYTES = 96;
const WAL_INDEX_VERSION = 3007000;

/** How long a writer waits for the write lock held by another connection (or process) before failing. */
const BUSY_TIMEOUT_MS = 10_000;
/** How often `batch` tries the write lock again while another connection holds it. */
const LOCK_RETRY_MS = 1;

export class SqliteDatabase {
  readonly path: string;
  private db: DatabaseSync | null = null;
  /** Descriptor of `<database>-shm`, opened on the first `writeMark` (read only; closed with the database). */
  private shm: number | null = null;
  private readonly shmHeader = Buffer.alloc(WAL_INDEX_HEADER_BYTES);
  /** Adapters sharing this database each open and close it; the file closes with the last one. */
  private users = 0;
  private transactions = 0;

  /** How long `batch` waits for the write lock before its writes fail DEPENDENCY_UNAVAILABLE (retryable). */
  private readonly lockWaitMs: number;

  constructor(path: string, options: { lockWaitMs?: number } = {}) {
    this.path = path;
    this.lockWaitMs = options.lockWaitMs ?? BUSY_TIMEOUT_MS;
  }

  /** Opens the file (once; every adapter sharing this object calls it) and applies pending migrations. */
  open(): void {
    this.users += 1;
    if (this.db !== null) return;
    if (this.path !== ':memory:') mkdirSync(dirname(this.path), { recursive: true });
    const db = new DatabaseSync(this.path);
    memoizePrepare(db);
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS};`);
    // Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    // at once, without its busy handler, when the other process (npm start starts the API and the
    // worker together) is opening the same new file: wait a little and try again; the mode is kept
    // in the file, so the second process usually finds it set.
    for (let attempt = 1; ; attempt += 1) {
      try {
        db.exec('PRAGMA journal_mode = WAL;');
        break;
      } catch (error) {
        if (attempt >= 200 || !/locked|busy/i.test(String(error))) {
          db.close();
          throw error;
        }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 25);
      }
    }
    db.exec('PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
    // Savepoint (sub-)journals in memory. `batch` gives each write its own savepoint, and SQLite keeps
    // a savepoint's journal (the original of each page it changes) in memory only up to 64 KiB
    // (SQLITE_STMTJRNL_SPILL), then spills it to a temporary file (/var/tmp/etilqs_*): a group
    // commit of fifty POST /deploy opened such a file and wrote ~19 pages (~80 KB) to it per POST,
    // ~70 µs of CPU per POST, more than the inserts themselves (BENCHMARKS.md, fifth pass). With
    // temp_store = MEMORY the journal stays in memory (https://www.sqlite.org/tempfiles.html,
    // "Statement Journal Files" and "Temporary File Storage Locations") and is freed when the
    // transaction ends. Nothing durable is involved: the WAL is written as before. Temporary tables
    // and sort indices of large queries go to memory too; ours are bounded by their LIMITs.
    db.exec('PRAGMA temp_store = MEMORY;');
    this.db = db;
    this.transaction(() => {
      const row = db.prepare('PRAGMA user_version').get() as { user_version: number };
      for (let version = row.user_version; version < MIGRATIONS.length; version += 1) {
        db.exec(MIGRATIONS[version] ?? '');
        db.exec(`PRAGMA user_version = ${version + 1}`);
      }
    });
  }

  close(): void {
    this.users = Math.max(0, this.users - 1);
    if (this.users > 0) return;
    if (this.shm !== null) closeSync(this.shm);
    this.shm = null;
    this.db?.close();
    this.db = null;
  }

  /**
   * A mark of every transaction committed to this database, by any connection of any process: two
   * equal marks mean nothing was committed between them. It is the WAL-index header (above), read
   * with one `pread` of the shared-memory file instead of a statement (no read transaction, no lock):
   * readers see a commit only once its writer updated this header, so a commit another process made
   * before this call is in the mark it returns. Null when it cannot tell (in-memory database, no
   * shared-memory file yet, a header mid-update or of an unknown version): callers then read.
   */
  writeMark(): string | null {
    if (this.db === null || this.path === ':memory:') return null;
    try {
      this.shm ??= openSync(`${this.path}-shm`, 'r');
      const header = this.shmHeader;
      if (readSync(this.shm, header, 0, WAL_INDEX_HEADER_BYTES, 0) !== WAL_INDEX_HEADER_BYTES) return null;
      // Written in native order by the unix VFS: a big-endian host reads another number here, and callers read instead.
      if (header.readUInt32LE(0) !== WAL_INDEX_VERSION || header[12] !== 1) return null;
      // The writer updates the second copy, then the first: copies that differ are a commit under way.
      if (header.compare(header, 48, 96, 0, 48) !== 0) return null;
      return header.toString('latin1');
    } catch {
      return null;
    }
  }

  get connection(): DatabaseSync {
    if (this.db === null) throw new DeployError('DEPENDENCY_UNAVAILABLE', 'The SQLite database is not open', { retryable: true });
    return this.db;
  }

  private queued: { fn: () => unknown; afterCommit: (() => void) | undefined; resolve: (value: unknown) => void; reject: (error: Error) => void }[] = [];
  /** A flush is scheduled or waiting for the write lock: later `batch` calls join it. */
  private flushing = false;

  /**
   * Group commit: `fn` runs in a write transaction shared with every other `batch` call made in the
   * same turn of the event loop (or while the batch waits for the write lock), each inside its own
   * savepoint (one that throws is rolled back alone and only its caller sees the error). The
   * promise settles after the COMMIT, so a caller still answers only once its write is durable, but
   * fifty concurrent POST /deploy pay for one commit instead of fifty: on these machines a commit's
   * system calls cost more than the inserts (BENCHMARKS.md).
   *
   * `afterCommit` runs once per commit however many calls of the batch passed the same function
   * (the intake's doorbell ring: one file touch for fifty POSTs instead of fifty), after the COMMIT
   * and before any caller's promise settles; not at all when the transaction failed.
   *
   * The write lock is waited for without blocking the event loop (`tryBegin`): while the other
   * process holds it, this one goes on serving, and takes the lock within ~1 ms of its release.
   */
  batch<T>(fn: () => T, afterCommit?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queued.push({ fn, afterCommit, resolve: resolve as (value: unknown) => void, reject });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => void this.flushBatch());
      }
    });
  }

  private async flushBatch(): Promise<void> {
    try {
      const deadline = performance.now() + this.lockWaitMs;
      // BEGIN and the writes below run in one synchronous stretch: nothing else can use the connection
      // between them. Between attempts the event loop runs on (and more writes join this batch).
      while (!this.tryBegin(performance.now() >= deadline)) await sleep(LOCK_RETRY_MS);
    } catch (error) {
      this.flushing = false;
      const failure = sqliteError(error);
      const batch = this.queued;
      this.queued = [];
      for (const item of batch) item.reject(failure);
      return;
    }
    const batch = this.queued;
    this.queued = [];
    this.flushing = false;
    const outcomes: ({ ok: true; value: unknown } | { ok: false; error: Error })[] = [];
    try {
      this.inTransaction(() => {
        const db = this.connection;
        for (const item of batch) {
          db.exec('SAVEPOINT batch_item');
          try {
            outcomes.push({ ok: true, value: item.fn() });
            db.exec('RELEASE batch_item');
          } catch (error) {
            db.exec('ROLLBACK TO batch_item');
            db.exec('RELEASE batch_item');
            outcomes.push({ ok: false, error: sqliteError(error) });
          }
        }
      });
    } catch (error) {
      const failure = sqliteError(error);
      for (const item of batch) item.reject(failure);
      return;
    }
    const hooks = new Set<() => void>();
    batch.forEach((item, index) => {
      if (item.afterCommit !== undefined && outcomes[index]?.ok === true) hooks.add(item.afterCommit);
    });
    for (const hook of hooks) {
      try {
        hook();
      } catch {
        // What runs after a commit cannot undo it; the callers' writes are durable and answer as such.
      }
    }
    batch.forEach((item, index) => {
      const outcome = outcomes[index];
      if (outcome?.ok === true) item.resolve(outcome.value);
      else item.reject(outcome?.error ?? new Error('batched write lost its outcome'));
    });
  }

  /**
   * One attempt at the write lock (BEGIN IMMEDIATE) that does not wait: SQLite's own busy handler
   * sleeps in the calling thread (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms steps,
   * `sqliteDefaultBusyCallback` in sqlite3's main.c), which froze this process's event loop while
   * the other process committed and overslept its release by up to a step: the worker's pickup p99
   * (BENCHMARKS.md). The connection's busy timeout is 0 for this statement only; reads and
   * `transaction` keep the 10 s wait. True when the lock is held; false when another connection
   * has it; the busy error itself when `last`.
   */
  private tryBegin(last: boolean): boolean {
    const db = this.connection;
    // exec, not a kept prepared statement: SQLite applies this PRAGMA when it compiles it.
    db.exec('PRAGMA busy_timeout = 0');
    try {
      db.exec('BEGIN IMMEDIATE');
      return true;
    } catch (error) {
      if (last || !isBusy(error)) throw error;
      return false;
    } finally {
      db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    }
  }

  /**
   * Runs `fn` in a write transaction (BEGIN IMMEDIATE: the write lock is taken up front, so no upgrade
   * deadlock). Synchronous, so a lock held by another process is waited for by SQLite's busy handler,
   * blocking: writers on a hot path use `batch`, which waits without blocking.
   */
  transaction<T>(fn: () => T): T {
    this.connection.exec('BEGIN IMMEDIATE');
    return this.inTransaction(fn);
  }

  /**
   * Which write transaction of this connection is open (`transaction` or `batch`), to keep what one
   * transaction read for its own later statements only (webhooks.ts `orgHasWebhook`); meaningful
   * only while `connection.isTransaction`.
   */
  get transactionNumber(): number {
    return this.transactions;
  }

  /** Runs `fn` in the transaction just begun: COMMIT, or ROLLBACK when it throws. */
  private inTransaction<T>(fn: () => T): T {
    const db = this.connection;
    this.transactions += 1;
    try {
      const result = fn();
      db.exec('COMMIT');
      return result;
    } catch (error) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw error;
    }
  }
}

/**
 * node:sqlite compiles a statement on every `prepare()`; the adapters prepare their few fixed SQL
 * texts per call, so the connection keeps each compiled statement for reuse (statements are
 * synchronous and used one at a time, so sharing one is safe). A hot status read spent ~40% of its
 * time compiling before this (BENCHMARKS.md).
 */
function memoizePrepare(db: DatabaseSync): void {
  const compile = db.prepare.bind(db);
  const statements = new Map<string, StatementSync>();
  db.prepare = (sql: string) => {
    let statement = statements.get(sql);
    if (statement === undefined) {
      statement = compile(sql);
      // The adapters' SQL texts are a fixed few; the cap only guards against a future caller's dynamic SQL.
      if (statements.size < 256) statements.set(sql, statement);
    }
    return statement;
  };
}

/** Runs a synchronous SQLite call as the ports' promise, with SQLite's failures mapped (below). */
export function runSqlite<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(sqliteError(error));
  }
}

function isBusy(error: unknown): boolean {
  return /SQLITE_BUSY|database is locked/i.test(error instanceof Error ? error.message : String(error));
}

/** Maps SQLite's "database is locked/unavailable" failures to a retryable error; leaves others alone. */
export function sqliteError(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  if (/SQLITE_BUSY|database is locked|unable to open|disk I\/O error|SQLITE_CANTOPEN/i.test(message)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', 'The local database is unavailable', { retryable: true, cause: error });
  }
  return error instanceof Error ? error : new Error(message);
}
