import { afterEach, describe, expect, it } from 'vitest';
import type { AppJobMessage, DeploymentRecord, Environment, WebhookEndpoint } from '@zepid/core';
import { parseLogLines, projectKey, sha256Hex, silentLogger, updateDeployment } from '@zepid/core';
import { ImageRetention } from '../src/retention.ts';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';
import { makeWebhook } from '@zepid/testkit';

const terminal = (record: DeploymentRecord) => ['completed', 'failed', 'cancelled', 'superseded'].includes(record.status);

/**
 * Starts the harness's webhook store and registers a webhook of the harness's org (`org_w`): the
 * store keeps the webhook events of an org's writes only while the org has a webhook.
 */
async function registerWebhook(h: WorkerHarness, events: WebhookEndpoint['events']): Promise<void> {
  await h.adapters.webhooks.start();
  await h.adapters.webhooks.createWebhook(makeWebhook('org_w', { id: 'wh_aaaaaaaaaaaaaaaaaaaaaaaaaa', url: 'https://hooks.example/zepid', events }));
}

describe('rollback and config deployments (issue 12): no build', () => {
  let h: WorkerHarness;
  let webhooks = false;
  afterEach(async () => {
    if (webhooks) await h.adapters.webhooks.close();
    webhooks = false;
    await h.close();
  });

  const runToEnd = (record: DeploymentRecord) => eventually(() => h.get(record), terminal);
  const deploy = async (options?: Parameters<WorkerHarness['submit']>[0]) => runToEnd(await h.submit(options));
  const logOf = async (record: DeploymentRecord) =>
    parseLogLines(await h.adapters.artifacts.readLog(record.id)).map((line) => `${line.step ?? '-'}: ${line.message}`);
  /** A harness whose org has a webhook: its writes' events are kept in the outbox. */
  const harnessWithWebhook = async () => {
    h = await createWorkerHarness();
    await registerWebhook(h, null);
    webhooks = true;
  };
  /** The webhook events the deployment's writes put in the store's outbox (no dispatcher runs here). */
  const eventTypesOf = async (record: { orgId: string; id: string }) =>
    (await h.adapters.store.listOutbox(1000, record.orgId)).filter((entry) => entry.deploymentId === record.id).map((entry) => entry.event.type);
  const builderWork = () => h.builder.calls.filter((call) => call.startsWith('build ') || call.startsWith('createSandbox ') || call.startsWith('deleteImage '));

  it('a rollback of v1 after v2 went live puts v1\'s image back live: sync, sandbox and build skipped, nothing built', async () => {
    await harnessWithWebhook();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    expect([v1.status, v2.status]).toEqual(['completed', 'completed']);
    const before = builderWork();
    const events: { name: string; properties: Record<string, string> }[] = [];
    const { telemetry } = h.adapters;
    const send = telemetry.event.bind(telemetry);
    telemetry.event = (name, properties) => {
      events.push({ name, properties: properties });
      send(name, properties);
    };

    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('completed');
    expect(events.find((event) => event.name === 'AppRolledBack')?.properties).toMatchObject({ deploymentId: rollback.id, rollbackOf: v1.id, url: rollback.result.url });
    expect(builderWork()).toEqual(before);
    expect(rollback.result.image).toBe(`img-${v1.id}@sha256:abc`);
    expect(h.runtime.live.get(v1.appName)).toBe(rollback.result.revision);
    expect(h.runtime.specs.at(-1)).toMatchObject({ deploymentId: rollback.id, image: `img-${v1.id}`, imageDigest: 'sha256:abc', reactivateRevision: v1.result.revision });
    expect(Object.fromEntries(Object.entries(rollback.steps).map(([step, state]) => [step, state.status]))).toEqual({
      validate: 'completed',
      sync: 'skipped',
      sandbox: 'skipped',
      build: 'skipped',
      deploy: 'completed',
      cleanup: 'completed',
    });
    expect(rollback.progress).toBe(100);
    expect(rollback.steps.build.output).toEqual({ image: `img-${v1.id}`, digest: 'sha256:abc', reusedFrom: v1.id });
    expect(rollback.steps.validate.output).toMatchObject({ reusedFrom: v1.id, reusedImage: `img-${v1.id}`, plan: v1.steps.validate.output.plan });
    // The webhook events of the completing write: deployment.succeeded and app.rolled_back, same data.
    expect(await eventTypesOf(rollback)).toEqual(expect.arrayContaining(['deployment.succeeded', 'app.rolled_back']));
    const log = (await logOf(rollback)).join('\n');
    expect(log).toContain(`validate: rollback to ${v1.id}: runs the image built by ${v1.id}`);
    expect(log).toContain('build: rollback deployment: runs the image built by');

    // A rollback of a rollback names the deployment that built the image, not the rollback.
    const again = await deploy({ kind: { kind: 'rollback', of: v2 } });
    const back = await deploy({ kind: { kind: 'rollback', of: rollback } });
    expect([again.status, back.status]).toEqual(['completed', 'completed']);
    expect(back.imageOf).toBe(v1.id);
    expect(back.result.image).toBe(`img-${v1.id}@sha256:abc`);
    expect(builderWork()).toEqual(before);
  });

  it('a config deployment restarts the live image with the new env values: a new revision, never the kept one, nothing built', async () => {
    await harnessWithWebhook();
    h.consumer().start();
    const live = await deploy({ env: { GREETING: 'hello' } });
    const before = builderWork();
    const config = await deploy({ kind: { kind: 'config', of: live }, env: { GREETING: 'bonjour' } });
    expect(config.status).toBe('completed');
    expect(builderWork()).toEqual(before);
    expect(config.steps.deploy.output.kept).toBe(false);
    expect(config.result.revision).not.toBe(live.result.revision);
    expect(h.runtime.live.get(live.appName)).toBe(config.result.revision);
    expect(h.runtime.specs.at(-1)).toMatchObject({ deploymentId: config.id, image: `img-${live.id}`, envVariableNames: ['GREETING'], reactivateRevision: null });
    expect(await eventTypesOf(config)).toContain('app.env_changed');
    expect(JSON.stringify(config)).not.toContain('bonjour');
    expect((await logOf(config)).join('\n')).not.toContain('bonjour');
  });

  it('a rollback whose image is gone fails clearly in validate, and touches nothing live', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    h.builder.images.delete(v1.id);
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(rollback.error).toMatchObject({ code: 'SOURCE_INVALID', step: 'validate' });
    expect(rollback.error?.message).toContain(`The image of ${v1.id} is no longer kept`);
    expect(h.runtime.live.get(v1.appName)).toBe(v2.result.revision);
    expect(h.builder.calls.filter((call) => call.startsWith('build '))).toHaveLength(2);
  });

  it('a rollback whose image retention marked removed fails without asking the builder', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    await deploy({ files: { 'index.html': 'v2' } });
    const stored = await h.get(v1);
    await h.adapters.store.replace({ ...stored, steps: { ...stored.steps, build: { ...stored.steps.build, output: { ...stored.steps.build.output, imageRemovedAt: '2026-01-01T00:00:00.000Z' } } } });
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(rollback.error?.message).toContain('retention removed it at 2026-01-01T00:00:00.000Z');
  });

  it('a failed rollback compensates its revision but never removes the image it reused', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    h.runtime.behaviour = { fail: new (await import('@zepid/core')).DeployError('DEPLOY_UNHEALTHY', 'unhealthy') };
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(h.builder.calls).not.toContain(`deleteImage ${v1.id}`);
    expect(h.builder.images.has(v1.id)).toBe(true);
    expect(h.runtime.live.get(v1.appName)).toBe(v2.result.revision);
  });
});

describe('delete-app job (issue 12)', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.adapters.webhooks.close();
    await h.close();
  });

  const runToEnd = (record: DeploymentRecord) => eventually(() => h.get(record), terminal);
  const deploy = async (options?: Parameters<WorkerHarness['submit']>[0]) => runToEnd(await h.submit(options));

  async function setUp(options: Parameters<typeof createWorkerHarness>[0] = {}) {
    h = await createWorkerHarness(options);
    await registerWebhook(h, ['app.deleted']);
  }

  /** What the API does on DELETE /projects/:projectId: marks the app deleting, then publishes the job. */
  async function requestDelete(record: DeploymentRecord, environment: Environment | null = 'development'): Promise<AppJobMessage> {
    const now = new Date().toISOString();
    const app = { orgId: record.orgId, projectId: record.projectId, environment: record.environment, appName: record.appName };
    const existing = await h.adapters.store.getApp(app.orgId, app.appName);
    await h.adapters.store.putApp(existing === null ? { ...app, env: [], envUpdatedAt: null, deletingSince: now, createdAt: now, updatedAt: now, etag: '' } : { ...existing, deletingSince: now });
    const message: AppJobMessage = { kind: 'delete-app', orgId: record.orgId, projectId: record.projectId, environment, requestedAt: now, traceparent: null };
    await h.adapters.queue.publish(message, { messageId: `delete:${projectKey(record.orgId, record.projectId)}:${environment ?? 'all'}:${now}`, sessionId: projectKey(record.orgId, record.projectId) });
    return message;
  }

  /** Nothing of the app left: records, app record, env values, artifacts, images. */
  async function expectGone(records: readonly DeploymentRecord[]) {
    const [first] = records;
    if (first === undefined) throw new Error('no records');
    for (const record of records) {
      expect(await h.adapters.store.get({ orgId: record.orgId, deploymentId: record.id })).toBeNull();
      expect(await h.adapters.secrets.get(record.id)).toEqual({});
      expect(await h.adapters.artifacts.getSource({ orgId: record.orgId, deploymentId: record.id })).toBeNull();
      expect(h.builder.images.has(record.id)).toBe(false);
    }
    expect(await h.adapters.store.getApp(first.orgId, first.appName)).toBeNull();
    expect((await h.adapters.store.listByApp(first.orgId, first.appName, { limit: 10, cursor: null })).items).toEqual([]);
    expect(await h.adapters.secrets.getAppEnv({ orgId: first.orgId, projectId: first.projectId, environment: first.environment, appName: first.appName })).toEqual({});
    expect(h.runtime.live.has(first.appName)).toBe(false);
  }

  it('removes the app and everything it owns, sends app.deleted once; a second request is harmless', async () => {
    await setUp();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1', 'shared.css': 'body {}' }, env: { GREETING: 'hello' } });
    const v2 = await deploy({ files: { 'index.html': 'v2', 'shared.css': 'body {}' }, env: { GREETING: 'hello' } });
    // Another app of the org stores a file of the same content: one object, named by both apps' manifests.
    const other = await deploy({ projectId: 'other', files: { 'index.html': 'other', 'style.css': 'body {}' } });
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 }, env: { GREETING: 'hello' } });
    const app = { orgId: v1.orgId, projectId: v1.projectId, environment: v1.environment, appName: v1.appName };
    await h.adapters.secrets.putAppEnv(app, { GREETING: 'hello' });
    expect([...h.builder.images].sort()).toEqual([v1.id, v2.id, other.id].sort());

    await requestDelete(v1);
    await eventually(() => h.adapters.store.getApp(v1.orgId, v1.appName), (record) => record === null);
    await expectGone([v1, v2, rollback]);
    // The app's webhook events still pending (no dispatcher runs here) were fanned out before app.deleted
    // and left the outbox; the other app's stay for the dispatcher.
    const pending = new Set((await h.adapters.store.listOutbox(1000, 'org_w')).map((entry) => entry.deploymentId));
    expect([v1, v2, rollback].filter((record) => pending.has(record.id))).toEqual([]);
    expect(pending.has(other.id)).toBe(true);
    // Its source objects went with it, at once (not after the sweep's grace), but for the one the other app names.
    const object = (text: string) => h.adapters.artifacts.getObject('org_w', sha256Hex(text));
    expect([await object('v1'), await object('v2')]).toEqual([null, null]);
    expect((await object('body {}'))?.toString()).toBe('body {}');
    expect((await h.get(other)).status).toBe('completed');
    expect(h.builder.calls.filter((call) => call.startsWith('deleteImage ')).sort()).toEqual([`deleteImage ${v1.id}`, `deleteImage ${v2.id}`].sort());
    const deliveries = await h.adapters.webhooks.listDeliveries('org_w', 'wh_aaaaaaaaaaaaaaaaaaaaaaaaaa', 10);
    expect(deliveries.map((delivery) => delivery.eventType)).toEqual(['app.deleted']);
    expect(JSON.parse(deliveries[0]?.payload ?? '{}')).toMatchObject({
      type: 'app.deleted',
      data: { deploymentId: null, projectId: v1.projectId, environment: 'development', appName: v1.appName, status: 'deleted', url: rollback.result.url },
    });
    expect(deliveries[0]?.payload).not.toContain('hello');

    // Again (the API answers a second DELETE with 202 and may publish again): nothing to do, no second event.
    const removals = h.runtime.removed.length;
    await h.appDeletion.run({ kind: 'delete-app', orgId: v1.orgId, projectId: v1.projectId, environment: 'development', requestedAt: new Date().toISOString(), traceparent: null }, 'delete:again', AbortSignal.timeout(5000));
    expect(h.runtime.removed.length).toBe(removals);
    expect(await h.adapters.webhooks.listDeliveries('org_w', 'wh_aaaaaaaaaaaaaaaaaaaaaaaaaa', 10)).toHaveLength(1);
  });

  it('a crash halfway and a redelivery finish the job: the same event, nothing left', async () => {
    await setUp();
    const consumer = h.consumer();
    consumer.start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    await consumer.stop();
    const announced: Record<string, string>[] = [];
    const { telemetry } = h.adapters;
    const send = telemetry.event.bind(telemetry);
    telemetry.event = (name, properties) => {
      if (name === 'AppDeleted') announced.push(properties);
      send(name, properties);
    };
    // Crash after the first record is deleted: in a direct run, and in the consumer's own delivery of the job.
    const { store } = h.adapters;
    const realDelete = store.delete.bind(store);
    let deleted = 0;
    store.delete = async (ref) => {
      deleted += 1;
      if (deleted >= 2) throw new Error('worker killed');
      await realDelete(ref);
    };
    const message = await requestDelete(v1);
    await expect(h.appDeletion.run(message, 'delete:crash', AbortSignal.timeout(5000))).rejects.toThrow('worker killed');
    store.delete = realDelete;
    // Halfway: one record gone, the other and the app record still there.
    expect((await h.adapters.store.listByApp(v1.orgId, v1.appName, { limit: 10, cursor: null })).items).toHaveLength(1);
    expect(await h.adapters.store.getApp(v1.orgId, v1.appName)).not.toBeNull();
    // Redelivered: it finishes; then the consumer's delivery of the published job finds nothing left.
    await h.appDeletion.run(message, 'delete:crash', AbortSignal.timeout(5000));
    await expectGone([v1, v2]);
    h.consumer().start();
    await eventually(() => h.adapters.queue.counts(), (counts) => counts.active === 0 && counts.scheduled === 0);
    await expectGone([v1, v2]);
    await eventually(() => h.adapters.webhooks.listDeliveries('org_w', 'wh_aaaaaaaaaaaaaaaaaaaaaaaaaa', 10), (list) => list.length >= 1);
    expect(await h.adapters.webhooks.listDeliveries('org_w', 'wh_aaaaaaaaaaaaaaaaaaaaaaaaaa', 10)).toHaveLength(1);
    // Telemetry AppDeleted once for the deletion, though three deliveries ran past the point where it is sent.
    expect(announced).toEqual([expect.objectContaining({ appName: v1.appName, deployments: '2' })]);
  });

  it('cancels a running deployment of the app first, hands the session back, and finishes once it ended', async () => {
    await setUp({ stepDelayMs: 200 });
    h.consumer().start();
    const live = await deploy({ files: { 'index.html': 'v1' } });
    const running = await h.submit({ files: { 'index.html': 'v2' } });
    await eventually(() => h.get(running), (record) => record.status === 'in_progress');
    await requestDelete(live);
    await eventually(() => h.adapters.store.getApp(live.orgId, live.appName), (record) => record === null, 20_000);
    await expectGone([live, running]);
    expect(h.builder.sandboxes.has(running.id)).toBe(false);
  });

  it('keeps an image another environment of the project runs (reused build) until that one is deleted too', async () => {
    await setUp();
    h.consumer().start();
    const development = await deploy({ files: { 'index.html': 'same' } });
    const production = await deploy({ files: { 'index.html': 'same' }, environment: 'production' });
    expect(production.steps.build.output.reusedFrom).toBe(development.id);
    await requestDelete(development);
    await eventually(() => h.adapters.store.getApp(development.orgId, development.appName), (record) => record === null);
    expect(h.builder.images.has(development.id)).toBe(true);
    expect((await h.get(production)).status).toBe('completed');
    // A rollback in production still finds its image, though the deployment that built it is gone.
    const rollback = await deploy({ kind: { kind: 'rollback', of: production } });
    expect(rollback.status).toBe('completed');
    await requestDelete(production, 'production');
    await eventually(() => h.adapters.store.getApp(production.orgId, production.appName), (record) => record === null);
    expect(h.builder.images.has(development.id)).toBe(false);
  });

  it('dead-letters a malformed delete-app message', async () => {
    await setUp();
    h.consumer().start();
    await h.adapters.queue.publish({ kind: 'delete-app', orgId: 'org_w', projectId: 'site', environment: 'nowhere', requestedAt: 'x', traceparent: null } as unknown as AppJobMessage, {
      messageId: 'delete:bad',
      sessionId: 'bad',
    });
    const dead = await eventually(() => h.adapters.queue.listDeadLettered(10), (list) => list.length > 0);
    expect(dead[0]).toMatchObject({ messageId: 'delete:bad', reason: 'MALFORMED_MESSAGE' });
  });
});

describe('image retention (KEEP_IMAGES_PER_APP)', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  const runToEnd = (record: DeploymentRecord) => eventually(() => h.get(record), terminal);
  /** To the end, retention included: a completed record is written before retention runs. */
  const deploy = async (options?: Parameters<WorkerHarness['submit']>[0]) => {
    const record = await runToEnd(await h.submit(options));
    if (record.status === 'completed') await h.afterCompleted(record);
    return record;
  };
  const removedAt = async (record: DeploymentRecord) => (await h.get(record)).steps.build.output.imageRemovedAt;

  it('keeps the newest distinct images of each app (the live one first) and marks the deployments whose image went', async () => {
    h = await createWorkerHarness({ keepImagesPerApp: 2 });
    h.consumer().start();
    const [v1, v2, v3] = [await deploy({ files: { 'index.html': 'v1' } }), await deploy({ files: { 'index.html': 'v2' } }), await deploy({ files: { 'index.html': 'v3' } })];
    expect([...h.builder.images].sort()).toEqual([v2.id, v3.id].sort());
    expect(typeof (await removedAt(v1))).toBe('string');
    expect(await removedAt(v2)).toBeUndefined();
    // A rollback to v2 runs its image: the newest two images are v2's (live) and v3's.
    const rollback = await deploy({ kind: { kind: 'rollback', of: v2 } });
    expect(rollback.status).toBe('completed');
    expect([...h.builder.images].sort()).toEqual([v2.id, v3.id].sort());
    // Restarts with new env values run the same image: they do not push older images out.
    await deploy({ kind: { kind: 'config', of: rollback }, env: {} });
    await deploy({ kind: { kind: 'config', of: rollback }, env: {} });
    expect([...h.builder.images].sort()).toEqual([v2.id, v3.id].sort());
    const v4 = await deploy({ files: { 'index.html': 'v4' } });
    expect([...h.builder.images].sort()).toEqual([v2.id, v4.id].sort());
    expect(typeof (await removedAt(v3))).toBe('string');
    // The API refuses a rollback to v3 (imageRemovedAt); one that slipped through fails clearly.
    const late = await deploy({ kind: { kind: 'rollback', of: v3 } });
    expect(late.error?.message).toContain(`The image of ${v3.id} is no longer kept: retention removed it`);
  });

  it('keeps an image another environment of the project runs', async () => {
    h = await createWorkerHarness({ keepImagesPerApp: 1 });
    h.consumer().start();
    const shared = await deploy({ files: { 'index.html': 'shared' } });
    const production = await deploy({ files: { 'index.html': 'shared' }, environment: 'production' });
    expect(production.steps.build.output.reusedFrom).toBe(shared.id);
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    // Development moved on; production still runs the shared image.
    expect([...h.builder.images].sort()).toEqual([shared.id, v2.id].sort());
    const p2 = await deploy({ files: { 'index.html': 'p2' }, environment: 'production' });
    expect([...h.builder.images].sort()).toEqual([v2.id, p2.id].sort());
  });

  it('keeps an image a queued rollback is about to run', async () => {
    h = await createWorkerHarness({ keepImagesPerApp: 5 });
    const consumer = h.consumer();
    consumer.start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    await deploy({ files: { 'index.html': 'v2' } });
    await consumer.stop();
    const waiting = await h.submit({ kind: { kind: 'rollback', of: v1 } });
    const retention = new ImageRetention({ adapters: h.adapters, logger: silentLogger, keepPerApp: 1 });
    expect(await retention.enforce('org_w', 'site')).toEqual([]);
    await updateDeployment(h.adapters.store, { orgId: waiting.orgId, deploymentId: waiting.id }, () => [{ type: 'cancel_requested' }]);
    expect(await retention.enforce('org_w', 'site')).toEqual([v1.id]);
    expect(h.builder.images.has(v1.id)).toBe(false);
  });
});
