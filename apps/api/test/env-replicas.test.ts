import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ApiAdapters } from '@zepid/core';
import { appName } from '@zepid/core';
import { CosmosDeploymentStore } from '@zepid/azure';
import { FileSecretStore } from '@zepid/local';
import { startCosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import { AppService } from '../src/apps.ts';
import { DeploymentService } from '../src/deployments.ts';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

/**
 * Issue 12: an app's env values are changed read-modify-write (the whole set is stored again), so two
 * API replicas changing the same app at the same instant must not lose one change. Two Fastify apps on
 * one data dir stand for two replicas: each has its own SQLite connection, secret store and in-process
 * state; only the store (the app record's lease, taken by conditional writes) is shared.
 */
const ref = { orgId: 'org_456', projectId: 'twin', environment: 'development' as const, appName: appName('org_456', 'twin', 'development') };

describe('env changes from two API replicas', () => {
  const put = (h: Harness, name: string) =>
    h.app.inject({ method: 'PUT', url: `/projects/twin/env/${name}`, headers: auth('org_456'), payload: { value: `value of ${name}`, apply: 'none' } });
  const patch = (h: Harness, set: Record<string, string | null>) =>
    h.app.inject({ method: 'PATCH', url: '/projects/twin/env', headers: auth('org_456'), payload: { set, apply: 'none' } });
  const remove = (h: Harness, name: string) => h.app.inject({ method: 'DELETE', url: `/projects/twin/env/${name}?apply=none`, headers: auth('org_456') });

  it('two replicas hammering different names of one app at once: every change is kept', async () => {
    const one = await createHarness();
    const two = await createHarness({ dataDir: one.dataDir });
    try {
      const deployed = await one.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'twin', envVariables: { DOOMED: 'x', KEPT: 'k' } }) });
      expect(deployed.statusCode, deployed.body).toBe(202);
      const namesOne = Array.from({ length: 12 }, (_, index) => `ONE_${index}`);
      const namesTwo = Array.from({ length: 12 }, (_, index) => `TWO_${index}`);
      const answers = await Promise.all([
        ...namesOne.map((name) => put(one, name)),
        ...namesTwo.map((name) => put(two, name)),
        patch(two, { PATCHED_A: 'a', PATCHED_B: 'b' }),
        remove(one, 'DOOMED'),
      ]);
      for (const answer of answers) expect(answer.statusCode, answer.body).toBe(200);

      const expected: Record<string, string> = { KEPT: 'k', PATCHED_A: 'a', PATCHED_B: 'b' };
      for (const name of [...namesOne, ...namesTwo]) expected[name] = `value of ${name}`;
      expect(await one.adapters.secrets.getAppEnv(ref)).toEqual(expected);
      expect(await two.adapters.secrets.getAppEnv(ref)).toEqual(expected);
      const listed = (await two.app.inject({ url: '/projects/twin/env', headers: auth('org_456') })).json<{ variables: { name: string }[] }>();
      expect(listed.variables.map((variable) => variable.name)).toEqual(Object.keys(expected).sort());
      // The lease is given back: nothing is left holding the app's env.
      expect((await one.adapters.store.getApp('org_456', ref.appName))?.envLock ?? null).toBeNull();
    } finally {
      await two.close();
      await one.close();
    }
  });

  it('a lease its replica never gave back (it died) is taken over once its time is up', async () => {
    const h = await createHarness();
    try {
      const deployed = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'twin', envVariables: { KEPT: 'k' } }) });
      expect(deployed.statusCode, deployed.body).toBe(202);
      const record = await h.adapters.store.getApp('org_456', ref.appName);
      if (record === null) throw new Error('no app record');
      await h.adapters.store.putApp({ ...record, envLock: { owner: 'lease_dead_replica', until: new Date(Date.now() - 1).toISOString() } });
      const answer = await put(h, 'AFTER');
      expect(answer.statusCode, answer.body).toBe(200);
      expect(await h.adapters.secrets.getAppEnv(ref)).toEqual({ KEPT: 'k', AFTER: 'value of AFTER' });
      expect((await h.adapters.store.getApp('org_456', ref.appName))?.envLock ?? null).toBeNull();
    } finally {
      await h.close();
    }
  });
});

/**
 * The same over Cosmos DB (cosmosdb-server, the emulator of the store contract): two replicas' app
 * services, each with its own Cosmos client, lease through If-Match on the app document.
 */
describe('env changes from two API replicas on Cosmos DB', () => {
  it('two replicas changing different names of one app at once: every change is kept', async () => {
    const emulator = await startCosmosEmulator();
    const dir = await mkdtemp(join(tmpdir(), 'zepid-env-cosmos-'));
    const replicas: { apps: AppService; store: CosmosDeploymentStore; secrets: FileSecretStore }[] = [];
    try {
      for (let index = 0; index < 2; index += 1) {
        const store = new CosmosDeploymentStore({ connectionString: emulator.connectionString, databaseId: 'zepid-deploy', containerId: 'deployments', createIfMissing: true, retentionDays: 30 });
        await store.start();
        const secrets = new FileSecretStore(join(dir, 'secrets'));
        await secrets.start();
        // Only what an env change with apply "none" uses: the store, the secrets and (no) webhooks.
        const adapters = { store, secrets, webhooks: { listWebhooks: () => Promise.resolve([]) } } as unknown as ApiAdapters;
        const logger = pino({ level: 'silent' });
        const deployments = new DeploymentService(adapters, { maxActivePerOrg: 10, clock: () => new Date(), logger });
        replicas.push({ apps: new AppService(adapters, deployments, { clock: () => new Date(), logger }), store, secrets });
      }
      const [one, two] = replicas as [(typeof replicas)[number], (typeof replicas)[number]];
      const change = (replica: typeof one, name: string) => replica.apps.changeEnv(ref, { set: { [name]: `value of ${name}` }, replace: false, scopes: {} }, 'none', null);
      const names = Array.from({ length: 8 }, (_, index) => [`ONE_${index}`, `TWO_${index}`]);
      await Promise.all(names.flatMap(([first = '', second = '']) => [change(one, first), change(two, second)]));
      const expected = Object.fromEntries(names.flat().map((name) => [name, `value of ${name}`]));
      expect(await one.secrets.getAppEnv(ref)).toEqual(expected);
      const record = await two.store.getApp(ref.orgId, ref.appName);
      expect(record?.env.map((variable) => variable.name)).toEqual(Object.keys(expected).sort());
      expect(record?.envLock ?? null).toBeNull();
    } finally {
      for (const replica of replicas) {
        await replica.store.close();
        await replica.secrets.close();
      }
      await emulator.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
