import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { apply } from '@zepid/core';
import { makeRecord } from '@zepid/testkit';
import { MIGRATIONS } from '../src/sqlite/database.ts';
import { SqliteDatabase, SqliteDeploymentStore } from '../src/index.ts';

/**
 * Migration 10 (issue 16): the webhook outbox leaves the deployment documents for a table of its own.
 * A data dir written by the code before holds events inside the records (running deployments kept
 * theirs until they ended); after the upgrade the dispatcher must find them in the table, and the
 * records must not carry them any more.
 */
describe('SQLite outbox: migration 10', () => {
  let dir = '';
  let store: SqliteDeploymentStore | null = null;
  afterEach(async () => {
    await store?.close();
    store = null;
    await rm(dir, { recursive: true, force: true });
  });

  /** A row as the code before migration 10 wrote it: the events inside the document. */
  function insertOld(db: DatabaseSync, record: DeploymentRecord): void {
    const { etag: _etag, ...doc } = record;
    db.prepare(
      `INSERT INTO deployments (id, org_id, project_id, app_name, status, created_at, updated_at, attempt_started_at, finished_at, published_at,
         idempotency_key, build_key, etag, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'old', ?)`,
    ).run(record.id, record.orgId, record.projectId, record.appName, record.status, record.createdAt, record.updatedAt, record.attemptStartedAt, record.finishedAt, record.publishedAt, JSON.stringify(doc));
  }

  it('moves the events records held into the outbox table, oldest write first, and out of the records', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-outbox-'));
    const path = join(dir, 'zepid.db');
    const old = new DatabaseSync(path);
    for (const migration of MIGRATIONS.slice(0, 9)) old.exec(migration);
    old.exec('PRAGMA user_version = 9');
    // Running, with both of its events (written later than b); queued with one; ended with none left.
    const running = apply(makeRecord({ orgId: 'org_m' }, new Date('2026-01-01T00:00:00Z')), { type: 'attempt_started' }, new Date('2026-01-03T00:00:00Z'));
    const queued = makeRecord({ orgId: 'org_n' }, new Date('2026-01-02T00:00:00Z'));
    const emptied = { ...makeRecord({ orgId: 'org_m' }, new Date('2026-01-01T00:00:00Z')), outbox: [] };
    for (const record of [running, queued, emptied]) insertOld(old, record);
    old.close();

    store = new SqliteDeploymentStore(new SqliteDatabase(path));
    await store.start();
    const pending = await store.listOutbox(100);
    expect(pending.map((entry) => [entry.deploymentId, entry.event.type])).toEqual([
      [queued.id, 'deployment.queued'],
      [running.id, 'deployment.queued'],
      [running.id, 'deployment.started'],
    ]);
    expect(pending.map((entry) => entry.event)).toEqual([...(queued.outbox ?? []), ...(running.outbox ?? [])]);
    expect(pending[1]).toMatchObject({ orgId: 'org_m', projectId: running.projectId });
    expect((await store.listOutbox(100, 'org_n')).map((entry) => entry.deploymentId)).toEqual([queued.id]);
    for (const record of [running, queued, emptied]) {
      const read = await store.get({ orgId: record.orgId, deploymentId: record.id });
      expect(read?.outbox).toBeUndefined();
      expect(read?.status).toBe(record.status);
    }

    // The file itself: version 10, no outbox left in any document, the JSON-expression index gone.
    const check = new DatabaseSync(path, { readOnly: true });
    expect(check.prepare('PRAGMA user_version').get()).toEqual({ user_version: 10 });
    expect(check.prepare(`SELECT COUNT(*) AS n FROM deployments WHERE json_type(doc, '$.outbox') IS NOT NULL`).get()).toEqual({ n: 0 });
    expect(check.prepare(`SELECT name FROM sqlite_master WHERE name = 'deployments_outbox'`).get()).toBeUndefined();
    check.close();
  });
});
