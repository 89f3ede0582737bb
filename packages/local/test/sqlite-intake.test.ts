import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChangeSignal, DeploymentRecord } from '@zepid/core';
import { DeployError, jobFor, SourceWindowPassed } from '@zepid/core';
import { makeRecord } from '@zepid/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Doorbell, FsArtifactStore, SqliteDatabase, SqliteDeploymentStore, SqliteIntake, SqliteJobQueue } from '../src/index.ts';

/**
 * The intake's submit with the source manifest (issue 16: one commit per POST /deploy instead of
 * two): manifest, record and job are written in one transaction, or none of them; the upload window
 * is checked inside it; concurrent submissions share one commit and ring the doorbell and the change
 * signal once for it.
 */
describe('SqliteIntake with the source manifest', () => {
  let dir: string;
  let db: SqliteDatabase;
  let artifacts: FsArtifactStore;
  let store: SqliteDeploymentStore;
  let queue: SqliteJobQueue;
  let rings: number;
  let intake: SqliteIntake;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-intake-'));
    db = new SqliteDatabase(join(dir, 'zepid.db'));
    artifacts = new FsArtifactStore(join(dir, 'artifacts'), db);
    store = new SqliteDeploymentStore(db);
    queue = new SqliteJobQueue(db, { doorbell: new Doorbell(null), fallbackPollMs: 600_000 });
    await Promise.all([artifacts.start(), store.start(), queue.start()]);
    rings = 0;
    const changes: ChangeSignal = {
      start: () => Promise.resolve(),
      close: () => Promise.resolve(),
      ring: () => void (rings += 1),
      wait: () => Promise.resolve(),
      rung: 0,
    };
    intake = new SqliteIntake(db, new Doorbell(null), undefined, changes);
  });

  afterEach(async () => {
    await Promise.all([artifacts.close(), store.close(), queue.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  const manifestOf = (record: DeploymentRecord) => Buffer.from(JSON.stringify({ files: [{ path: 'index.html', sha256: 'a'.repeat(64), size: 1 }], id: record.id }));
  const submit = (record: DeploymentRecord, storeBy = Number.POSITIVE_INFINITY, maxActivePerOrg = 10) =>
    intake.submit(record, jobFor(record, null), { maxActivePerOrg }, { manifest: manifestOf(record), storeBy });
  const queued = async () => (await queue.counts()).active;

  it('stores the manifest, the record and the job in one commit, and rings once for concurrent submissions', async () => {
    const records = Array.from({ length: 5 }, () => makeRecord({ orgId: 'org_a', projectId: 'prj_a' }));
    const created = await Promise.all(records.map((record) => submit(record)));
    expect(created.map((record) => record.status)).toEqual(Array(5).fill('queued'));
    for (const record of records) {
      expect(await artifacts.getSource({ orgId: 'org_a', deploymentId: record.id })).toEqual(manifestOf(record));
      expect(await store.get({ orgId: 'org_a', deploymentId: record.id })).toMatchObject({ id: record.id, publishedAt: expect.any(String) });
    }
    expect(await queued()).toBe(5);
    // One group commit for the five: one ring of the change signal, not five.
    expect(rings).toBe(1);
  });

  it('stores nothing when the record is refused (active limit): no manifest without its record', async () => {
    await submit(makeRecord({ orgId: 'org_a' }), Number.POSITIVE_INFINITY, 1);
    const refused = makeRecord({ orgId: 'org_a' });
    await expect(submit(refused, Number.POSITIVE_INFINITY, 1)).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(await artifacts.getSource({ orgId: 'org_a', deploymentId: refused.id })).toBeNull();
    expect(await store.get({ orgId: 'org_a', deploymentId: refused.id })).toBeNull();
    expect(await queued()).toBe(1);
  });

  it('past the upload window stores nothing and says so (SourceWindowPassed), while its neighbours in the commit are stored', async () => {
    const late = makeRecord({ orgId: 'org_a' });
    const onTime = makeRecord({ orgId: 'org_a' });
    const [lateResult, onTimeResult] = await Promise.allSettled([submit(late, performance.now() - 1), submit(onTime)]);
    expect(lateResult.status === 'rejected' && lateResult.reason).toBeInstanceOf(SourceWindowPassed);
    expect(onTimeResult.status).toBe('fulfilled');
    expect(await artifacts.getSource({ orgId: 'org_a', deploymentId: late.id })).toBeNull();
    expect(await store.get({ orgId: 'org_a', deploymentId: late.id })).toBeNull();
    expect(await artifacts.getSource({ orgId: 'org_a', deploymentId: onTime.id })).not.toBeNull();
    expect(await queued()).toBe(1);
  });

  it('refuses a record whose id is not a deployment id before writing anything (the manifest key is one)', async () => {
    const record = { ...makeRecord({ orgId: 'org_a' }), id: '../escape' };
    await expect(submit(record)).rejects.toThrow(/not a deployment id/);
    expect(await queued()).toBe(0);
  });

  it('a duplicate id is a CONFLICT and leaves the first deployment\'s manifest as it was', async () => {
    const record = makeRecord({ orgId: 'org_a' });
    await submit(record);
    const error: unknown = await intake
      .submit(record, jobFor(record, null), { maxActivePerOrg: 10 }, { manifest: Buffer.from('other'), storeBy: Number.POSITIVE_INFINITY })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeployError);
    expect(error).toMatchObject({ code: 'CONFLICT' });
    expect(await artifacts.getSource({ orgId: 'org_a', deploymentId: record.id })).toEqual(manifestOf(record));
  });
});
