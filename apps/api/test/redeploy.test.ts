import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { apply } from '@zepid/core';
import { TokenRegistry } from '../src/auth.ts';
import type { Harness } from './harness.ts';
import { auth, completeDeployment, createHarness, staticBody, TOKENS } from './harness.ts';

/** POST /deploy/:id/redeploy, and who started each deployment (`createdBy`) — issue 14. */

const ERROR_SHAPE = {
  success: false,
  error: expect.any(String) as unknown,
  message: expect.any(String) as unknown,
  timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
};

type Org = Parameters<typeof auth>[0];

/** What a deployment made with org_456's token records as its creator: the token's id, derived from its hash; the harness gives it no name. */
const ORG_456_CALLER = { tokenId: `tok_${createHash('sha256').update(TOKENS.org_456).digest('hex').slice(0, 12)}`, tokenName: null };

describe('POST /deploy/:id/redeploy', () => {
  let h: Harness;
  let finishClock = Date.parse('2032-01-01T00:00:00Z');

  beforeAll(async () => {
    h = await createHarness({ maxActivePerOrg: 40 });
  });
  afterAll(async () => {
    await h.close();
  });

  const call = (method: string, url: string, payload?: unknown, org: Org = 'org_456', headers: Record<string, string> = {}) =>
    h.app.inject({ method: method as 'GET', url, headers: { ...auth(org), ...headers }, ...(payload === undefined ? {} : { payload: payload as object }) });
  const deploy = async (body: Record<string, unknown>) => {
    const response = await call('POST', '/deploy', { ...staticBody(), ...body });
    expect(response.statusCode, response.body).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  const record = async (id: string): Promise<DeploymentRecord> => {
    const found = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
    if (found === null) throw new Error(`no record ${id}`);
    return found;
  };
  const complete = async (id: string) => {
    finishClock += 1000;
    return completeDeployment(h.adapters, 'org_456', id, new Date(finishClock));
  };

  it('queues a new build of the stored source with the app\'s current env values, recording who asked', async () => {
    const v1 = await deploy({ projectId: 'rd', envVariables: { GREETING: 'first-value-5c1e' }, buildCommand: 'npm run build' });
    await complete(v1);
    // The app's env changes after v1 (stored only): a redeploy runs with the current values, not v1's.
    const changed = await call('PATCH', '/projects/rd/env', { set: { GREETING: 'second-value-8d2f' }, apply: 'none' });
    expect(changed.statusCode, changed.body).toBe(200);

    const response = await call('POST', `/deploy/${v1}/redeploy`);
    expect(response.statusCode, response.body).toBe(202);
    const body = response.json<{ deploymentId: string; kind: string; redeployOf: string; status: string; statusUrl: string }>();
    expect(body).toMatchObject({ success: true, kind: 'build', redeployOf: v1, status: 'queued', statusUrl: `/deploy/${body.deploymentId}/status` });
    expect(body.deploymentId).not.toBe(v1);

    const made = await record(body.deploymentId);
    const before = await record(v1);
    expect(made).toMatchObject({ kind: 'build', redeployOf: v1, rollbackOf: null, imageOf: null, projectId: 'rd', appName: before.appName, createdBy: ORG_456_CALLER });
    expect(made.spec).toEqual(before.spec);
    expect(made.source).toMatchObject({ digest: before.source.digest, fileCount: before.source.fileCount, storedFiles: 0, storedBytes: 0 });
    expect(await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: made.id })).toEqual(await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: v1 }));
    expect(await h.adapters.secrets.get(made.id)).toEqual({ GREETING: 'second-value-8d2f' });
    // Never the token itself, nor a value, in the record.
    expect(JSON.stringify(made)).not.toContain(TOKENS.org_456);
    expect(JSON.stringify(made)).not.toContain('second-value-8d2f');

    const status = (await call('GET', `/deploy/${made.id}/status`)).json();
    expect(status).toMatchObject({ kind: 'build', redeployOf: v1, createdBy: ORG_456_CALLER, status: 'queued' });
    const listed = (await call('GET', '/deploy/project/rd')).json<{ deployments: Record<string, unknown>[] }>().deployments;
    expect(listed.find((summary) => summary.deploymentId === made.id)).toMatchObject({ kind: 'build', redeployOf: v1, createdBy: ORG_456_CALLER });
    expect(listed.find((summary) => summary.deploymentId === v1)).toMatchObject({ kind: 'build', redeployOf: null, createdBy: ORG_456_CALLER });

    // A failed deployment's source is stored too: it can be redeployed (e.g. after an env value was fixed).
    const broken = await deploy({ projectId: 'rd' });
    finishClock += 1000;
    let failed = apply(await record(broken), { type: 'attempt_started' }, new Date(finishClock));
    failed = apply(failed, { type: 'step_started', step: 'validate' }, new Date(finishClock));
    failed = apply(failed, { type: 'step_failed', step: 'validate', error: 'boom' }, new Date(finishClock));
    failed = apply(failed, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'boom', step: 'validate' } }, new Date(finishClock));
    await h.adapters.store.replace(failed);
    const again = await call('POST', `/deploy/${broken}/redeploy`);
    expect(again.statusCode, again.body).toBe(202);
    expect(await record(again.json<{ deploymentId: string }>().deploymentId)).toMatchObject({ kind: 'build', redeployOf: broken, status: 'queued' });
  });

  it('answers 404 for an unknown deployment or another org\'s, 400 for a malformed id, in the error shape', async () => {
    const v1 = await deploy({ projectId: 'rd-404' });
    const cross = await call('POST', `/deploy/${v1}/redeploy`, undefined, 'org_other');
    expect(cross.statusCode).toBe(404);
    expect(cross.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
    const unknown = await call('POST', '/deploy/dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/redeploy');
    expect(unknown.statusCode).toBe(404);
    const malformed = await call('POST', '/deploy/nope/redeploy');
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json()).toMatchObject({ ...ERROR_SHAPE, error: 'VALIDATION_ERROR' });
    const noToken = await h.app.inject({ method: 'POST', url: `/deploy/${v1}/redeploy` });
    expect(noToken.statusCode).toBe(401);
  });

  it('answers 409 saying why: the source is no longer stored, or the app is being deleted', async () => {
    const gone = await deploy({ projectId: 'rd-gone' });
    await complete(gone);
    // What retention does to an old deployment's artifacts (manifest, context, log).
    await h.adapters.artifacts.deleteAll({ orgId: 'org_456', deploymentId: gone });
    const removed = await call('POST', `/deploy/${gone}/redeploy`);
    expect(removed.statusCode).toBe(409);
    expect(removed.json()).toMatchObject({
      ...ERROR_SHAPE,
      error: 'INVALID_STATE',
      message: expect.stringContaining('no longer stored') as unknown,
      details: { reason: 'source_removed', deploymentId: gone },
    });

    const deleting = await deploy({ projectId: 'rd-del' });
    await complete(deleting);
    expect((await call('DELETE', '/projects/rd-del')).statusCode).toBe(202);
    const conflict = await call('POST', `/deploy/${deleting}/redeploy`);
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json()).toMatchObject({ ...ERROR_SHAPE, error: 'CONFLICT', message: expect.stringContaining('being deleted') as unknown });
  });

  it('honours an Idempotency-Key: the same key answers the same redeploy; the key on another request is a 409', async () => {
    const v1 = await deploy({ projectId: 'rd-idem' });
    await complete(v1);
    const first = await call('POST', `/deploy/${v1}/redeploy`, undefined, 'org_456', { 'idempotency-key': 'rd-key-1' });
    expect(first.statusCode).toBe(202);
    const second = await call('POST', `/deploy/${v1}/redeploy`, undefined, 'org_456', { 'idempotency-key': 'rd-key-1' });
    expect(second.statusCode).toBe(202);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.json<{ deploymentId: string }>().deploymentId).toBe(first.json<{ deploymentId: string }>().deploymentId);
    const other = await call('POST', `/deploy/${v1}/rollback`, undefined, 'org_456', { 'idempotency-key': 'rd-key-1' });
    expect(other.statusCode).toBe(409);
    expect(other.json()).toMatchObject({ error: 'IDEMPOTENCY_CONFLICT' });
  });

  it('records the caller as createdBy on rollback and env-change deployments too', async () => {
    const v1 = await deploy({ projectId: 'rd-who' });
    await complete(v1);
    const v2 = await deploy({ projectId: 'rd-who' });
    await complete(v2);
    const rollback = await call('POST', `/deploy/${v1}/rollback`);
    expect(rollback.statusCode).toBe(202);
    expect(await record(rollback.json<{ deploymentId: string }>().deploymentId)).toMatchObject({ kind: 'rollback', createdBy: ORG_456_CALLER });
    await complete(rollback.json<{ deploymentId: string }>().deploymentId);
    const restart = await call('PATCH', '/projects/rd-who/env', { set: { MODE: 'on' } });
    expect(restart.statusCode, restart.body).toBe(202);
    const config = (await call('GET', `/deploy/${restart.json<{ deploymentId: string }>().deploymentId}/status`)).json();
    expect(config).toMatchObject({ kind: 'config', createdBy: ORG_456_CALLER });
    const recent = (await call('GET', '/status/deployments?limit=100')).json<{ deployments: Record<string, unknown>[] }>().deployments;
    expect(recent.every((summary) => 'createdBy' in summary && 'kind' in summary)).toBe(true);
  });

  it('documents the endpoint and the new fields in OpenAPI and GET /', async () => {
    const spec = (await h.app.inject('/openapi.json')).json<{ paths: Record<string, Record<string, { security?: unknown; responses?: Record<string, unknown> }>> }>();
    const redeploy = spec.paths['/deploy/{id}/redeploy']?.post;
    expect(redeploy?.security).toEqual([{ bearerAuth: [] }]);
    expect(Object.keys(redeploy?.responses ?? {}).sort()).toEqual(['202', '400', '401', '404', '409', '429', '503']);
    expect(JSON.stringify(redeploy)).toContain('idempotency-key');
    for (const path of ['/deploy/project/{projectId}', '/deploy/{id}/status', '/status/deployments']) {
      const text = JSON.stringify(spec.paths[path]);
      expect(text, path).toContain('createdBy');
      expect(text, path).toContain('redeployOf');
    }
    expect((await h.app.inject('/')).json<{ endpoints: string[] }>().endpoints).toContain('POST /deploy/:id/redeploy');
  });
});

describe('token identity (who started a deployment)', () => {
  it('gives each token an id from its hash and the optional name of DEPLOY_API_TOKENS (orgId/name:token); never the token', () => {
    const registry = TokenRegistry.fromSetting('acme/ci-bot:tok-acme-ci-0123456789abcdef, acme:tok-acme-plain-0123456789ab');
    const named = registry.identify('tok-acme-ci-0123456789abcdef');
    const digest = createHash('sha256').update('tok-acme-ci-0123456789abcdef').digest('hex');
    // `key` (the whole digest) is what the rate limiter counts by; only `tokenId` and `tokenName` go into records.
    expect(named).toEqual({ orgId: 'acme', tokenName: 'ci-bot', tokenId: `tok_${digest.slice(0, 12)}`, key: digest });
    expect(registry.identify('tok-acme-plain-0123456789ab')).toMatchObject({ orgId: 'acme', tokenName: null });
    expect(registry.identify('tok-acme-wrong-0123456789ab')).toBeNull();
    expect(registry.verify('tok-acme-ci-0123456789abcdef')).toBe('acme');
    expect(JSON.stringify(named)).not.toContain('tok-acme-ci');
    expect(() => TokenRegistry.fromSetting('acme/bad name:tok-acme-0123456789abcdef')).toThrow(/pair 1: the name after '\/'/);
    expect(() => TokenRegistry.fromSetting('acme/:tok-acme-0123456789abcdef')).toThrow(/pair 1/);
  });
});
