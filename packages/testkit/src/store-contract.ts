import type { AppRecord, AppRef, DeploymentRecord, DeploymentStore, Page, WebhookStore } from '@zepid/core';
import { appName, apply, DeployError, STEPS, updateDeployment } from '@zepid/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeAppRecord, makeRecord, makeWebhook } from './records.ts';

export interface StoreHarness {
  store: DeploymentStore;
  /**
   * The webhook store beside it (sharing its database or container). A store may leave out the
   * outbox events of an org that has no webhook at a write's commit (`DeploymentStore.listOutbox`):
   * the contract registers a webhook for each org whose events it expects kept.
   */
  webhooks: WebhookStore;
  /** Stops whatever the harness started (emulator, temp dir). */
  dispose(): Promise<void>;
}

const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 10)}`;

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return error instanceof DeployError ? error.code : `not a DeployError: ${String(error)}`;
  }
}

/**
 * The behaviour every DeploymentStore adapter must have. Each test uses its own org, so adapters
 * backed by a shared emulator need no cleanup between tests.
 */
export function storeContract(name: string, createHarness: () => Promise<StoreHarness>): void {
  describe(`DeploymentStore contract: ${name}`, () => {
    let harness: StoreHarness;
    let store: DeploymentStore;
    beforeAll(async () => {
      harness = await createHarness();
      store = harness.store;
    });
    afterAll(async () => {
      await harness.dispose();
    });

    it('creates and reads a record back, only within its org', async () => {
      const record = makeRecord({ orgId: unique('org') });
      const created = await store.create(record, { maxActivePerOrg: 10 });
      expect(created.etag).not.toBe('');
      const read = await store.get({ orgId: record.orgId, deploymentId: record.id });
      expect(read).toEqual(created);
      expect(await store.get({ orgId: 'another_org', deploymentId: record.id })).toBeNull();
      expect(await store.get({ orgId: record.orgId, deploymentId: 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa' })).toBeNull();
    });

    it('keeps who started a deployment and what it redeploys (issue 14), through create and replace', async () => {
      const createdBy = { tokenId: 'tok_0123456789ab', tokenName: 'ci-bot' };
      const record = { ...makeRecord({ orgId: unique('org') }), createdBy, redeployOf: 'dep_bbbbbbbbbbbbbbbbbbbbbbbbbb' };
      const created = await store.create(record, { maxActivePerOrg: 10 });
      expect(await store.get({ orgId: record.orgId, deploymentId: record.id })).toMatchObject({ createdBy, redeployOf: 'dep_bbbbbbbbbbbbbbbbbbbbbbbbbb' });
      await store.replace(apply(created, { type: 'attempt_started' }, new Date()));
      expect(await store.get({ orgId: record.orgId, deploymentId: record.id })).toMatchObject({ createdBy, redeployOf: 'dep_bbbbbbbbbbbbbbbbbbbbbbbbbb', status: 'in_progress' });
    });

    it('refuses a second record with the same id', async () => {
      const record = makeRecord({ orgId: unique('org') });
      await store.create(record, { maxActivePerOrg: 10 });
      expect(await codeOf(store.create(record, { maxActivePerOrg: 10 }))).toBe('CONFLICT');
    });

    it('replaces only with the etag it read, and hands out a new one', async () => {
      const created = await store.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      const started = apply(created, { type: 'attempt_started' }, new Date());
      const replaced = await store.replace(started);
      expect(replaced.etag).not.toBe(created.etag);
      expect((await store.get({ orgId: created.orgId, deploymentId: created.id }))?.status).toBe('in_progress');
      // a writer still holding the first etag loses
      const stale = apply(created, { type: 'cancel_requested' }, new Date());
      expect(await codeOf(store.replace(stale))).toBe('CONCURRENT_UPDATE');
      expect((await store.get({ orgId: created.orgId, deploymentId: created.id }))?.status).toBe('in_progress');
    });

    it('lets exactly one of two writers with the same etag win', async () => {
      const created = await store.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      const results = await Promise.allSettled([
        store.replace(apply(created, { type: 'attempt_started' }, new Date())),
        store.replace(apply(created, { type: 'cancel_requested' }, new Date())),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const rejected = results.find((r) => r.status === 'rejected');
      expect((rejected?.reason as DeployError).code).toBe('CONCURRENT_UPDATE');
    });

    it('loses no update when writers race through updateDeployment', async () => {
      const created = await store.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      const ref = { orgId: created.orgId, deploymentId: created.id };
      await updateDeployment(store, ref, () => [{ type: 'attempt_started' }]);
      // Each writer completes the next step: they must serialise, not overwrite each other.
      await Promise.all(
        STEPS.map(() =>
          updateDeployment(store, ref, (current) => {
            const next = STEPS.find((step) => current.steps[step].status !== 'completed');
            return next === undefined
              ? null
              : [
                  { type: 'step_started', step: next },
                  { type: 'step_completed', step: next, output: {} },
                ];
          }),
        ),
      );
      const final = await store.get(ref);
      expect(STEPS.map((step) => final?.steps[step].status)).toEqual(STEPS.map(() => 'completed'));
    });

    it('keeps the lease epoch: a takeover is a conditional write, one of two racing deliveries gets it, and the loser can tell', async () => {
      const created = await store.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      const ref = { orgId: created.orgId, deploymentId: created.id };
      const first = await store.replace(apply(created, { type: 'attempt_started' }, new Date()));
      expect(first.lease).toBe(1);
      // Two deliveries of the same attempt read the record and take it over at once: one epoch each
      // would mean two owners. Exactly one write lands; the other is a conflict.
      const takeovers = await Promise.allSettled([
        store.replace(apply(first, { type: 'attempt_started' }, new Date())),
        store.replace(apply(first, { type: 'attempt_started' }, new Date())),
      ]);
      expect(takeovers.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      expect(((takeovers.find((result) => result.status === 'rejected') as PromiseRejectedResult).reason as DeployError).code).toBe('CONCURRENT_UPDATE');
      const stored = await store.get(ref);
      expect(stored?.lease).toBe(2);
      // The first owner's next write, made with the record it last wrote, is refused: it is fenced.
      expect(await codeOf(store.replace(apply(first, { type: 'step_started', step: 'validate' }, new Date())))).toBe('CONCURRENT_UPDATE');
      // A superseded deployment is finished: counted as such, listed for retention, never live.
      const superseded = await store.replace(
        apply(stored ?? first, { type: 'superseded', error: { code: 'SUPERSEDED', message: 'a newer one is live', step: 'deploy' } }, new Date(Date.now() - 1000)),
      );
      expect(superseded.lease).toBe(2);
      expect((await store.countByStatus(ref.orgId)).superseded).toBe(1);
      expect(await store.countActive(ref.orgId)).toBe(0);
      expect((await store.listFinishedBefore(ref.orgId, new Date(Date.now() + 1000), 10)).map((record) => record.id)).toEqual([created.id]);
      expect(await store.latestCompleted(ref.orgId, created.appName)).toBeNull();
    });

    it('enforces the active-deployment limit per org, counting only queued and in-progress ones', async () => {
      const orgId = unique('org');
      const first = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 2 });
      await store.create(makeRecord({ orgId }), { maxActivePerOrg: 2 });
      expect(await store.countActive(orgId)).toBe(2);
      expect(await codeOf(store.create(makeRecord({ orgId }), { maxActivePerOrg: 2 }))).toBe('QUOTA_EXCEEDED');
      // another org is not affected
      await store.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 2 });
      // finishing one frees a slot
      await store.replace(apply(first, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, new Date()));
      await store.create(makeRecord({ orgId }), { maxActivePerOrg: 2 });
      expect(await store.countActive(orgId)).toBe(2);
      expect(await store.countByStatus(orgId)).toEqual({ queued: 2, in_progress: 0, completed: 0, failed: 1, cancelled: 0, superseded: 0 });
      // starting keeps the count; a retry counts again; deleting an active one frees its slot
      const failed = await store.get({ orgId, deploymentId: first.id });
      const running = (await store.listRecent(orgId, 10)).find((record) => record.status === 'queued');
      if (failed === null || running === undefined) throw new Error('records vanished');
      await store.replace(apply(running, { type: 'attempt_started' }, new Date()));
      expect(await store.countActive(orgId)).toBe(2);
      await store.delete({ orgId, deploymentId: running.id });
      expect(await store.countActive(orgId)).toBe(1);
      await store.replace(apply(failed, { type: 'retried' }, new Date()));
      expect(await store.countActive(orgId)).toBe(2);
      expect(await codeOf(store.create(makeRecord({ orgId }), { maxActivePerOrg: 2 }))).toBe('QUOTA_EXCEEDED');
    });

    it('lists a project newest first, in pages, without gaps or repeats', async () => {
      const orgId = unique('org');
      const projectId = unique('proj');
      const base = Date.parse('2026-01-01T00:00:00Z');
      const ids: string[] = [];
      for (let i = 0; i < 23; i += 1) {
        // two records share each timestamp: the order must still be total
        const record = makeRecord({ orgId, projectId }, new Date(base + Math.floor(i / 2) * 1000));
        ids.push(record.id);
        await store.create(record, { maxActivePerOrg: 100 });
      }
      await store.create(makeRecord({ orgId, projectId: unique('other') }), { maxActivePerOrg: 100 });
      await store.create(makeRecord({ orgId: unique('org'), projectId }), { maxActivePerOrg: 100 });

      const seen: string[] = [];
      const created: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await store.listByProject(orgId, projectId, { limit: 10, cursor });
        seen.push(...page.items.map((item) => item.id));
        created.push(...page.items.map((item) => item.createdAt));
        cursor = page.nextCursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      expect(pages).toBe(3);
      expect(new Set(seen)).toEqual(new Set(ids));
      expect(seen).toHaveLength(23);
      expect([...created].sort().reverse()).toEqual(created);
      const recent = (await store.listRecent(orgId, 5)).map((r) => r.createdAt);
      expect(recent).toHaveLength(5);
      expect([...recent].sort().reverse()).toEqual(recent);
    });

    it('finds a deployment by its idempotency key, within the org', async () => {
      const orgId = unique('org');
      const record = makeRecord({ orgId, idempotency: { key: 'key-1', requestHash: 'h' } });
      await store.create(record, { maxActivePerOrg: 10 });
      expect((await store.findByIdempotencyKey(orgId, 'key-1'))?.id).toBe(record.id);
      expect(await store.findByIdempotencyKey(orgId, 'key-2')).toBeNull();
      expect(await store.findByIdempotencyKey(unique('org'), 'key-1')).toBeNull();
    });

    it('lists finished deployments for retention, deletes them, and tells which completed one is live', async () => {
      const orgId = unique('org');
      const old = new Date('2026-01-01T00:00:00Z');
      const finish = async (status: 'completed' | 'failed', at: Date) => {
        let record = await store.create(makeRecord({ orgId }, at), { maxActivePerOrg: 10 });
        record = apply(record, { type: 'attempt_started' }, at);
        if (status === 'completed') {
          for (const step of STEPS) {
            record = apply(record, { type: 'step_started', step }, at);
            record = apply(record, { type: 'step_completed', step, output: {} }, at);
          }
          record = apply(record, { type: 'completed', result: { image: 'i', revision: 'r', url: 'u' } }, at);
        } else {
          record = apply(record, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, at);
        }
        return store.replace(record);
      };
      const a = await finish('completed', old);
      const b = await finish('failed', new Date(old.getTime() + 1000));
      const c = await finish('completed', new Date(old.getTime() + 2000));
      const running = await store.create(makeRecord({ orgId }, old), { maxActivePerOrg: 10 });
      const due = await store.listFinishedBefore(orgId, new Date(old.getTime() + 1500), 10);
      expect(due.map((r) => r.id)).toEqual([a.id, b.id]);
      expect((await store.listFinishedBefore(null, new Date('2100-01-01'), 1000)).map((r) => r.id)).toEqual(
        expect.arrayContaining([a.id, b.id, c.id]),
      );
      expect((await store.latestCompleted(orgId, c.appName))?.id).toBe(c.id);
      await store.delete({ orgId, deploymentId: a.id });
      expect(await store.get({ orgId, deploymentId: a.id })).toBeNull();
      expect(await store.get({ orgId, deploymentId: running.id })).not.toBeNull();
    });

    it('says which env variables the live deployment of an app ran with, as latestCompleted does (POST /deploy)', async () => {
      const orgId = unique('org');
      const complete = async (names: string[], at: Date) => {
        const base = makeRecord({ orgId }, at);
        let record = await store.create({ ...base, spec: { ...base.spec, envVariableNames: names } }, { maxActivePerOrg: 10 });
        record = apply(record, { type: 'attempt_started' }, at);
        for (const step of STEPS) {
          record = apply(record, { type: 'step_started', step }, at);
          record = apply(record, { type: 'step_completed', step, output: {} }, at);
        }
        return store.replace(apply(record, { type: 'completed', result: { image: 'i', revision: 'r', url: 'u' } }, at));
      };
      const old = await complete(['A'], new Date('2026-03-01T00:00:00Z'));
      const live = await complete(['API_KEY', 'VITE_URL'], new Date('2026-03-01T00:01:00Z'));
      // A newer deployment that has not completed is not the live one.
      await store.create(makeRecord({ orgId }, new Date('2026-03-01T00:02:00Z')), { maxActivePerOrg: 10 });
      expect(old.appName).toBe(live.appName);
      expect((await store.latestCompleted(orgId, live.appName))?.id).toBe(live.id);
      if (store.latestCompletedEnvNames === undefined) return; // optional: callers fall back on latestCompleted
      expect(await store.latestCompletedEnvNames(orgId, live.appName)).toEqual({ deploymentId: live.id, envVariableNames: ['API_KEY', 'VITE_URL'] });
      expect(await store.latestCompletedEnvNames(unique('org'), live.appName)).toBeNull();
      expect(await store.latestCompletedEnvNames(orgId, 'no-such-app')).toBeNull();
    });

    it('finds the newest completed deployment of a project with a build key, in any environment (build reuse)', async () => {
      const orgId = unique('org');
      const projectId = unique('proj');
      const key = `sha256:${'a'.repeat(64)}`;
      const base = Date.parse('2026-02-01T00:00:00Z');
      // Validate records the key on a running deployment; the store must pick it up on replace.
      const run = async (
        at: number,
        outcome: 'completed' | 'failed' | 'in_progress',
        options: { buildKey?: string; projectId?: string; orgId?: string; environment?: 'development' | 'production' } = {},
      ) => {
        const when = new Date(base + at * 1000);
        const owner = { orgId: options.orgId ?? orgId, projectId: options.projectId ?? projectId, environment: options.environment ?? 'development' };
        let record = await store.create(makeRecord(owner, when), { maxActivePerOrg: 100 });
        record = apply(record, { type: 'attempt_started' }, when);
        record = apply(record, { type: 'step_started', step: 'validate' }, when);
        record = apply(record, { type: 'step_completed', step: 'validate', output: { kind: 'static', buildKey: options.buildKey ?? key } }, when);
        record = await store.replace(record);
        if (outcome === 'in_progress') return record;
        if (outcome === 'failed') {
          return store.replace(apply(record, { type: 'failed', error: { code: 'DEPLOY_UNHEALTHY', message: 'x', step: 'deploy' } }, when));
        }
        for (const step of STEPS.slice(1)) {
          record = apply(record, { type: 'step_started', step }, when);
          record = apply(record, { type: 'step_completed', step, output: step === 'build' ? { image: `img-${record.id}` } : {} }, when);
        }
        return store.replace(apply(record, { type: 'completed', result: { image: `img-${record.id}`, revision: 'r', url: 'u' } }, when));
      };
      await run(0, 'completed');
      const newest = await run(1, 'completed', { environment: 'production' });
      await run(2, 'failed');
      await run(3, 'in_progress');
      await run(4, 'completed', { buildKey: `sha256:${'b'.repeat(64)}` });
      await run(5, 'completed', { projectId: unique('proj') });
      await run(6, 'completed', { orgId: unique('org') });

      const found = await store.latestCompletedWithBuildKey(orgId, projectId, key);
      expect(found?.id).toBe(newest.id);
      // The indexed copy of the key stays inside the adapter: the record reads back as stored.
      expect(found).toEqual(await store.get({ orgId, deploymentId: newest.id }));
      expect(found?.steps.build.output.image).toBe(`img-${newest.id}`);
      expect(await store.latestCompletedWithBuildKey(orgId, projectId, `sha256:${'c'.repeat(64)}`)).toBeNull();
      expect(await store.latestCompletedWithBuildKey(unique('org'), projectId, key)).toBeNull();
    });

    it('finds queued deployments whose job was never confirmed published (outbox)', async () => {
      const orgId = unique('org');
      const past = new Date(Date.now() - 60_000);
      const unpublished = await store.create(makeRecord({ orgId }, past), { maxActivePerOrg: 10 });
      const published = await store.create(apply(makeRecord({ orgId }, past), { type: 'published' }, past), { maxActivePerOrg: 10 });
      const fresh = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      const found = (await store.listUnpublished(new Date(Date.now() - 30_000), 1000)).map((r) => r.id);
      expect(found).toContain(unpublished.id);
      expect(found).not.toContain(published.id);
      expect(found).not.toContain(fresh.id);
    });

    /** A new org with a webhook registered: every write of its records keeps the events it carries. */
    const orgWithWebhook = async (overrides: Parameters<typeof makeWebhook>[1] = {}) => {
      const orgId = unique('org');
      await harness.webhooks.createWebhook(makeWebhook(orgId, overrides));
      return orgId;
    };

    // Webhook outbox (issues 13 and 16): the events a write carries are kept with it, apart from the record.
    it('keeps the webhook events a write carries in its outbox, with the write, and returns records without them', async () => {
      const orgId = await orgWithWebhook();
      const types = async (org = orgId) => (await store.listOutbox(1000, org)).map((entry) => `${entry.deploymentId}:${entry.event.type}`);
      const record = makeRecord({ orgId });
      expect(record.outbox?.map((event) => event.type)).toEqual(['deployment.queued']);
      const created = await store.create(record, { maxActivePerOrg: 10 });
      // Each event is written once: neither the returned record nor a read one carries it.
      expect(created.outbox).toBeUndefined();
      expect((await store.get({ orgId, deploymentId: created.id }))?.outbox).toBeUndefined();
      const [queued] = await store.listOutbox(1000, orgId);
      if (queued === undefined) throw new Error('the created record\'s event is not in the outbox');
      expect(queued).toEqual({ orgId, deploymentId: created.id, projectId: created.projectId, event: record.outbox?.[0] });

      const started = await store.replace(apply(created, { type: 'attempt_started' }, new Date()));
      expect(started.outbox).toBeUndefined();
      expect(await types()).toEqual([`${created.id}:deployment.queued`, `${created.id}:deployment.started`]);
      // A write that fails writes none of its events: a stale etag, a duplicate id.
      expect(await codeOf(store.replace(apply(created, { type: 'cancelled' }, new Date())))).toBe('CONCURRENT_UPDATE');
      expect(await codeOf(store.create({ ...record, outbox: [{ ...queued.event, id: 'evt_never' }] }, { maxActivePerOrg: 10 }))).toBe('CONFLICT');
      expect(await types()).toEqual([`${created.id}:deployment.queued`, `${created.id}:deployment.started`]);
      // A record that carries an event already written (a caller's older copy) keeps it once.
      const again = await store.replace({ ...started, outbox: [queued.event] });
      expect(await types()).toEqual([`${created.id}:deployment.queued`, `${created.id}:deployment.started`]);

      // Another org's events: listed across orgs, never in this org's listing.
      const other = await store.create(makeRecord({ orgId: await orgWithWebhook() }), { maxActivePerOrg: 10 });
      expect(await types()).not.toContain(`${other.id}:deployment.queued`);
      const all = (await store.listOutbox(1000)).map((entry) => entry.deploymentId);
      expect(all).toEqual(expect.arrayContaining([created.id, other.id]));
      expect(all.indexOf(created.id)).toBeLessThan(all.indexOf(other.id));

      // Fanned out: removed, once; removing again (another worker did) is no error.
      await store.removeOutbox([{ orgId, eventId: queued.event.id }]);
      await store.removeOutbox([{ orgId, eventId: queued.event.id }]);
      expect(await types()).toEqual([`${created.id}:deployment.started`]);
      // The record's later writes do not touch what is pending, and a deleted record's events stay.
      await store.replace(apply(again, { type: 'step_started', step: 'validate' }, new Date()));
      await store.delete({ orgId, deploymentId: created.id });
      expect(await types()).toEqual([`${created.id}:deployment.started`]);
      // The limit counts events, oldest first.
      const second = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      expect((await store.listOutbox(1, orgId)).map((entry) => entry.deploymentId)).toEqual([created.id]);
      await store.removeOutbox((await store.listOutbox(1000, orgId)).map((entry) => ({ orgId, eventId: entry.event.id })));
      expect(await types()).toEqual([]);
      expect(second.outbox).toBeUndefined();
    });

    // What a store may leave out: the events of writes committed while the org had no webhook at all.
    // From the first write after a webhook is registered (enabled or not: a disabled one can be
    // enabled again), every event is kept.
    it('keeps an org\'s events from the first write after a webhook is registered, a disabled one too', async () => {
      const orgId = unique('org');
      const types = async () => (await store.listOutbox(1000, orgId)).map((entry) => `${entry.deploymentId}:${entry.event.type}`);
      const before = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      // Kept or left out, as the store chooses: nothing is asserted of `deployment.queued` here.
      const left = (await types()).filter((type) => type !== `${before.id}:deployment.queued`);
      expect(left).toEqual([]);
      const webhook = await harness.webhooks.createWebhook(makeWebhook(orgId, { enabled: false, disabledReason: 'disabled by a test' }));
      const started = await store.replace(apply(before, { type: 'attempt_started' }, new Date()));
      const after = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      expect(await types()).toEqual(expect.arrayContaining([`${started.id}:deployment.started`, `${after.id}:deployment.queued`]));
      await store.removeOutbox((await store.listOutbox(1000, orgId)).map((entry) => ({ orgId, eventId: entry.event.id })));
      // The webhook deleted: later events may be left out again; none written before reappears.
      await harness.webhooks.deleteWebhook(orgId, webhook.id);
      await store.replace(apply(started, { type: 'cancelled' }, new Date()));
      expect((await types()).filter((type) => type !== `${started.id}:deployment.cancelled`)).toEqual([]);
    });

    it('finds in-progress deployments by the start of their attempt (timeout sweep)', async () => {
      const orgId = unique('org');
      const long = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      await store.replace(apply(long, { type: 'attempt_started' }, new Date(Date.now() - 3_600_000)));
      const recent = await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 });
      await store.replace(apply(recent, { type: 'attempt_started' }, new Date()));
      const found = (await store.listRunningStartedBefore(new Date(Date.now() - 60_000), 1000)).map((r) => r.id);
      expect(found).toContain(long.id);
      expect(found).not.toContain(recent.id);
    });

    // Apps (issue 12): app records beside the deployments, listed with the apps that have deployments.
    it('creates an app record once, replaces it only with the etag it read, and keeps it within its org', async () => {
      const orgId = unique('org');
      const projectId = unique('proj');
      expect(await store.getApp(orgId, appName(orgId, projectId, 'development'))).toBeNull();
      const at = new Date('2026-03-01T00:00:00Z');
      const created = await store.putApp(
        makeAppRecord({ orgId, projectId, env: [{ name: 'GREETING', scope: 'runtime', updatedAt: at.toISOString() }], envUpdatedAt: at.toISOString() }, at),
      );
      expect(created.etag).not.toBe('');
      const read = await store.getApp(orgId, created.appName);
      expect(read).toEqual(created);
      expect(read?.env).toEqual([{ name: 'GREETING', scope: 'runtime', updatedAt: at.toISOString() }]);
      // same app name in another org: a different app
      expect(await store.getApp(unique('org'), created.appName)).toBeNull();
      // a second create of the same app is a conflict, not an overwrite
      expect(await codeOf(store.putApp(makeAppRecord({ orgId, projectId })))).toBe('CONFLICT');
      expect((await store.getApp(orgId, created.appName))?.env).toHaveLength(1);

      const deleting = await store.putApp({ ...created, deletingSince: new Date().toISOString(), env: [] });
      expect(deleting.etag).not.toBe(created.etag);
      expect((await store.getApp(orgId, created.appName))?.deletingSince).toBe(deleting.deletingSince);
      // a writer still holding the first etag loses, and changes nothing
      expect(await codeOf(store.putApp({ ...created, envUpdatedAt: null }))).toBe('CONCURRENT_UPDATE');
      expect(await store.getApp(orgId, created.appName)).toEqual(deleting);
      // of two writers with the same etag exactly one wins
      const racing = await Promise.allSettled([store.putApp({ ...deleting, env: [] }), store.putApp({ ...deleting, deletingSince: null })]);
      expect(racing.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      expect(((racing.find((result) => result.status === 'rejected') as PromiseRejectedResult).reason as DeployError).code).toBe('CONCURRENT_UPDATE');

      await store.deleteApp(orgId, created.appName);
      expect(await store.getApp(orgId, created.appName)).toBeNull();
      await store.deleteApp(orgId, created.appName);
      // replacing a record that is gone is a stale write too; creating it again works
      expect(await codeOf(store.putApp(deleting))).toBe('CONCURRENT_UPDATE');
      expect((await store.putApp(makeAppRecord({ orgId, projectId }))).etag).not.toBe('');
    });

    it('an app record\'s env lease goes to exactly one of two replicas taking it at once, and round-trips with the delete job\'s progress', async () => {
      const orgId = unique('org');
      const free = await store.putApp(makeAppRecord({ orgId, projectId: unique('proj') }));
      const until = new Date(Date.now() + 60_000).toISOString();
      const taking = await Promise.allSettled(['lease_one', 'lease_two'].map((owner) => store.putApp({ ...free, envLock: { owner, until } })));
      const won = taking.filter((result): result is PromiseFulfilledResult<AppRecord> => result.status === 'fulfilled');
      expect(won).toHaveLength(1);
      expect(((taking.find((result) => result.status === 'rejected') as PromiseRejectedResult).reason as DeployError).code).toBe('CONCURRENT_UPDATE');
      const held = await store.getApp(orgId, free.appName);
      expect(held?.envLock).toEqual(won[0]?.value.envLock);
      const announced = new Date().toISOString();
      const released = await store.putApp({ ...(held as AppRecord), envLock: null, deletionAnnouncedAt: announced });
      expect(await store.getApp(orgId, free.appName)).toEqual(released);
      expect(released).toMatchObject({ envLock: null, deletionAnnouncedAt: announced });
    });

    it('does not let deleting an app record of one org touch another org\'s of the same name', async () => {
      const projectId = unique('proj');
      const [a, b] = [unique('org'), unique('org')];
      const recordA = await store.putApp(makeAppRecord({ orgId: a, projectId }));
      // (an appName embeds a hash of its org, so two orgs' names differ; the store must not rely on it)
      const recordB = await store.putApp(makeAppRecord({ orgId: b, projectId, appName: recordA.appName }));
      await store.deleteApp(a, recordA.appName);
      expect(await store.getApp(a, recordA.appName)).toBeNull();
      expect(await store.getApp(b, recordA.appName)).toEqual(recordB);
    });

    it('lists an org\'s apps by name, those with deployments and those with only a record, in pages', async () => {
      const orgId = unique('org');
      // An app known by its deployments alone (two of them: listed once), one by its record alone,
      // one by both, and 20 more to page through.
      const byDeployments = makeRecord({ orgId, projectId: unique('deps') });
      await store.create(byDeployments, { maxActivePerOrg: 100 });
      await store.create(makeRecord({ orgId, projectId: byDeployments.projectId }), { maxActivePerOrg: 100 });
      const byRecord = await store.putApp(makeAppRecord({ orgId, projectId: unique('rec'), environment: 'production' }));
      const both = makeRecord({ orgId, projectId: unique('both') });
      await store.create(both, { maxActivePerOrg: 100 });
      await store.putApp(makeAppRecord({ orgId, projectId: both.projectId }));
      const expected: AppRef[] = [
        { orgId, projectId: byDeployments.projectId, environment: 'development', appName: byDeployments.appName },
        { orgId, projectId: byRecord.projectId, environment: 'production', appName: byRecord.appName },
        { orgId, projectId: both.projectId, environment: 'development', appName: both.appName },
      ];
      for (let i = 0; i < 20; i += 1) {
        const environment = i % 2 === 0 ? 'development' : 'production';
        const projectId = unique('many');
        if (i % 3 === 0) {
          const record = await store.putApp(makeAppRecord({ orgId, projectId, environment }));
          expected.push({ orgId, projectId, environment, appName: record.appName });
        } else {
          const record = makeRecord({ orgId, projectId, environment });
          await store.create(record, { maxActivePerOrg: 100 });
          expected.push({ orgId, projectId, environment, appName: record.appName });
        }
      }
      // another org's apps are not listed
      await store.create(makeRecord({ orgId: unique('org'), projectId: byDeployments.projectId }), { maxActivePerOrg: 100 });
      await store.putApp(makeAppRecord({ orgId: unique('org'), projectId: byRecord.projectId, environment: 'production' }));

      const seen: AppRef[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Page<AppRef> = await store.listApps(orgId, { limit: 10, cursor });
        expect(page.items.length).toBeLessThanOrEqual(10);
        seen.push(...page.items);
        cursor = page.nextCursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      expect(pages).toBe(3);
      expect(seen).toHaveLength(23);
      const names = seen.map((app) => app.appName);
      expect(names).toEqual([...names].sort());
      expect([...seen].sort((x, y) => (x.appName < y.appName ? -1 : 1))).toEqual(
        [...expected].sort((x, y) => (x.appName < y.appName ? -1 : 1)),
      );
      // a record-only app goes with its record; a deployment-only app with its deployments
      await store.deleteApp(orgId, byRecord.appName);
      const deps = await store.listByApp(orgId, byDeployments.appName, { limit: 10, cursor: null });
      for (const record of deps.items) await store.delete({ orgId, deploymentId: record.id });
      const after = await store.listApps(orgId, { limit: 100, cursor: null });
      expect(after.items.map((app) => app.appName)).not.toContain(byRecord.appName);
      expect(after.items.map((app) => app.appName)).not.toContain(byDeployments.appName);
      expect(after.items.map((app) => app.appName)).toContain(both.appName);
      expect(after.items).toHaveLength(21);
      expect(after.nextCursor).toBeNull();
      expect(await store.listApps(unique('org'), { limit: 10, cursor: null })).toEqual({ items: [], nextCursor: null });
    });

    it('lists an app\'s deployments newest first, in any status, in pages, within its org', async () => {
      const orgId = unique('org');
      const projectId = unique('proj');
      const base = Date.parse('2026-04-01T00:00:00Z');
      const ids: string[] = [];
      for (let i = 0; i < 13; i += 1) {
        // two records share each timestamp: the order must still be total
        const at = new Date(base + Math.floor(i / 2) * 1000);
        let record = await store.create(makeRecord({ orgId, projectId }, at), { maxActivePerOrg: 100 });
        if (i % 3 === 1) record = await store.replace(apply(record, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, at));
        if (i % 3 === 2) record = await store.replace(apply(record, { type: 'attempt_started' }, at));
        ids.push(record.id);
      }
      // the same project in the other environment, another project, another org: other apps
      await store.create(makeRecord({ orgId, projectId, environment: 'production' }), { maxActivePerOrg: 100 });
      await store.create(makeRecord({ orgId, projectId: unique('proj') }), { maxActivePerOrg: 100 });
      await store.create(makeRecord({ orgId: unique('org'), projectId }), { maxActivePerOrg: 100 });
      const app = appName(orgId, projectId, 'development');

      const seen: DeploymentRecord[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Page<DeploymentRecord> = await store.listByApp(orgId, app, { limit: 5, cursor });
        seen.push(...page.items);
        cursor = page.nextCursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      expect(pages).toBe(3);
      expect(seen).toHaveLength(13);
      expect(new Set(seen.map((record) => record.id))).toEqual(new Set(ids));
      expect(new Set(seen.map((record) => record.status))).toEqual(new Set(['queued', 'failed', 'in_progress']));
      const created = seen.map((record) => record.createdAt);
      expect([...created].sort().reverse()).toEqual(created);
      expect(seen[0]).toEqual(await store.get({ orgId, deploymentId: seen[0]?.id ?? '' }));
      expect(await store.listByApp(unique('org'), app, { limit: 5, cursor: null })).toEqual({ items: [], nextCursor: null });
    });

    it('records worker heartbeats', async () => {
      const workerId = unique('worker');
      const beat = { workerId, host: 'h', version: '3', startedAt: new Date().toISOString(), running: 1, capacity: 5 };
      await store.recordHeartbeat({ ...beat, lastSeenAt: new Date().toISOString() });
      await store.recordHeartbeat({ ...beat, running: 2, lastSeenAt: new Date().toISOString() });
      const mine = (await store.listHeartbeats()).filter((h) => h.workerId === workerId);
      expect(mine).toHaveLength(1);
      expect(mine[0]?.running).toBe(2);
    });

    it('reports itself healthy', async () => {
      expect((await store.health()).status).toBe('healthy');
    });
  });
}
