import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppJobMessage, DeploymentRecord } from '@zepid/core';
import { appName, apply, LIMITS, LOG_REDACT_PATHS, projectKey } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, completeDeployment, createHarness, staticBody } from './harness.ts';

/** App operations (issue 12): apps list, rollback, env variables, seed 004 forms, deletion. */

const ERROR_SHAPE = {
  success: false,
  error: expect.any(String) as unknown,
  message: expect.any(String) as unknown,
  timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
};

type Org = Parameters<typeof auth>[0];
interface Reply {
  statusCode: number;
  body: string;
  headers: Record<string, unknown>;
  json: <T = Record<string, unknown>>() => T;
}

/** Values that must never leave the secrets port: every test below uses some, and the last test looks for them everywhere. */
const SECRETS = {
  first: 'first-secret-value-7f3a9c',
  second: 'second-secret-value-2b8e1d',
  third: 'third-secret-value-c41d07',
  build: 'build-secret-value-9e2f55',
  seed: 'seed-secret-value-0a6b3c',
  bulk: 'bulk-secret-value-5d1e8f',
};

describe('app operations', () => {
  let h: Harness;
  let logs = '';
  const responses: string[] = [];
  let finishClock = Date.parse('2030-01-01T00:00:00Z');

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs += chunk.toString();
        done();
      },
    });
    h = await createHarness({ maxActivePerOrg: 40, logger: pino({ level: 'debug', redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' } }, sink) });
  });
  afterAll(async () => {
    await h.close();
  });

  const call = async (method: string, url: string, payload?: unknown, org: Org = 'org_456', headers: Record<string, string> = {}): Promise<Reply> => {
    const response = await h.app.inject({ method: method as 'GET', url, headers: { ...auth(org), ...headers }, ...(payload === undefined ? {} : { payload: payload as object }) });
    responses.push(response.body);
    return response;
  };
  const deploy = async (body: Record<string, unknown>, org: Org = 'org_456') => {
    const response = await call('POST', '/deploy', { ...staticBody(), ...(org === 'org_456' ? {} : { organizationId: org }), ...body }, org);
    expect(response.statusCode, response.body).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  const orgIdOf = (org: Org) => org;
  const record = async (id: string, org: Org = 'org_456'): Promise<DeploymentRecord> => {
    const found = await h.adapters.store.get({ orgId: orgIdOf(org), deploymentId: id });
    if (found === null) throw new Error(`no record ${id}`);
    return found;
  };
  /** What the worker would write for a deployment that built (or reused) an image and went live. */
  const complete = async (id: string, org: Org = 'org_456', buildOutput: Record<string, string> = {}) => {
    finishClock += 1000;
    return completeDeployment(h.adapters, orgIdOf(org), id, new Date(finishClock), buildOutput);
  };
  const ref = (projectId: string, environment: 'development' | 'production' = 'development', orgId = 'org_456') => ({
    orgId,
    projectId,
    environment,
    appName: appName(orgId, projectId, environment),
  });

  describe('GET /apps', () => {
    it('lists the org\'s apps by name with status, URL and live deployment, paged; other orgs\' are not there', async () => {
      const a = await deploy({ projectId: 'apps-a' });
      const b = await deploy({ projectId: 'apps-b', environment: 'production' });
      await deploy({ projectId: 'apps-c' });
      await complete(a);
      const failed = await record(b);
      await h.adapters.store.replace(apply(failed, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, new Date()));
      await deploy({ projectId: 'apps-other' }, 'org_other');

      const seen: { appName: string; projectId: string; status: string; url: string | null; liveDeploymentId: string | null; environment: string }[] = [];
      let cursor: string | null = null;
      do {
        const page: Reply = await call('GET', `/apps?limit=2${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
        expect(page.statusCode).toBe(200);
        const body = page.json<{ apps: typeof seen; nextCursor: string | null }>();
        expect(body.apps.length).toBeLessThanOrEqual(2);
        seen.push(...body.apps);
        cursor = body.nextCursor;
      } while (cursor !== null);
      const mine = seen.filter((app) => app.projectId.startsWith('apps-'));
      expect(mine.map((app) => app.projectId).sort()).toEqual(['apps-a', 'apps-b', 'apps-c']);
      expect(seen.map((app) => app.appName)).toEqual(seen.map((app) => app.appName).sort());
      expect(mine.find((app) => app.projectId === 'apps-a')).toMatchObject({
        appName: ref('apps-a').appName,
        environment: 'development',
        status: 'live',
        url: `http://${a}.localhost`,
        liveDeploymentId: a,
      });
      expect(mine.find((app) => app.projectId === 'apps-b')).toMatchObject({ status: 'failed', environment: 'production', url: null, liveDeploymentId: null });
      expect(mine.find((app) => app.projectId === 'apps-c')).toMatchObject({ status: 'deploying' });
      const other = await call('GET', '/apps', undefined, 'org_other');
      expect(other.json<{ apps: { projectId: string }[] }>().apps.map((app) => app.projectId)).toEqual(['apps-other']);
      const bad = await call('GET', '/apps?cursor=not-one-of-ours!');
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR' });
      expect((await call('GET', '/apps?limit=1000')).statusCode).toBe(400);
      expect((await h.app.inject({ url: '/apps' })).statusCode).toBe(401);
    });
  });

  describe('POST /deploy/:id/rollback', () => {
    it('puts an earlier deployment\'s image back live as a new rollback deployment: same spec and source, the app\'s current env', async () => {
      const v1 = await deploy({ projectId: 'rb', envVariables: { GREETING: SECRETS.first }, buildCommand: 'npm run build' });
      await complete(v1);
      const v2 = await deploy({ projectId: 'rb', envVariables: { GREETING: SECRETS.second } });
      await complete(v2);
      const response = await call('POST', `/deploy/${v1}/rollback`);
      expect(response.statusCode, response.body).toBe(202);
      const body = response.json<{ deploymentId: string; kind: string; rollbackOf: string; status: string; statusUrl: string }>();
      expect(body).toMatchObject({ success: true, kind: 'rollback', rollbackOf: v1, status: 'queued', statusUrl: `/deploy/${body.deploymentId}/status` });
      const rolled = await record(body.deploymentId);
      expect(rolled).toMatchObject({ kind: 'rollback', rollbackOf: v1, imageOf: v1, appName: ref('rb').appName, projectId: 'rb' });
      expect(rolled.spec).toEqual({ ...(await record(v1)).spec, envVariableNames: ['GREETING'] });
      expect(rolled.source.digest).toBe((await record(v1)).source.digest);
      // The source manifest is the target's; the env values are the app's current ones (v2's).
      expect(await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: body.deploymentId })).toEqual(
        await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: v1 }),
      );
      expect(await h.adapters.secrets.get(body.deploymentId)).toEqual({ GREETING: SECRETS.second });
      // It is queued like any deployment: its job is on the queue, it counts as active.
      const status = await call('GET', `/deploy/${body.deploymentId}/status`);
      expect(status.json()).toMatchObject({ kind: 'rollback', rollbackOf: v1, imageOf: v1, canRollback: false, status: 'queued' });

      // snapshot: the values v1 ran with
      const snapshot = await call('POST', `/deploy/${v1}/rollback`, { env: 'snapshot' });
      expect(snapshot.statusCode).toBe(202);
      expect(await h.adapters.secrets.get(snapshot.json<{ deploymentId: string }>().deploymentId)).toEqual({ GREETING: SECRETS.first });
      // a rollback of a rollback runs the image of the deployment that built it
      await complete(body.deploymentId);
      const again = await call('POST', `/deploy/${body.deploymentId}/rollback`);
      expect(again.statusCode).toBe(202);
      expect(await record(again.json<{ deploymentId: string }>().deploymentId)).toMatchObject({ kind: 'rollback', rollbackOf: body.deploymentId, imageOf: v1 });
    });

    it('answers 404 for an unknown deployment or another org\'s, 409 for one not completed or whose image is gone, 400 for a bad body', async () => {
      const v1 = await deploy({ projectId: 'rb-409' });
      const queued = await call('POST', `/deploy/${v1}/rollback`);
      expect(queued.statusCode).toBe(409);
      expect(queued.json()).toMatchObject({ ...ERROR_SHAPE, error: 'INVALID_STATE', message: expect.stringContaining('queued') as unknown });
      await complete(v1);
      const cross = await call('POST', `/deploy/${v1}/rollback`, undefined, 'org_other');
      expect(cross.statusCode).toBe(404);
      expect(cross.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      expect((await call('POST', '/deploy/dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/rollback')).statusCode).toBe(404);
      expect((await call('POST', '/deploy/nope/rollback')).json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR' });
      const badEnv = await call('POST', `/deploy/${v1}/rollback`, { env: 'yesterday' });
      expect(badEnv.statusCode).toBe(400);
      expect(badEnv.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR', details: [{ field: 'env' }] });

      // A deployment that reused v1's image: both lose canRollback when retention removes that image.
      const v2 = await deploy({ projectId: 'rb-409' });
      await complete(v2, 'org_456', { reusedFrom: v1 });
      const listBefore = await call('GET', '/deploy/project/rb-409');
      expect(listBefore.json<{ deployments: { deploymentId: string; canRollback: boolean; kind: string }[] }>().deployments).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ deploymentId: v1, canRollback: true, kind: 'build' }),
          expect.objectContaining({ deploymentId: v2, canRollback: true }),
        ]),
      );
      const built = await record(v1);
      await h.adapters.store.replace({ ...built, steps: { ...built.steps, build: { ...built.steps.build, output: { ...built.steps.build.output, imageRemovedAt: new Date().toISOString() } } } });
      for (const id of [v1, v2]) {
        const gone = await call('POST', `/deploy/${id}/rollback`);
        expect(gone.statusCode).toBe(409);
        expect(gone.json()).toMatchObject({ ...ERROR_SHAPE, error: 'INVALID_STATE', message: expect.stringContaining('removed') as unknown });
        expect((await call('GET', `/deploy/${id}/status`)).json()).toMatchObject({ canRollback: false });
      }
      const listAfter = await call('GET', '/status/deployments?limit=100');
      const summaries = listAfter.json<{ deployments: { deploymentId: string; canRollback: boolean }[] }>().deployments;
      expect(summaries.find((summary) => summary.deploymentId === v2)?.canRollback).toBe(false);
    });

    it('honours an Idempotency-Key: the same key answers the same rollback', async () => {
      const v1 = await deploy({ projectId: 'rb-idem' });
      await complete(v1);
      const first = await call('POST', `/deploy/${v1}/rollback`, undefined, 'org_456', { 'idempotency-key': 'rb-key-1' });
      const second = await call('POST', `/deploy/${v1}/rollback`, undefined, 'org_456', { 'idempotency-key': 'rb-key-1' });
      expect(second.statusCode).toBe(202);
      expect(second.headers['idempotent-replayed']).toBe('true');
      expect(second.json<{ deploymentId: string }>().deploymentId).toBe(first.json<{ deploymentId: string }>().deploymentId);
      const other = await call('POST', `/deploy/${v1}/rollback`, { env: 'snapshot' }, 'org_456', { 'idempotency-key': 'rb-key-1' });
      expect(other.statusCode).toBe(409);
      expect(other.json()).toMatchObject({ error: 'IDEMPOTENCY_CONFLICT' });
    });
  });

  describe('env variables', () => {
    it('POST /deploy with envVariables makes them the app\'s env (build scope by prefix or buildEnv); without, a deployment runs with them', async () => {
      await deploy({ projectId: 'env-a', envVariables: { GREETING: SECRETS.first, VITE_API: SECRETS.build, SECRET_BUILD_TOKEN: 'x' }, buildEnv: ['SECRET_BUILD_TOKEN'] });
      const listed = await call('GET', '/projects/env-a/env');
      expect(listed.statusCode).toBe(200);
      const body = listed.json<{ variables: { name: string; scope: string; updatedAt: string; appliedToLive: boolean }[]; appName: string; liveDeploymentId: string | null }>();
      expect(body.appName).toBe(ref('env-a').appName);
      expect(body.liveDeploymentId).toBeNull();
      expect(body.variables.map(({ name, scope }) => ({ name, scope }))).toEqual([
        { name: 'GREETING', scope: 'runtime' },
        { name: 'SECRET_BUILD_TOKEN', scope: 'build' },
        { name: 'VITE_API', scope: 'build' },
      ]);
      expect(await h.adapters.secrets.getAppEnv(ref('env-a'))).toEqual({ GREETING: SECRETS.first, VITE_API: SECRETS.build, SECRET_BUILD_TOKEN: 'x' });
      // the same values again: the app record is not written again
      const etag = (await h.adapters.store.getApp('org_456', ref('env-a').appName))?.etag;
      await deploy({ projectId: 'env-a', envVariables: { VITE_API: SECRETS.build, GREETING: SECRETS.first, SECRET_BUILD_TOKEN: 'x' } });
      expect((await h.adapters.store.getApp('org_456', ref('env-a').appName))?.etag).toBe(etag);
      const plain = await deploy({ projectId: 'env-a' });
      expect((await record(plain)).spec.envVariableNames).toEqual(['GREETING', 'SECRET_BUILD_TOKEN', 'VITE_API']);
      expect(await h.adapters.secrets.get(plain)).toEqual({ GREETING: SECRETS.first, VITE_API: SECRETS.build, SECRET_BUILD_TOKEN: 'x' });
      // envVariables: {} is "exactly none", and the app's env becomes empty
      const none = await deploy({ projectId: 'env-a', envVariables: {} });
      expect(await h.adapters.secrets.get(none)).toEqual({});
      expect((await call('GET', '/projects/env-a/env')).json<{ variables: unknown[] }>().variables).toEqual([]);
      const badBuildEnv = await call('POST', '/deploy', { ...staticBody({ projectId: 'env-a' }), envVariables: { A: 'a' }, buildEnv: ['B'] });
      expect(badBuildEnv.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR', details: [{ field: 'buildEnv' }] });
    });

    it('a runtime change restarts the live image (config deployment, no build); apply none only stores; no live deployment starts nothing', async () => {
      const v1 = await deploy({ projectId: 'env-b', envVariables: { GREETING: SECRETS.first, KEEP: 'k' } });
      // no live deployment yet: stored, nothing started
      const early = await call('PUT', '/projects/env-b/env/GREETING', { value: SECRETS.second });
      expect(early.statusCode).toBe(200);
      expect(early.json()).toMatchObject({ success: true, deploymentId: null, kind: null, rebuild: false, message: expect.stringContaining('no live deployment') as unknown });
      await complete(v1);
      const put = await call('PUT', '/projects/env-b/env/GREETING', { value: SECRETS.third });
      expect(put.statusCode, put.body).toBe(202);
      const answer = put.json<{ deploymentId: string; kind: string; variables: { name: string; scope: string }[]; appName: string; environment: string }>();
      expect(answer).toMatchObject({ kind: 'config', rebuild: false, appName: ref('env-b').appName, environment: 'development' });
      expect(answer.variables.map((variable) => variable.name)).toEqual(['GREETING', 'KEEP']);
      const config = await record(answer.deploymentId);
      expect(config).toMatchObject({ kind: 'config', imageOf: v1, rollbackOf: null, status: 'queued' });
      expect(config.spec.envVariableNames).toEqual(['GREETING', 'KEEP']);
      expect(await h.adapters.secrets.get(config.id)).toEqual({ GREETING: SECRETS.third, KEEP: 'k' });
      expect(await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: config.id })).toEqual(
        await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: v1 }),
      );
      // The live deployment ran with KEEP's value but not GREETING's new one.
      const listed = (await call('GET', '/projects/env-b/env')).json<{ variables: { name: string; appliedToLive: boolean }[]; liveDeploymentId: string }>();
      expect(listed.liveDeploymentId).toBe(v1);
      expect(listed.variables).toEqual([expect.objectContaining({ name: 'GREETING', appliedToLive: false }), expect.objectContaining({ name: 'KEEP', appliedToLive: true })]);

      const stored = await call('PUT', '/projects/env-b/env/OTHER', { value: 'o', apply: 'none' });
      expect(stored.statusCode).toBe(200);
      expect(stored.json()).toMatchObject({ deploymentId: null, kind: null });
      expect(await h.adapters.secrets.getAppEnv(ref('env-b'))).toEqual({ GREETING: SECRETS.third, KEEP: 'k', OTHER: 'o' });
      // setting the same value again changes nothing and starts nothing
      const same = await call('PUT', '/projects/env-b/env/OTHER', { value: 'o' });
      expect(same.statusCode).toBe(200);
      expect(same.json()).toMatchObject({ deploymentId: null, message: expect.stringContaining('nothing changed') as unknown });
    });

    it('a webhook may subscribe to app.* events; an env change that starts no deployment is announced as app.env_changed (status stored, no names or values)', async () => {
      const created = await call('POST', '/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['app.env_changed', 'app.rolled_back', 'app.deleted'], projectId: 'env-hook' });
      expect(created.statusCode, created.body).toBe(201);
      const webhookId = created.json<{ id: string }>().id;
      const refused = await call('POST', '/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['app.renamed'] });
      expect(refused.statusCode).toBe(400);

      await deploy({ projectId: 'env-hook' });
      const put = await call('PUT', '/projects/env-hook/env/GREETING', { value: SECRETS.first, apply: 'none' });
      expect(put.statusCode, put.body).toBe(200);
      const deliveries = (await call('GET', `/webhooks/${webhookId}/deliveries`)).json<{ deliveries: { eventType: string }[] }>().deliveries;
      expect(deliveries.map((delivery) => delivery.eventType)).toEqual(['app.env_changed']);
      const stored = await h.adapters.webhooks.listDeliveries('org_456', webhookId, 10);
      const payload = JSON.parse(stored[0]?.payload ?? '{}') as { type: string; data: Record<string, unknown> };
      expect(payload).toMatchObject({ type: 'app.env_changed', data: { deploymentId: null, projectId: 'env-hook', appName: ref('env-hook').appName, status: 'stored', error: null } });
      expect(JSON.stringify(payload)).not.toContain('GREETING');
      // Nothing changed: nothing announced.
      await call('PUT', '/projects/env-hook/env/GREETING', { value: SECRETS.first, apply: 'none' });
      expect((await call('GET', `/webhooks/${webhookId}/deliveries`)).json<{ deliveries: unknown[] }>().deliveries).toHaveLength(1);
      expect((await call('DELETE', `/webhooks/${webhookId}`)).statusCode).toBe(204);
    });

    it('a build-scoped change builds the live source again, and the answer says why', async () => {
      const v1 = await deploy({ projectId: 'env-c', envVariables: { VITE_TITLE: 'one', RUNTIME: 'r' } });
      await complete(v1);
      const response = await call('PATCH', '/projects/env-c/env', { set: { VITE_TITLE: 'two' } });
      expect(response.statusCode).toBe(202);
      const answer = response.json<{ deploymentId: string; message: string }>();
      expect(answer).toMatchObject({ kind: 'build', rebuild: true, message: expect.stringContaining('VITE_TITLE') as unknown });
      const rebuild = await record(answer.deploymentId);
      expect(rebuild).toMatchObject({ kind: 'build', imageOf: null, rollbackOf: null });
      expect(rebuild.source.digest).toBe((await record(v1)).source.digest);
      expect(await h.adapters.secrets.get(rebuild.id)).toEqual({ VITE_TITLE: 'two', RUNTIME: 'r' });
      // marking a runtime variable build-scoped (with a new value) rebuilds too; scope only for names set
      const scoped = await call('PATCH', '/projects/env-c/env', { set: { RUNTIME: 'r2' }, scope: { RUNTIME: 'build' }, apply: 'none' });
      expect(scoped.json<{ variables: { name: string; scope: string }[] }>().variables).toContainEqual(expect.objectContaining({ name: 'RUNTIME', scope: 'build' }));
      const strayScope = await call('PATCH', '/projects/env-c/env', { set: { RUNTIME: 'r3' }, scope: { OTHER: 'build' } });
      expect(strayScope.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR', details: [{ field: 'scope/OTHER' }] });
    });

    it('PATCH sets and removes (null), replace makes the set exactly these; DELETE removes one and a second DELETE changes nothing', async () => {
      const v1 = await deploy({ projectId: 'env-d', envVariables: { A: 'a', B: 'b', C: 'c' } });
      await complete(v1);
      const patched = await call('PATCH', '/projects/env-d/env', { set: { A: 'a2', B: null, D: 'd' }, apply: 'none' });
      expect(patched.statusCode).toBe(200);
      expect(await h.adapters.secrets.getAppEnv(ref('env-d'))).toEqual({ A: 'a2', C: 'c', D: 'd' });
      const replaced = await call('PATCH', '/projects/env-d/env', { set: { Z: 'z', Y: null }, replace: true, apply: 'none' });
      expect(replaced.json<{ variables: { name: string }[] }>().variables.map((variable) => variable.name)).toEqual(['Z']);
      expect(await h.adapters.secrets.getAppEnv(ref('env-d'))).toEqual({ Z: 'z' });
      const removed = await call('DELETE', '/projects/env-d/env/Z');
      expect(removed.statusCode).toBe(202);
      expect(removed.json()).toMatchObject({ kind: 'config', variables: [] });
      expect(await h.adapters.secrets.getAppEnv(ref('env-d'))).toEqual({});
      const again = await call('DELETE', '/projects/env-d/env/Z');
      expect(again.statusCode).toBe(200);
      expect(again.json()).toMatchObject({ deploymentId: null, message: expect.stringContaining('nothing changed') as unknown });
    });

    it('enforces the limits: names, value size, NUL, PORT, at most 100 variables per app, in the error shape', async () => {
      const v1 = await deploy({ projectId: 'env-e' });
      await complete(v1);
      const cases: [string, string, unknown, string][] = [
        ['PUT', '/projects/env-e/env/1BAD', { value: 'x' }, 'name'],
        ['PUT', '/projects/env-e/env/BIG', { value: 'x'.repeat(LIMITS.envValueBytes + 1) }, 'value'],
        ['PUT', '/projects/env-e/env/MULTI', { value: 'é'.repeat(LIMITS.envValueBytes / 2 + 1) }, 'set/MULTI'],
        ['PUT', '/projects/env-e/env/NUL', { value: 'a\u0000b' }, 'set/NUL'],
        ['PUT', '/projects/env-e/env/PORT', { value: '80' }, 'set/PORT'],
        ['PUT', '/projects/env-e/env/A', { value: 'x', scope: 'sometimes' }, 'scope'],
        ['PUT', '/projects/env-e/env/A', { value: 'x', apply: 'later' }, 'apply'],
        ['PUT', '/projects/env-e/env/A', { value: 1 }, 'value'],
        ['PUT', '/projects/env-e/env/A', { value: 'x', extra: true }, 'extra'],
        ['PATCH', '/projects/env-e/env', { set: { 'bad-name': 'x' } }, 'set/bad-name'],
        ['PATCH', '/projects/env-e/env', {}, 'set'],
        ['PATCH', '/projects/env-e/env', { set: Object.fromEntries(Array.from({ length: LIMITS.envVariables + 1 }, (_, i) => [`V${i}`, 'x'])) }, 'set'],
        ['GET', '/projects/env-e/env?environment=moon', undefined, 'environment'],
      ];
      for (const [method, url, payload, field] of cases) {
        const response = await call(method, url, payload);
        expect(response.statusCode, `${method} ${url} ${response.body}`).toBe(400);
        expect(response.json(), `${method} ${url}`).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR' });
        expect(response.json<{ details: { field: string }[] }>().details.map((detail) => detail.field), `${method} ${url}`).toContain(field);
      }
      // 100 in one app, then one more by PUT: over the app's limit
      const full = await call('PATCH', '/projects/env-e/env', { set: Object.fromEntries(Array.from({ length: LIMITS.envVariables }, (_, i) => [`V${i}`, 'x'])), apply: 'none' });
      expect(full.statusCode).toBe(200);
      const over = await call('PUT', '/projects/env-e/env/ONE_MORE', { value: 'x' });
      expect(over.statusCode).toBe(400);
      expect(over.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR', message: expect.stringContaining(`${LIMITS.envVariables}`) as unknown });
      // a value of exactly the limit is accepted
      expect((await call('PUT', '/projects/env-e/env/V0', { value: 'x'.repeat(LIMITS.envValueBytes), apply: 'none' })).statusCode).toBe(200);
    });

    it('answers 404 for an app that does not exist or is another org\'s', async () => {
      await deploy({ projectId: 'env-f', envVariables: { A: SECRETS.first } });
      for (const [method, url, payload] of [
        ['GET', '/projects/env-f/env', undefined],
        ['PUT', '/projects/env-f/env/A', { value: 'stolen' }],
        ['PATCH', '/projects/env-f/env', { set: { A: 'stolen' } }],
        ['DELETE', '/projects/env-f/env/A', undefined],
        ['GET', '/projects/env-f/env?environment=production', undefined],
      ] as const) {
        const org: Org = url.includes('production') ? 'org_456' : 'org_other';
        const response = await call(method, url, payload, org);
        expect(response.statusCode, `${method} ${url}`).toBe(404);
        expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      }
      expect(await h.adapters.secrets.getAppEnv(ref('env-f'))).toEqual({ A: SECRETS.first });
      expect((await call('GET', '/apps', undefined, 'org_other')).json<{ apps: { projectId: string }[] }>().apps.map((app) => app.projectId)).not.toContain('env-f');
    });
  });

  describe('seed 004 forms', () => {
    it('POST /env, PUT /env/bulk and DELETE /env/:uuid/:key change the app named uuid and restart it', async () => {
      const v1 = await deploy({ projectId: 'seed', envVariables: { KEEP: 'k' } });
      await complete(v1);
      const uuid = ref('seed').appName;
      const set = await call('POST', '/env', { uuid, key: 'GREETING', value: SECRETS.seed });
      expect(set.statusCode, set.body).toBe(202);
      expect(set.json()).toMatchObject({ success: true, kind: 'config', appName: uuid });
      expect(await h.adapters.secrets.get(set.json<{ deploymentId: string }>().deploymentId)).toEqual({ KEEP: 'k', GREETING: SECRETS.seed });
      const bulk = await call('PUT', '/env/bulk', { uuid, envs: [{ key: 'A', value: SECRETS.bulk }, { key: 'B', value: 'b' }] });
      expect(bulk.statusCode).toBe(202);
      expect(await h.adapters.secrets.getAppEnv(ref('seed'))).toEqual({ KEEP: 'k', GREETING: SECRETS.seed, A: SECRETS.bulk, B: 'b' });
      const removed = await call('DELETE', `/env/${uuid}/GREETING`);
      expect(removed.statusCode).toBe(202);
      expect(await h.adapters.secrets.getAppEnv(ref('seed'))).toEqual({ KEEP: 'k', A: SECRETS.bulk, B: 'b' });

      const duplicate = await call('PUT', '/env/bulk', { uuid, envs: [{ key: 'A', value: '1' }, { key: 'A', value: '2' }] });
      expect(duplicate.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR', details: [{ field: 'envs/1/key' }] });
      expect((await call('POST', '/env', { uuid, key: 'A' })).json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'value' }] });
      for (const [method, url, payload] of [
        ['POST', '/env', { uuid, key: 'A', value: 'x' }],
        ['PUT', '/env/bulk', { uuid, envs: [{ key: 'A', value: 'x' }] }],
        ['DELETE', `/env/${uuid}/A`, undefined],
      ] as const) {
        const cross = await call(method, url, payload, 'org_other');
        expect(cross.statusCode, `${method} ${url}`).toBe(404);
        expect(cross.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      }
      expect((await call('POST', '/env', { uuid: 'no-such-app-development', key: 'A', value: 'x' })).statusCode).toBe(404);
    });

    it('GET /droplets/count answers the org\'s active deployments and its limit', async () => {
      const before = (await call('GET', '/droplets/count', undefined, 'local')).json<{ count: number; limit: number }>();
      expect(before).toEqual({ count: 0, limit: 40 });
      await deploy({ projectId: 'count' }, 'local');
      expect((await call('GET', '/droplets/count', undefined, 'local')).json()).toEqual({ count: 1, limit: 40 });
      expect((await h.app.inject({ url: '/droplets/count' })).statusCode).toBe(401);
    });
  });

  describe('DELETE /projects/:projectId', () => {
    it('marks the apps deleting, cancels their deployments, queues the delete job; new work is a 409; a second DELETE is harmless', async () => {
      const live = await deploy({ projectId: 'doomed', envVariables: { A: 'a' } });
      await complete(live);
      const running = await deploy({ projectId: 'doomed' });
      await h.adapters.store.replace(apply(await record(running), { type: 'attempt_started' }, new Date()));
      const queued = await deploy({ projectId: 'doomed', environment: 'production' });
      const untouched = await deploy({ projectId: 'doomed-not' });

      const response = await call('DELETE', '/projects/doomed');
      expect(response.statusCode, response.body).toBe(202);
      expect(response.json()).toEqual({ projectId: 'doomed', environment: null, apps: [ref('doomed').appName, ref('doomed', 'production').appName], status: 'deleting' });
      expect((await record(running)).cancelRequested).toBe(true);
      expect((await record(queued)).status).toBe('cancelled');
      expect((await record(untouched)).status).toBe('queued');
      expect((await h.adapters.store.getApp('org_456', ref('doomed').appName))?.deletingSince).toEqual(expect.any(String));

      const apps = (await call('GET', '/apps?limit=100')).json<{ apps: { projectId: string; status: string }[] }>().apps;
      expect(apps.filter((app) => app.projectId === 'doomed').map((app) => app.status)).toEqual(['deleting', 'deleting']);
      for (const [method, url, payload] of [
        ['POST', '/deploy', staticBody({ projectId: 'doomed' })],
        ['POST', `/deploy/${live}/rollback`, undefined],
        ['PUT', '/projects/doomed/env/A', { value: 'b' }],
        ['POST', '/env', { uuid: ref('doomed').appName, key: 'A', value: 'b' }],
      ] as const) {
        const refused = await call(method, url, payload);
        expect(refused.statusCode, `${method} ${url}`).toBe(409);
        expect(refused.json()).toMatchObject({ ...ERROR_SHAPE, error: 'CONFLICT', message: expect.stringContaining('being deleted') as unknown });
      }
      const second = await call('DELETE', '/projects/doomed?environment=production');
      expect(second.statusCode).toBe(202);
      expect(second.json()).toMatchObject({ environment: 'production', apps: [ref('doomed', 'production').appName] });
      const third = await call('DELETE', '/projects/doomed');
      expect(third.statusCode).toBe(202);

      // The delete jobs are on the project's session, as its deployments' jobs are.
      const jobs: AppJobMessage[] = [];
      for (;;) {
        const job = await h.adapters.queue.receive({ waitMs: 50 });
        if (job === null) break;
        if ((job.body as { kind?: string }).kind === 'delete-app') {
          jobs.push(job.body as AppJobMessage);
          expect(job.sessionId).toBe(projectKey('org_456', 'doomed'));
        }
        await h.adapters.queue.complete(job);
      }
      expect(jobs.map((job) => [job.orgId, job.projectId, job.environment])).toEqual([
        ['org_456', 'doomed', null],
        ['org_456', 'doomed', 'production'],
        ['org_456', 'doomed', null],
      ]);
      expect(jobs[0]?.requestedAt).toEqual(expect.stringMatching(/^\d{4}-/));
    });

    it('answers 404 for a project without apps, or another org\'s, and 400 for a bad environment', async () => {
      await deploy({ projectId: 'kept' });
      for (const [url, org] of [
        ['/projects/kept', 'org_other'],
        ['/projects/never-deployed', 'org_456'],
        ['/projects/kept?environment=production', 'org_456'],
      ] as const) {
        const response = await call('DELETE', url, undefined, org);
        expect(response.statusCode, url).toBe(404);
        expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      }
      expect((await call('DELETE', '/projects/kept?environment=moon')).json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR' });
      expect(await h.adapters.store.getApp('org_456', ref('kept').appName)).toBeNull();
    });
  });

  it('documents every new endpoint in OpenAPI and GET /', async () => {
    const spec = (await h.app.inject('/openapi.json')).json<{ paths: Record<string, Record<string, { security?: unknown; responses?: Record<string, unknown> }>> }>();
    const expected: [string, string][] = [
      ['/apps', 'get'],
      ['/deploy/{id}/rollback', 'post'],
      ['/projects/{projectId}/env', 'get'],
      ['/projects/{projectId}/env', 'patch'],
      ['/projects/{projectId}/env/{name}', 'put'],
      ['/projects/{projectId}/env/{name}', 'delete'],
      ['/projects/{projectId}', 'delete'],
      ['/env', 'post'],
      ['/env/bulk', 'put'],
      ['/env/{uuid}/{key}', 'delete'],
      ['/droplets/count', 'get'],
    ];
    for (const [path, method] of expected) {
      expect(spec.paths[path]?.[method], `${method} ${path}`).toBeDefined();
      expect(spec.paths[path]?.[method]?.security, `${method} ${path}`).toEqual([{ bearerAuth: [] }]);
    }
    expect(JSON.stringify(spec.paths['/deploy/project/{projectId}'])).toContain('canRollback');
    const root = (await h.app.inject('/')).json<{ endpoints: string[] }>();
    for (const endpoint of ['GET /apps', 'POST /deploy/:id/rollback', 'PATCH /projects/:projectId/env', 'DELETE /projects/:projectId', 'POST /env', 'GET /droplets/count']) {
      expect(root.endpoints).toContain(endpoint);
    }
  });

  // Last: looks for every value the tests above set in everything the API answered, logged and recorded.
  it('never puts an env value in a response, a log line, a deployment or app record, or the database file', async () => {
    const values = Object.values(SECRETS);
    expect(responses.length).toBeGreaterThan(50);
    const answered = responses.join('\n');
    expect(logs).toContain('env variables changed');
    const records: unknown[] = [];
    for (const org of ['org_456', 'org_other', 'local']) {
      records.push(...(await h.adapters.store.listRecent(org, 1000)));
      for (const app of (await h.adapters.store.listApps(org, { limit: 100, cursor: null })).items) records.push(await h.adapters.store.getApp(org, app.appName));
    }
    const stored = JSON.stringify(records);
    expect(stored).toContain('GREETING');
    const dbFiles = (await readdir(h.dataDir)).filter((name) => /\.db(-wal)?$/.test(name));
    expect(dbFiles.length).toBeGreaterThan(0);
    const database = (await Promise.all(dbFiles.map((name) => readFile(join(h.dataDir, name))))).map((data) => data.toString('latin1')).join('');
    for (const value of values) {
      expect(answered, value).not.toContain(value);
      expect(logs, value).not.toContain(value);
      expect(stored, value).not.toContain(value);
      expect(database, value).not.toContain(value);
    }
    // …while the secrets port has them (the test would pass vacuously otherwise)
    expect(await h.adapters.secrets.getAppEnv(ref('seed'))).toMatchObject({ A: SECRETS.bulk });
  });
});
