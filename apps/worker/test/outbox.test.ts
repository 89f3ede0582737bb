import { afterEach, describe, expect, it } from 'vitest';
import type { JobQueue } from '@zepid/core';
import { jobFor, OutboxIntake, reconcileOutbox, silentLogger, SourceWindowPassed } from '@zepid/core';
import { makeRecord } from '@zepid/testkit';
import { Maintenance } from '../src/maintenance.ts';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

/** A queue whose next publishes fail: the API died between writing the record and publishing. */
function failingPublishes(queue: JobQueue, failures: number): JobQueue {
  let left = failures;
  return new Proxy(queue, {
    get(target, property, receiver) {
      if (property === 'publish') {
        return async (...args: Parameters<JobQueue['publish']>) => {
          if (left > 0) {
            left -= 1;
            throw new Error('connection reset while publishing');
          }
          return target.publish(...args);
        };
      }
      return Reflect.get(target, property, receiver) as unknown;
    },
  });
}

/**
 * Dual write (Cosmos DB + Service Bus share no transaction): the outbox intake writes the record,
 * then the job; a lost publish is repaired by the worker's maintenance, a double publish is absorbed
 * by the message id.
 */
describe('outbox', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  it('a deployment whose publish failed is published by maintenance and completes; none stays queued', async () => {
    h = await createWorkerHarness();
    const intake = new OutboxIntake(h.adapters.store, failingPublishes(h.adapters.queue, 1));
    const record = makeRecord({ orgId: 'org_w', projectId: 'outbox' });
    // Accepted all the same: the record is durable, the job follows through the outbox.
    const accepted = await intake.submit(record, jobFor(record, null), { maxActivePerOrg: 10 });
    expect(accepted.publishedAt).toBeNull();
    const stored = await h.get(record);
    expect(stored).toMatchObject({ status: 'queued', publishedAt: null });
    expect(await h.adapters.queue.counts()).toMatchObject({ active: 0 });

    const maintenance = new Maintenance({
      store: h.adapters.store,
      queue: h.adapters.queue,
      workflow: h.workflow,
      logger: silentLogger,
      workerId: 'w-test',
      capacity: 1,
      running: () => 0,
      deploymentTimeoutMs: 60_000,
      intervalMs: 100,
      outboxGraceMs: 200,
    });
    maintenance.start();
    try {
      const published = await eventually(() => h.get(record), (current) => current.publishedAt !== null, 10_000);
      expect(published.status).toBe('queued');
      expect(await h.adapters.queue.counts()).toMatchObject({ active: 1 });
    } finally {
      await maintenance.stop();
    }
  });

  it('a double publish of the same attempt is absorbed by the message id', async () => {
    h = await createWorkerHarness();
    const intake = new OutboxIntake(h.adapters.store, h.adapters.queue);
    const record = makeRecord({ orgId: 'org_w', projectId: 'twice' });
    await intake.submit(record, jobFor(record, null), { maxActivePerOrg: 10 });
    // The publish went through but its confirmation was lost: the record still says unpublished.
    const stored = await h.get(record);
    await h.adapters.store.replace({ ...stored, publishedAt: null, updatedAt: new Date(Date.now() - 60_000).toISOString() });
    expect(await reconcileOutbox(h.adapters.store, h.adapters.queue, { graceMs: 1000, limit: 10 })).toBe(1);
    expect(await h.adapters.queue.counts()).toMatchObject({ active: 1 });
    expect((await h.get(record)).publishedAt).not.toBeNull();
  });
  it('with a source manifest: stores it in the artifact store before the record; past the window, stored but nothing recorded (SourceWindowPassed)', async () => {
    h = await createWorkerHarness();
    const { store, queue, artifacts } = h.adapters;
    const manifest = Buffer.from('{"files":[]}');
    const record = makeRecord({ orgId: 'org_w', projectId: 'with-source' });
    const withoutStore = new OutboxIntake(store, queue);
    await expect(withoutStore.submit(record, jobFor(record, null), { maxActivePerOrg: 10 }, { manifest, storeBy: Number.POSITIVE_INFINITY })).rejects.toThrow(/no artifact store/);
    expect(await store.get({ orgId: 'org_w', deploymentId: record.id })).toBeNull();

    const intake = new OutboxIntake(store, queue, { artifacts });
    await intake.submit(record, jobFor(record, null), { maxActivePerOrg: 10 }, { manifest, storeBy: Number.POSITIVE_INFINITY });
    expect(await artifacts.getSource({ orgId: 'org_w', deploymentId: record.id })).toEqual(manifest);
    expect((await h.get(record)).publishedAt).not.toBeNull();

    const late = makeRecord({ orgId: 'org_w', projectId: 'with-source' });
    await expect(intake.submit(late, jobFor(late, null), { maxActivePerOrg: 10 }, { manifest, storeBy: performance.now() - 1 })).rejects.toBeInstanceOf(SourceWindowPassed);
    expect(await artifacts.getSource({ orgId: 'org_w', deploymentId: late.id })).toEqual(manifest);
    expect(await store.get({ orgId: 'org_w', deploymentId: late.id })).toBeNull();
    expect(await queue.counts()).toMatchObject({ active: 1 });
  });
});
