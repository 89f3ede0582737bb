import { randomBytes } from 'node:crypto';
import type { StreamLeaseStore } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { runSqlite } from './database.ts';

/**
 * Stream leases in the embedded database (table of migration 9): every API process on the data dir
 * counts and takes leases in one write transaction (BEGIN IMMEDIATE serializes them across
 * processes), so two processes cannot both take the last place of a token.
 */
export class SqliteStreamLeaseStore implements StreamLeaseStore {
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

  acquire(orgId: string, key: string, limit: number, ttlMs: number, now: Date): Promise<string | null> {
    return runSqlite(() =>
      this.db.transaction(() => {
        const db = this.db.connection;
        const at = now.getTime();
        // Expired leases (a crashed process's) stop counting, and go.
        db.prepare('DELETE FROM stream_leases WHERE org_id = ? AND token_key = ? AND expires_at <= ?').run(orgId, key, at);
        const row = db.prepare('SELECT count(*) AS n FROM stream_leases WHERE org_id = ? AND token_key = ?').get(orgId, key) as { n: number };
        if (row.n >= limit) return null;
        const id = `sl_${randomBytes(12).toString('hex')}`;
        db.prepare('INSERT INTO stream_leases (id, org_id, token_key, expires_at) VALUES (?, ?, ?, ?)').run(id, orgId, key, at + ttlMs);
        return id;
      }),
    );
  }

  renew(orgId: string, key: string, ids: readonly string[], ttlMs: number, now: Date): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return runSqlite(() => {
      this.db.transaction(() => {
        const statement = this.db.connection.prepare('UPDATE stream_leases SET expires_at = ? WHERE id = ? AND org_id = ? AND token_key = ?');
        for (const id of ids) statement.run(now.getTime() + ttlMs, id, orgId, key);
      });
    });
  }

  release(orgId: string, key: string, id: string): Promise<void> {
    return runSqlite(() => {
      this.db.connection.prepare('DELETE FROM stream_leases WHERE id = ? AND org_id = ? AND token_key = ?').run(id, orgId, key);
    });
  }
}
