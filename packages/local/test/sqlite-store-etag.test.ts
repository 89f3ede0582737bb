import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { apply } from '@zepid/core';
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
