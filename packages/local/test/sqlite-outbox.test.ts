import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { apply } from '@zepid/core';
import { makeRecord, makeWebhook } from '@zepid/testkit';
import { MIGRATIONS } from '../src/sqlite/database.ts';
import { insertDeployment } from '../src/sqlite/store.ts';
import { SqliteDatabase, SqliteDeploymentStore, SqliteWebhookStore } from '../src/index.ts';

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
    // Neither org has a webhook: the migration moves existing events all the same (it is not a new
    // write), but a new write of an org without a webhook adds none.
    const stored = await store.get({ orgId: 'org_n', deploymentId: queued.id });
    if (stored === null) throw new Error('the migrated record is gone');
    await store.replace(apply(stored, { type: 'attempt_started' }, new Date()));
    expect(await store.listOutbox(100)).toHaveLength(3);

    // The file itself: version 10, no outbox left in any document, the JSON-expression index gone.
    const check = new DatabaseSync(path, { readOnly: true });
    expect(check.prepare('PRAGMA user_version').get()).toEqual({ user_version: 10 });
    expect(check.prepare(`SELECT COUNT(*) AS n FROM deployments WHERE json_type(doc, '$.outbox') IS NOT NULL`).get()).toEqual({ n: 0 });
    expect(check.prepare(`SELECT name FROM sqlite_master WHERE name = 'deployments_outbox'`).get()).toBeUndefined();
    check.close();
  });
});

/**
 * An org without any webhook keeps no outbox events (issue 16): its events would fan out to no one, and
 * each cost an insert per write and a read and a delete in the dispatcher. Checked in the writing
 * transaction, so an event is left out only if no webhook of its org existed at that write's commit.
 */
describe('SQLite outbox: only orgs with a webhook keep events', () => {
  let dir = '';
  let db: SqliteDatabase;
  let store: SqliteDeploymentStore;
  let webhooks: SqliteWebhookStore;
  afterEach(async () => {
    await webhooks.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function open() {
    dir = await mkdtemp(join(tmpdir(), 'zepid-outbox-'));
    db = new SqliteDatabase(join(dir, 'zepid.db'));
    store = new SqliteDeploymentStore(db);
    webhooks = new SqliteWebhookStore(db);
    await store.start();
    await webhooks.start();
  }

  /** The outbox table itself, per org: `deploymentId:type` in insertion order. */
  const rows = (orgId: string) =>
    (db.connection.prepare('SELECT deployment_id, event FROM outbox_events WHERE org_id = ? ORDER BY seq').all(orgId) as { deployment_id: string; event: string }[]).map(
      (row) => `${row.deployment_id}:${(JSON.parse(row.event) as { type: string }).type}`,
    );

  it('writes no row for an org without a webhook, and every event of one with a webhook, enabled or disabled', async () => {
    await open();
    await webhooks.createWebhook(makeWebhook('org_hooked'));
    await webhooks.createWebhook(makeWebhook('org_disabled', { enabled: false, disabledReason: 'disabled by a test' }));
    const hooked = await store.create(makeRecord({ orgId: 'org_hooked' }), { maxActivePerOrg: 10 });
    const plain = await store.create(makeRecord({ orgId: 'org_plain' }), { maxActivePerOrg: 10 });
    const disabled = await store.create(makeRecord({ orgId: 'org_disabled' }), { maxActivePerOrg: 10 });
    // The three replaces in one group commit (one transaction, one savepoint each).
    await Promise.all([hooked, plain, disabled].map((record) => store.replace(apply(record, { type: 'attempt_started' }, new Date()))));
    expect(rows('org_hooked')).toEqual([`${hooked.id}:deployment.queued`, `${hooked.id}:deployment.started`]);
    expect(rows('org_disabled')).toEqual([`${disabled.id}:deployment.queued`, `${disabled.id}:deployment.started`]);
    expect(rows('org_plain')).toEqual([]);
    // The records themselves are written as always.
    expect((await store.get({ orgId: 'org_plain', deploymentId: plain.id }))?.status).toBe('in_progress');
  });

  it('keeps events from the write after a webhook is registered, and none after the org\'s last webhook is deleted', async () => {
    await open();
    const record = await store.create(makeRecord({ orgId: 'org_later' }), { maxActivePerOrg: 10 });
    expect(rows('org_later')).toEqual([]);
    const first = await webhooks.createWebhook(makeWebhook('org_later'));
    const second = await webhooks.createWebhook(makeWebhook('org_later'));
    const started = await store.replace(apply(record, { type: 'attempt_started' }, new Date()));
    expect(rows('org_later')).toEqual([`${record.id}:deployment.started`]);
    // One of two webhooks deleted: the org still has one.
    await webhooks.deleteWebhook('org_later', first.id);
    const other = await store.create(makeRecord({ orgId: 'org_later' }), { maxActivePerOrg: 10 });
    expect(rows('org_later')).toEqual([`${record.id}:deployment.started`, `${other.id}:deployment.queued`]);
    // The last one deleted: later writes keep nothing; what was pending stays for the dispatcher.
    await webhooks.deleteWebhook('org_later', second.id);
    await store.replace(apply(started, { type: 'cancelled' }, new Date()));
    await store.create(makeRecord({ orgId: 'org_later' }), { maxActivePerOrg: 10 });
    expect(rows('org_later')).toEqual([`${record.id}:deployment.started`, `${other.id}:deployment.queued`]);
  });

  it('sees a webhook registered earlier in the same transaction, after a write of the org was checked', async () => {
    await open();
    const before = makeRecord({ orgId: 'org_same' });
    const after = makeRecord({ orgId: 'org_same' });
    // One group commit: a write of the org (no webhook yet: left out), the registration, a second write.
    await db.batch(() => {
      insertDeployment(db, before, { maxActivePerOrg: 10 });
      void webhooks.createWebhook(makeWebhook('org_same'));
      insertDeployment(db, after, { maxActivePerOrg: 10 });
    });
    expect(rows('org_same')).toEqual([`${after.id}:deployment.queued`]);
  });
});
