import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { apply, newDeploymentId } from '@zepid/core';
import { makeRecord } from '@zepid/testkit';
import { SqliteDatabase, SqliteDeploymentStore } from '../src/index.ts';

/** etagOf: what the API's kept status answers are checked against on every poll (SQLite only offers it). */
describe('SQLite store: the etag alone', () => {
  let dir = '';
  let store: SqliteDeploymentStore;
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is the current etag of the record, null for another org or once deleted', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-etag-'));
    store = new SqliteDeploymentStore(new SqliteDatabase(join(dir, 'zepid.db')));
    await store.start();
    const created = await store.create(makeRecord({ orgId: 'org_a' }), { maxActivePerOrg: 10 });
    const ref = { orgId: 'org_a', deploymentId: created.id };
    expect(await store.etagOf(ref)).toBe(created.etag);
    const replaced = await store.replace(apply(created, { type: 'attempt_started' }, new Date()));
    expect(replaced.etag).not.toBe(created.etag);
    expect(await store.etagOf(ref)).toBe(replaced.etag);
    expect(await store.etagOf({ orgId: 'org_b', deploymentId: created.id })).toBeNull();
    await store.delete(ref);
    expect(await store.etagOf(ref)).toBeNull();
  });
});

/**
 * writeMark: the commit mark the API's kept status answers rely on to skip even the etag read. It
 * must move with every commit of any connection or process (else a poll would be answered from a
 * stale version) and stay still across reads (else it saves nothing).
 */
describe('SQLite database: the commit mark', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function open(path: string): Promise<SqliteDeploymentStore> {
    const opened = new SqliteDeploymentStore(new SqliteDatabase(path));
    await opened.start();
    cleanups.push(() => opened.close());
    return opened;
  }

  const publishFromAnotherProcess = (path: string) =>
    new Promise<void>((resolve, reject) => {
      const body = { deploymentId: newDeploymentId(), orgId: 'org_a', attempt: 1, traceparent: null };
      const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'publish-job.ts'), path, `${body.deploymentId}:1`, body.deploymentId, JSON.stringify(body)], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`publisher exited ${String(code)}: ${stderr}`))));
    });

  it('moves with every commit of this connection, another connection or another process, and with a checkpoint; not with reads', async () => {
    const root = await mkdtemp(join(tmpdir(), 'zepid-mark-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const path = join(root, 'zepid.db');
    const one = await open(path);
    const two = await open(path);
    const created = await one.create(makeRecord({ orgId: 'org_a' }), { maxActivePerOrg: 10 });
    const ref = { orgId: 'org_a', deploymentId: created.id };

    const start = one.writeMark();
    expect(start).toEqual(expect.any(String));
    await one.get(ref);
    await two.etagOf(ref);
    await two.listRecent('org_a', 10);
    expect(one.writeMark()).toBe(start);

    const replaced = await two.replace(apply(created, { type: 'attempt_started' }, new Date()));
    const afterOther = one.writeMark();
    expect(afterOther).not.toBe(start);
    await one.replace(apply(replaced, { type: 'cancel_requested' }, new Date()));
    const afterOwn = one.writeMark();
    expect(afterOwn).not.toBe(afterOther);

    await publishFromAnotherProcess(path);
    const afterProcess = one.writeMark();
    expect(afterProcess).not.toBe(afterOwn);
    // A checkpoint that resets the WAL starts it again from frame 0 with new salts.
    const third = new DatabaseSync(path);
    third.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    third.close();
    expect(one.writeMark()).not.toBe(afterProcess);
  });

  it('is null where it cannot tell: an in-memory database, a closed one', async () => {
    const memory = new SqliteDeploymentStore(new SqliteDatabase(':memory:'));
    await memory.start();
    expect(memory.writeMark()).toBeNull();
    await memory.close();
    const root = await mkdtemp(join(tmpdir(), 'zepid-mark-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const closed = new SqliteDeploymentStore(new SqliteDatabase(join(root, 'zepid.db')));
    await closed.start();
    await closed.create(makeRecord({ orgId: 'org_a' }), { maxActivePerOrg: 10 });
    expect(closed.writeMark()).not.toBeNull();
    await closed.close();
    expect(closed.writeMark()).toBeNull();
  });
});
