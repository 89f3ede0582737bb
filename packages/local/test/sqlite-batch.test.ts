import { readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SqliteDatabase } from '../src/index.ts';

describe('SQLite group commit (batch)', () => {
  let dir = '';
  let db: SqliteDatabase;
  afterEach(async () => {
    db.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function open(options: { lockWaitMs?: number } = {}): Promise<SqliteDatabase> {
    dir = await mkdtemp(join(tmpdir(), 'zepid-batch-'));
    db = new SqliteDatabase(join(dir, 'test.db'), options);
    db.open();
    db.connection.exec('CREATE TABLE items (name TEXT PRIMARY KEY)');
    return db;
  }
  const insert = (name: string) => () => db.connection.prepare('INSERT INTO items (name) VALUES (?)').run(name).changes;
  const names = () => (db.connection.prepare('SELECT name FROM items ORDER BY name').all() as { name: string }[]).map((row) => row.name);

  it('commits the writes of one event-loop turn in one transaction, each settling its own caller', async () => {
    await open();
    const exec = vi.spyOn(db.connection, 'exec');
    const commits = () => exec.mock.calls.filter(([sql]) => sql === 'COMMIT').length;
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => db.batch(insert(`n${String(i).padStart(2, '0')}`))));
    expect(results).toEqual(Array.from({ length: 20 }, () => 1));
    expect(commits()).toBe(1);
    expect(names()).toHaveLength(20);
    // Later writes get a transaction of their own.
    await db.batch(insert('later'));
    expect(commits()).toBe(2);
  });

  it('rolls back only the write that failed: its partial changes are gone, the others committed', async () => {
    await open();
    const failing = () => {
      insert('partial')();
      insert('a')(); // duplicate of the first write: UNIQUE constraint
    };
    const outcomes = await Promise.allSettled([db.batch(insert('a')), db.batch(failing), db.batch(insert('b'))]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((outcomes[1] as PromiseRejectedResult).reason)).toMatch(/UNIQUE/);
    expect(names()).toEqual(['a', 'b']);
  });

  it('runs an after-commit callback once per commit, after the writes are visible and before any caller settles', async () => {
    await open();
    // Recorded, not asserted inside: batch() keeps a throwing callback from failing committed writes.
    const seen: { inTransaction: boolean; names: string[]; settledBefore: number }[] = [];
    let settled = 0;
    const afterCommit = () => seen.push({ inTransaction: db.connection.isTransaction, names: names(), settledBefore: settled });
    const writes = ['a', 'b', 'c'].map((name) => db.batch(insert(name), afterCommit).then(() => (settled += 1)));
    // A write that fails alone does not call it; the batch's others still do, once.
    const failed = db.batch(() => insert('a')(), afterCommit);
    await Promise.allSettled([...writes, failed]);
    expect(seen).toEqual([{ inTransaction: false, names: ['a', 'b', 'c'], settledBefore: 0 }]);
    // A batch whose only write failed: nothing committed, no callback.
    await expect(db.batch(() => insert('b')(), afterCommit)).rejects.toThrow(/UNIQUE/);
    expect(seen).toHaveLength(1);
  });

  it('rejects every queued write as DEPENDENCY_UNAVAILABLE when the database is closed before the commit', async () => {
    await open();
    const pending = [db.batch(insert('x')), db.batch(insert('y'))];
    db.close();
    for (const outcome of await Promise.allSettled(pending)) {
      expect(outcome.status).toBe('rejected');
      expect((outcome as PromiseRejectedResult).reason).toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE' });
    }
    db.open();
    expect(names()).toEqual([]);
  });

  /**
   * Another connection (as the API process's is) holds the write lock: SQLite's own busy handler
   * would sleep in this thread until it is released, and nothing else of this process would run
   * meanwhile (here not even the timer that releases it).
   */
  function holdWriteLock(): { release: () => void; other: DatabaseSync } {
    const other = new DatabaseSync(db.path);
    other.exec('BEGIN IMMEDIATE');
    other.exec("INSERT INTO items (name) VALUES ('other')");
    return {
      other,
      release: () => {
        if (!other.isOpen) return;
        if (other.isTransaction) other.exec('COMMIT');
        other.close();
      },
    };
  }

  it('waits for a write lock held by another connection without blocking the event loop, then commits', async () => {
    await open();
    const lock = holdWriteLock();
    let ticks = 0;
    const ticker = setInterval(() => (ticks += 1), 5);
    try {
      const released = setTimeout(() => lock.release(), 300);
      const started = performance.now();
      const write = db.batch(insert('mine'));
      // Writes made while the batch waits join it.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const joined = db.batch(insert('joined'));
      await expect(Promise.all([write, joined])).resolves.toEqual([1, 1]);
      clearTimeout(released);
      expect(performance.now() - started).toBeGreaterThanOrEqual(250);
      // A 5 ms timer over ~300 ms of waiting: it fired throughout (a blocked loop fires it once at most).
      expect(ticks).toBeGreaterThan(20);
      expect(names()).toEqual(['joined', 'mine', 'other']);
      // Only the lock attempts ran without a busy timeout: reads and transaction() still wait.
      expect(db.connection.prepare('PRAGMA busy_timeout').get()).toEqual({ timeout: 10_000 });
    } finally {
      clearInterval(ticker);
      lock.release();
    }
  });

  it('fails the waiting writes DEPENDENCY_UNAVAILABLE (retryable) once the lock wait limit is over, and keeps working after', async () => {
    await open({ lockWaitMs: 200 });
    const lock = holdWriteLock();
    let ticks = 0;
    const ticker = setInterval(() => (ticks += 1), 5);
    try {
      const started = performance.now();
      const outcome = await db.batch(insert('mine')).then(
        () => null,
        (error: unknown) => error,
      );
      expect(outcome).toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', retryable: true });
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
      expect(ticks).toBeGreaterThan(10);
    } finally {
      clearInterval(ticker);
      lock.release();
    }
    // Nothing of the failed write, the other connection's committed; the next write goes through.
    await db.batch(insert('after'));
    expect(names()).toEqual(['after', 'other']);
    // The connection's own busy timeout (reads, transaction()) is back to waiting.
    expect(db.connection.prepare('PRAGMA busy_timeout').get()).toEqual({ timeout: 10_000 });
  });

  it('keeps the savepoints of a large group commit in memory: no temporary journal file is opened', async () => {
    await open();
    db.connection.exec('CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL); CREATE INDEX docs_by_body ON docs (body)');
    // SQLite opens its temporary files deleted (unlinked at once); the descriptor's link still names them.
    const temporaryFiles = () =>
      process.platform !== 'linux' ? [] : readdirSync('/proc/self/fd').flatMap((fd) => {
        try {
          const target = readlinkSync(`/proc/self/fd/${fd}`);
          return /etilqs_/.test(target) ? [target] : [];
        } catch {
          return [];
        }
      });
    let seen: string[] = [];
    // Fifty writes in one transaction, each in its own savepoint changing ~25 pages (a POST /deploy
    // changes ~19): a savepoint's journal passes the 64 KiB SQLite holds in memory by default.
    const writes = Array.from({ length: 50 }, (_, i) =>
      db.batch(() => {
        const statement = db.connection.prepare('INSERT INTO docs (body) VALUES (?)');
        for (let row = 0; row < 12; row += 1) statement.run(`${i}-${row}-${'x'.repeat(3000)}`);
        if (i === 49) seen = temporaryFiles();
      }),
    );
    await Promise.all(writes);
    expect(db.connection.prepare('SELECT COUNT(*) AS n FROM docs').get()).toEqual({ n: 600 });
    expect(seen).toEqual([]);
    expect(db.connection.prepare('PRAGMA temp_store').get()).toEqual({ temp_store: 2 });
  });
});
