import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Container } from '@azure/cosmos';
import { CosmosClient } from '@azure/cosmos';
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/identity';
import type { AppRecord, AppRef, DeploymentRecord, Page } from '@zepid/core';
import { apply, DeployError, STEPS } from '@zepid/core';
import { makeRecord, storeContract, streamLeaseContract, webhookContract } from '@zepid/testkit';
import type { CosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import { startCosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toStoreError } from '../src/cosmos/errors.ts';
import type { CosmosStoreOptions } from '../src/cosmos/store.ts';
import { CosmosDeploymentStore } from '../src/cosmos/store.ts';
import { CosmosStreamLeaseStore } from '../src/cosmos/stream-leases.ts';
import { CosmosWebhookStore } from '../src/cosmos/webhooks.ts';

const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 10)}`;

async function errorOf(promise: Promise<unknown>): Promise<DeployError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DeployError) return error;
    throw error;
  }
  throw new Error('expected a DeployError');
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

storeContract('Cosmos DB (cosmosdb-server)', async () => {
  const emulator = await startCosmosEmulator();
  const store = new CosmosDeploymentStore({
    connectionString: emulator.connectionString,
    databaseId: 'zepid-deploy',
    containerId: 'deployments',
    createIfMissing: true,
    retentionDays: 30,
  });
  const webhooks = new CosmosWebhookStore(store);
  await store.start();
  await webhooks.start();
  return {
    store,
    webhooks,
    dispose: async () => {
      await webhooks.close();
      await store.close();
      await emulator.stop();
    },
  };
});

webhookContract('Cosmos DB (cosmosdb-server)', async () => {
  const emulator = await startCosmosEmulator();
  const options = { connectionString: emulator.connectionString, databaseId: 'zepid-deploy', containerId: 'deployments', createIfMissing: true, retentionDays: 30 };
  const store = new CosmosDeploymentStore(options);
  const webhooks = new CosmosWebhookStore(store);
  await store.start();
  await webhooks.start();
  return {
    store,
    webhooks,
    dispose: async () => {
      await webhooks.close();
      await store.close();
      await emulator.stop();
    },
  };
});

streamLeaseContract('Cosmos DB (cosmosdb-server)', async () => {
  const emulator = await startCosmosEmulator();
  const store = new CosmosDeploymentStore({ connectionString: emulator.connectionString, databaseId: 'zepid-deploy', containerId: 'deployments', createIfMissing: true, retentionDays: 30 });
  const leases = new CosmosStreamLeaseStore(store);
  await store.start();
  await leases.start();
  return {
    leases,
    dispose: async () => {
      await leases.close();
      await store.close();
      await emulator.stop();
    },
  };
});

describe('CosmosWebhookStore shares the deployment store\'s client', () => {
  it('works exactly while the deployment store is started: it opens no client of its own', async () => {
    const emulator = await startCosmosEmulator();
    try {
      const options = { connectionString: emulator.connectionString, databaseId: 'zepid-deploy', containerId: 'deployments', createIfMissing: true, retentionDays: 30 };
      const store = new CosmosDeploymentStore(options);
      const webhooks = new CosmosWebhookStore(store);
      await webhooks.start();
      await expect(webhooks.listWebhooks('org_shared')).rejects.toThrow('CosmosDeploymentStore is not started');
      await store.start();
      expect(await webhooks.listWebhooks('org_shared')).toEqual([]);
      expect(await webhooks.health()).toMatchObject({ status: 'healthy' });
      await webhooks.close();
      // Closing the webhook store leaves the shared client alone; closing the deployment store ends both.
      expect(await webhooks.listWebhooks('org_shared')).toEqual([]);
      await store.close();
      await expect(webhooks.listWebhooks('org_shared')).rejects.toThrow('CosmosDeploymentStore is not started');
    } finally {
      await emulator.stop();
    }
  });
});

describe('CosmosDeploymentStore on cosmosdb-server', () => {
  let emulator: CosmosEmulator;
  let raw: CosmosClient;
  let store: CosmosDeploymentStore;
  let container: Container;
  const options = (overrides: Partial<CosmosStoreOptions> = {}) =>
    ({
      connectionString: emulator.connectionString,
      databaseId: 'zepid-deploy',
      containerId: 'deployments',
      createIfMissing: true,
      retentionDays: 7,
      ...overrides,
    }) as CosmosStoreOptions;

  beforeAll(async () => {
    emulator = await startCosmosEmulator();
    store = new CosmosDeploymentStore(options());
    await store.start();
    raw = new CosmosClient(emulator.connectionString);
    container = raw.database('zepid-deploy').container('deployments');
  });
  afterAll(async () => {
    raw.dispose();
    await store.close();
    await emulator.stop();
  });

  const ttlOf = async (record: DeploymentRecord) => {
    const { resource } = await container.item(record.id, record.orgId).read<{ ttl?: number }>();
    return resource?.ttl;
  };
  const complete = (record: DeploymentRecord, at: Date) => {
    let next = apply(record, { type: 'attempt_started' }, at);
    for (const step of STEPS) {
      next = apply(next, { type: 'step_started', step }, at);
      next = apply(next, { type: 'step_completed', step, output: {} }, at);
    }
    return apply(next, { type: 'completed', result: { image: 'i', revision: 'r', url: 'u' } }, at);
  };

  it('creates the container partitioned by orgId, with TTL on and the listing index', async () => {
    const { resource } = await container.read();
    expect(resource?.partitionKey?.paths).toEqual(['/orgId']);
    expect(resource?.defaultTtl).toBe(-1);
    expect(resource?.indexingPolicy?.compositeIndexes).toHaveLength(1);
  });

  it('refuses a cursor it did not hand out, and one from another listing', async () => {
    const orgId = unique('org');
    for (let i = 0; i < 3; i += 1) await store.create(makeRecord({ orgId, projectId: 'p1' }), { maxActivePerOrg: 10 });
    const first = await store.listByProject(orgId, 'p1', { limit: 2, cursor: null });
    expect(first.items).toHaveLength(2);
    expect(first.nextCursor).not.toBeNull();
    expect((await errorOf(store.listByProject(orgId, 'p1', { limit: 2, cursor: 'not-a-cursor' }))).code).toBe('VALIDATION_ERROR');
    const forged = Buffer.from(JSON.stringify({ v: 1, scope: 'x', token: 'y' })).toString('base64url');
    expect((await errorOf(store.listByProject(orgId, 'p1', { limit: 2, cursor: forged }))).code).toBe('VALIDATION_ERROR');
    expect((await errorOf(store.listByProject(orgId, 'p2', { limit: 2, cursor: first.nextCursor }))).code).toBe('VALIDATION_ERROR');
    const second = await store.listByProject(orgId, 'p1', { limit: 2, cursor: first.nextCursor });
    expect(second.items).toHaveLength(1);
    expect(second.nextCursor).toBeNull();
  });

  it('makes an idempotency key unique within an org, not across orgs', async () => {
    const orgId = unique('org');
    const idempotency = { key: 'same-key', requestHash: 'h' };
    await store.create(makeRecord({ orgId, idempotency }), { maxActivePerOrg: 10 });
    expect((await errorOf(store.create(makeRecord({ orgId, idempotency }), { maxActivePerOrg: 10 }))).code).toBe('CONFLICT');
    await store.create(makeRecord({ orgId: unique('org'), idempotency }), { maxActivePerOrg: 10 });
  });

  it('lets failed records expire, stops the expiry on retry, and keeps the live completed one', async () => {
    const orgId = unique('org');
    const at = new Date('2026-02-01T00:00:00Z');
    const failed = await store.replace(
      apply(await store.create(makeRecord({ orgId }), { maxActivePerOrg: 10 }), { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, at),
    );
    expect(await ttlOf(failed)).toBe(7 * 86_400);
    const retried = await store.replace(apply(failed, { type: 'retried' }, at));
    expect(await ttlOf(retried)).toBeUndefined();

    const older = await store.replace(complete(await store.create(makeRecord({ orgId }, at), { maxActivePerOrg: 10 }), at));
    expect(await ttlOf(older)).toBeUndefined();
    const later = new Date(at.getTime() + 60_000);
    const newer = await store.replace(complete(await store.create(makeRecord({ orgId }, later), { maxActivePerOrg: 10 }), later));
    expect(await ttlOf(newer)).toBeUndefined();
    expect(await ttlOf(older)).toBe(7 * 86_400);
    expect((await store.latestCompleted(orgId, newer.appName))?.id).toBe(newer.id);
    // the record read back is unchanged by the expiry bookkeeping
    expect((await store.get({ orgId, deploymentId: older.id }))?.status).toBe('completed');
  });

  it('sets no expiry when retention is off', async () => {
    const keep = new CosmosDeploymentStore(options({ retentionDays: null }));
    await keep.start();
    try {
      const created = await keep.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      const failed = await keep.replace(apply(created, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, new Date()));
      expect(await ttlOf(failed)).toBeUndefined();
    } finally {
      await keep.close();
    }
  });

  it('authenticates with an Entra credential when given an endpoint', async () => {
    const scopes: string[] = [];
    const credential: TokenCredential = {
      getToken: (scope: string | string[], _options?: GetTokenOptions): Promise<AccessToken> => {
        scopes.push(...(Array.isArray(scope) ? scope : [scope]));
        return Promise.resolve({ token: 'fake-entra-token', expiresOnTimestamp: Date.now() + 3_600_000 });
      },
    };
    const entra = new CosmosDeploymentStore({
      endpoint: emulator.endpoint,
      credential,
      databaseId: 'zepid-deploy',
      containerId: 'deployments',
      createIfMissing: false,
      retentionDays: 7,
    });
    await entra.start();
    try {
      const created = await entra.create(makeRecord({ orgId: unique('org') }), { maxActivePerOrg: 10 });
      expect((await entra.get({ orgId: created.orgId, deploymentId: created.id }))?.id).toBe(created.id);
      expect(scopes.length).toBeGreaterThan(0);
      expect(scopes.every((scope) => scope.endsWith('/.default'))).toBe(true);
    } finally {
      await entra.close();
    }
  });

  it('refuses to start on a container that does not exist or is partitioned differently', async () => {
    const missing = new CosmosDeploymentStore(options({ containerId: 'absent', createIfMissing: false }));
    await expect(missing.start()).rejects.toThrow(/does not exist/);
    await raw.database('zepid-deploy').containers.createIfNotExists({ id: 'by-id', partitionKey: { paths: ['/id'] } });
    const wrong = new CosmosDeploymentStore(options({ containerId: 'by-id', createIfMissing: false }));
    await expect(wrong.start()).rejects.toThrow(/must be \/orgId/);
  });

  it('reports an unreachable account as a retryable DEPENDENCY_UNAVAILABLE, and unhealthy', async () => {
    const port = await closedPort();
    const down = new CosmosDeploymentStore(options({ connectionString: emulator.connectionString.replace(/:\d+\//, `:${port}/`) }));
    const error = await errorOf(down.start());
    expect(error.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(error.retryable).toBe(true);

    // a started store whose account goes away
    const other = await startCosmosEmulator();
    const orphan = new CosmosDeploymentStore(options({ connectionString: other.connectionString }));
    await orphan.start();
    await other.stop();
    try {
      const lost = await errorOf(orphan.get({ orgId: 'org_x', deploymentId: 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa' }));
      expect(lost.code).toBe('DEPENDENCY_UNAVAILABLE');
      expect(lost.retryable).toBe(true);
      const health = await orphan.health();
      expect(health.status).toBe('unhealthy');
      expect(health.detail).not.toContain('AccountKey');
    } finally {
      await orphan.close();
    }
  });

  describe('apps (issue 12)', () => {
    const appOf = (orgId: string, record: DeploymentRecord): AppRecord => ({
      orgId,
      projectId: record.projectId,
      environment: record.environment,
      appName: record.appName,
      env: [{ name: 'GREETING', scope: 'runtime', updatedAt: '2026-12-06T18:00:00.000Z' }],
      envUpdatedAt: '2026-12-06T18:00:00.000Z',
      deletingSince: null,
      createdAt: '2026-12-06T18:00:00.000Z',
      updatedAt: '2026-12-06T18:00:00.000Z',
      etag: '',
    });

    it('creates an app record once, replaces it only with the etag read, and deletes it idempotently', async () => {
      const orgId = unique('org');
      const app = appOf(orgId, makeRecord({ orgId, projectId: 'web' }));
      expect(await store.getApp(orgId, app.appName)).toBeNull();
      const created = await store.putApp(app);
      expect(created.etag).not.toBe('');
      expect(await store.getApp(orgId, app.appName)).toEqual(created);
      expect(await store.getApp('another_org', app.appName)).toBeNull();
      expect((await errorOf(store.putApp(app))).code).toBe('CONFLICT');
      const deleting = await store.putApp({ ...created, deletingSince: '2026-12-06T19:00:00.000Z' });
      expect(deleting.etag).not.toBe(created.etag);
      const stale = await errorOf(store.putApp({ ...created, env: [] }));
      expect(stale.code).toBe('CONCURRENT_UPDATE');
      expect(stale.retryable).toBe(true);
      expect((await store.getApp(orgId, app.appName))?.deletingSince).toBe('2026-12-06T19:00:00.000Z');
      // The document sits in the org's partition, beside the deployments, told apart by type and id.
      const { resource } = await container.item(`app:${app.appName}`, orgId).read<{ type: string }>();
      expect(resource?.type).toBe('app');
      await store.deleteApp(orgId, app.appName);
      await store.deleteApp(orgId, app.appName);
      expect(await store.getApp(orgId, app.appName)).toBeNull();
      expect((await errorOf(store.putApp(deleting))).code).toBe('CONCURRENT_UPDATE');
    });

    it('keeps app records out of every deployment query', async () => {
      const orgId = unique('org');
      const record = await store.create(makeRecord({ orgId, projectId: 'web' }), { maxActivePerOrg: 10 });
      await store.putApp(appOf(orgId, record));
      expect((await store.listByProject(orgId, 'web', { limit: 10, cursor: null })).items.map((r) => r.id)).toEqual([record.id]);
      expect((await store.listRecent(orgId, 10)).map((r) => r.id)).toEqual([record.id]);
      expect(await store.countActive(orgId)).toBe(1);
      expect(Object.values(await store.countByStatus(orgId)).reduce((a, b) => a + b, 0)).toBe(1);
      expect(await store.get({ orgId, deploymentId: `app:${record.appName}` })).toBeNull();
      expect((await store.listUnpublished(new Date(Date.now() + 60_000), 1000)).filter((r) => r.orgId === orgId).map((r) => r.id)).toEqual([record.id]);
      expect((await store.listByApp(orgId, record.appName, { limit: 10, cursor: null })).items.map((r) => r.id)).toEqual([record.id]);
    });

    it('lists each app once, by appName, in pages, whether it has deployments, a record, or both', async () => {
      const orgId = unique('org');
      const base = Date.parse('2026-12-06T10:00:00.000Z');
      // web: 105 deployments, more than one scan batch, so the scan must skip past them to reach the next app.
      const names = new Map<string, string>();
      for (let index = 0; index < 105; index += 1) {
        const record = makeRecord({ orgId, projectId: 'web', environment: 'production' }, new Date(base + index));
        names.set('web', record.appName);
        await store.create(record, { maxActivePerOrg: 1000 });
      }
      for (const projectId of ['api', 'docs']) {
        const record = makeRecord({ orgId, projectId }, new Date(base));
        names.set(projectId, record.appName);
        await store.create(record, { maxActivePerOrg: 1000 });
      }
      const onlyRecord = appOf(orgId, makeRecord({ orgId, projectId: 'shop', environment: 'staging' }));
      names.set('shop', onlyRecord.appName);
      await store.putApp(onlyRecord);
      await store.putApp(appOf(orgId, makeRecord({ orgId, projectId: 'api' })));
      await store.create(makeRecord({ orgId: unique('org'), projectId: 'other' }), { maxActivePerOrg: 10 });

      const seen: AppRef[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Page<AppRef> = await store.listApps(orgId, { limit: 2, cursor });
        expect(page.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.items);
        cursor = page.nextCursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      const expected = [...names.values()].sort();
      expect(seen.map((app) => app.appName)).toEqual(expected);
      expect(pages).toBe(2);
      const web = seen.find((app) => app.appName === names.get('web'));
      expect(web).toEqual({ orgId, projectId: 'web', environment: 'production', appName: names.get('web') });
      expect(seen.find((app) => app.projectId === 'shop')?.environment).toBe('staging');
      expect((await store.listApps(unique('org'), { limit: 5, cursor: null })).items).toEqual([]);
      const first = await store.listApps(orgId, { limit: 1, cursor: null });
      expect((await errorOf(store.listApps(unique('org'), { limit: 1, cursor: first.nextCursor }))).code).toBe('VALIDATION_ERROR');
      expect((await errorOf(store.listApps(orgId, { limit: 1, cursor: 'bm90LWEtY3Vyc29y' }))).code).toBe('VALIDATION_ERROR');

      // One app's deployments, newest first, in pages, any status.
      const byApp: string[] = [];
      let appCursor: string | null = null;
      do {
        const page: Page<DeploymentRecord> = await store.listByApp(orgId, names.get('web') ?? '', { limit: 40, cursor: appCursor });
        byApp.push(...page.items.map((record) => record.createdAt));
        appCursor = page.nextCursor;
      } while (appCursor !== null);
      expect(byApp).toHaveLength(105);
      expect([...byApp].sort().reverse()).toEqual(byApp);
      const project = await store.listByProject(orgId, 'web', { limit: 1, cursor: null });
      expect((await errorOf(store.listByApp(orgId, names.get('web') ?? '', { limit: 1, cursor: project.nextCursor }))).code).toBe('VALIDATION_ERROR');
    });
  });
});

describe('Cosmos DB error mapping', () => {
  it('treats throttling that outlasted the SDK retries as retryable, with the wait Cosmos asked for', () => {
    const error = toStoreError(Object.assign(new Error('Request rate is large'), { code: 429, retryAfterInMs: 2500 }), 'read');
    expect(error.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(error.retryable).toBe(true);
    expect(error.retryAfterSeconds).toBe(3);
    expect(error.message).not.toContain('Request rate');
  });

  it('treats refused access as a dependency problem retries cannot fix, and a bad request as our bug', () => {
    const forbidden = toStoreError(Object.assign(new Error('forbidden'), { code: 403 }), 'read');
    expect([forbidden.code, forbidden.retryable]).toEqual(['DEPENDENCY_UNAVAILABLE', false]);
    const bad = toStoreError(Object.assign(new Error('bad'), { code: 400 }), 'read');
    expect([bad.code, bad.retryable]).toEqual(['INTERNAL_ERROR', false]);
  });
});
