import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { appName, apply, STEPS } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, completeDeployment, createHarness, seedExample, staticBody } from './harness.ts';

const ERROR_SHAPE = {
  success: false,
  error: expect.any(String) as unknown,
  message: expect.any(String) as unknown,
  timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
};

describe('API', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  const deploy = async (body: object = staticBody(), org: Parameters<typeof auth>[0] = 'org_456', headers: Record<string, string> = {}) =>
    h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth(org), ...headers }, payload: body });
  const idOf = (response: { json: () => unknown }) => (response.json() as { deploymentId: string }).deploymentId;

  describe('public endpoints', () => {
    it('GET / describes the service and lists every endpoint', async () => {
      const response = await h.app.inject('/');
      expect(response.statusCode).toBe(200);
      const body = response.json<{ service: string; endpoints: string[] }>();
      expect(body.service).toBe('Zepid Deploy v3');
      for (const endpoint of [
        'POST /deploy',
        'POST /api/deploy',
        'GET /deploy/:id/status',
        'GET /deploy-status',
        'GET /deploy/:id/logs',
        'POST /deploy/:id/cancel',
        'POST /deploy/:id/retry',
        'GET /deploy/project/:projectId',
        'GET /health',
        'GET /health/detailed',
        'GET /health/ready',
        'GET /health/live',
        'GET /status',
        'GET /status/deployments',
        'GET /status/queue',
        'POST /status/cleanup',
        'GET /docs',
        'GET /openapi.json',
      ]) {
        expect(body.endpoints).toContain(endpoint);
      }
    });

    it('GET /health answers the v1 shape', async () => {
      const response = await h.app.inject('/health');
      expect(response.statusCode).toBe(200);
      expect(response.json()).toEqual({
        status: 'healthy',
        timestamp: expect.any(String),
        service: 'Zepid Deploy v3',
        version: '3.0.0',
        uptime: expect.any(Number),
        checks: { database: 'healthy', queue: 'healthy' },
      });
    });

    it('GET /health/detailed is 503 until a worker heartbeat is seen', async () => {
      const before = await h.app.inject('/health/detailed');
      expect(before.statusCode).toBe(503);
      expect(before.json()).toMatchObject({ status: 'unhealthy', checks: { store: { status: 'healthy' }, worker: { status: 'unhealthy' } } });
      const now = new Date().toISOString();
      await h.adapters.store.recordHeartbeat({ workerId: 'w1', host: 'h', version: '3.0.0', startedAt: now, lastSeenAt: now, running: 0, capacity: 5 });
      const after = await h.app.inject('/health/detailed');
      expect(after.statusCode).toBe(200);
      expect(after.json()).toMatchObject({ status: 'healthy', checks: { worker: { status: 'healthy', workers: [{ workerId: 'w1' }] } } });
    });

    it('readiness and liveness probes answer', async () => {
      expect((await h.app.inject('/health/ready')).json()).toEqual({ status: 'ready' });
      expect((await h.app.inject('/health/live')).json()).toMatchObject({ status: 'alive' });
    });

    it('GET /openapi.json is OpenAPI 3.1 with every endpoint, secured ones marked', async () => {
      const spec = (await h.app.inject('/openapi.json')).json<{
        openapi: string;
        paths: Record<string, Record<string, { security?: unknown }>>;
      }>();
      expect(spec.openapi).toBe('3.1.0');
      const expected: [string, string][] = [
        ['/deploy', 'post'],
        ['/api/deploy', 'post'],
        ['/deploy/{id}/status', 'get'],
        ['/deploy-status', 'get'],
        ['/deploy/{id}/logs', 'get'],
        ['/deploy/{id}/cancel', 'post'],
        ['/deploy/{id}/retry', 'post'],
        ['/deploy/project/{projectId}', 'get'],
        ['/health', 'get'],
        ['/health/detailed', 'get'],
        ['/health/ready', 'get'],
        ['/health/live', 'get'],
        ['/status', 'get'],
        ['/status/deployments', 'get'],
        ['/status/queue', 'get'],
        ['/status/cleanup', 'post'],
        ['/', 'get'],
      ];
      for (const [path, method] of expected) expect(spec.paths[path]?.[method], `${method} ${path}`).toBeDefined();
      expect(spec.paths['/deploy']?.post?.security).toEqual([{ bearerAuth: [] }]);
      expect(spec.paths['/health']?.get?.security).toBeUndefined();
      // The terminal status superseded is part of the contract, with what it means.
      const status = JSON.stringify(spec.paths['/deploy/{id}/status']?.get);
      expect(status).toContain('"superseded"');
      expect(status).toContain('live deployment only moves forward');
    });

    it('GET /docs serves the interactive documentation (swagger-ui-dist\'s files, pointed at /openapi.json)', async () => {
      const redirect = await h.app.inject('/docs');
      expect(redirect.statusCode).toBe(302);
      expect(redirect.headers.location).toBe('/docs/');
      const response = await h.app.inject('/docs/');
      expect(response.statusCode).toBe(200);
      expect(response.headers['content-type']).toContain('text/html');
      const scripts = [...response.body.matchAll(/(?:src|href)="\.\/([^"]+)"/g)].map((match) => match[1] ?? '');
      expect(scripts).toEqual(expect.arrayContaining(['swagger-ui.css', 'swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js', 'swagger-initializer.js']));
      // Every file the page names is served, with its type (the bundle is swagger-ui-dist's own build).
      for (const name of scripts) {
        const file = await h.app.inject(`/docs/${name}`);
        expect(file.statusCode, name).toBe(200);
        expect(file.headers['content-type'], name).toMatch(name.endsWith('.css') ? /^text\/css/ : name.endsWith('.png') ? /^image\/png/ : /^text\/javascript/);
        expect(file.rawPayload.length, name).toBeGreaterThan(100);
      }
      expect((await h.app.inject('/docs/swagger-ui-bundle.js')).body).toContain('SwaggerUIBundle');
      expect((await h.app.inject('/docs/swagger-initializer.js')).body).toContain("'../openapi.json'");
    });

    it('GET /docs/<file> serves only Swagger UI\'s own files', async () => {
      for (const path of ['/docs/package.json', '/docs/..%2Fpackage.json', '/docs/swagger-ui-bundle.js.map', '/docs/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd']) {
        const response = await h.app.inject(path);
        expect(response.statusCode, path).toBe(404);
        expect(response.json(), path).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      }
    });

    it('an unknown route is a 404 in the error shape', async () => {
      const response = await h.app.inject('/nope');
      expect(response.statusCode).toBe(404);
      expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
    });
  });

  describe('authentication', () => {
    it('refuses a missing or wrong token with 401 and WWW-Authenticate', async () => {
      for (const headers of [{}, { authorization: 'Bearer nope-nope-nope-nope' }, { authorization: 'Basic abc' }]) {
        const response = await h.app.inject({ method: 'POST', url: '/deploy', headers, payload: staticBody() });
        expect(response.statusCode).toBe(401);
        expect(response.headers['www-authenticate']).toBe('Bearer');
        expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'UNAUTHORIZED' });
      }
      expect(await h.adapters.store.countActive('org_456')).toBe(0);
    });

    it('refuses to deploy for another organization than the token\'s', async () => {
      const response = await deploy(staticBody({ organizationId: 'org_other' }));
      expect(response.statusCode).toBe(403);
      expect(response.json()).toMatchObject({ error: 'FORBIDDEN' });
    });
  });

  describe('deployments', () => {
    it('queues a deployment: 202 with the v1 fields plus estimatedDuration and statusUrl', async () => {
      const response = await deploy();
      expect(response.statusCode).toBe(202);
      const body = response.json<Record<string, unknown>>();
      expect(body).toEqual({
        success: true,
        deploymentId: expect.stringMatching(/^dep_[a-z2-7]{26}$/),
        status: 'queued',
        attempt: 1,
        message: 'Deployment queued successfully',
        timestamp: expect.any(String),
        estimatedDuration: 'under a minute',
        statusUrl: `/deploy/${String(body.deploymentId)}/status`,
      });
      expect(await h.adapters.queue.counts()).toMatchObject({ active: expect.any(Number) });
    });

    it('accepts the Deploy V3 design document\'s example exactly as written (plus files), and the v2 alias', async () => {
      for (const url of ['/deploy', '/api/deploy']) {
        const response = await h.app.inject({ method: 'POST', url, headers: auth('org_456'), payload: { ...seedExample, projectId: `my-app-${url.length}` } });
        expect(response.statusCode, response.body).toBe(202);
      }
    });

    it('accepts the v1 development guide\'s request (orgId, initFiles, historyMessages)', async () => {
      const response = await deploy({
        projectId: 'your_project_id',
        orgId: 'org_456',
        userId: 'your_user_id',
        customDomain: 'example.com',
        initFiles: [{ path: 'index.html', content: '<!DOCTYPE html><html>...</html>' }],
        historyMessages: [{ role: 'user', content: 'Create a simple website' }],
      });
      expect(response.statusCode, response.body).toBe(202);
    });

    it('keeps env variable values out of the record and every response', async () => {
      const secret = 'very-secret-value-0xC0FFEE';
      const id = idOf(await deploy(staticBody({ projectId: 'with-env', envVariables: { API_KEY: secret } })));
      const record = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
      expect(JSON.stringify(record)).not.toContain(secret);
      expect(record?.spec.envVariableNames).toEqual(['API_KEY']);
      expect(await h.adapters.secrets.get(id)).toEqual({ API_KEY: secret });
      for (const url of [`/deploy/${id}/status`, `/deploy/${id}/logs`, '/deploy/project/with-env', '/status/deployments']) {
        expect((await h.app.inject({ url, headers: auth('org_456') })).body).not.toContain(secret);
      }
    });

    it('reports status in the v1 shape, also at /deploy-status?id=', async () => {
      const id = idOf(await deploy());
      const response = await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') });
      expect(response.statusCode).toBe(200);
      const status = response.json<Record<string, unknown>>();
      expect(status).toMatchObject({ deploymentId: id, status: 'queued', currentStep: null, progress: 0, error: null, url: null, logs: [] });
      expect(Object.keys(status.steps as object)).toEqual([...STEPS]);
      expect((status.steps as Record<string, unknown>).build).toEqual({ status: 'pending', startedAt: null, finishedAt: null, error: null, timestamp: null });
      const v1 = await h.app.inject({ url: `/deploy-status?id=${id}`, headers: auth('org_456') });
      expect(v1.json()).toMatchObject({ deploymentId: id, status: 'queued' });
    });

    it('answers 404 for another org\'s deployment on every deployment endpoint, and changes nothing', async () => {
      const id = idOf(await deploy());
      const before = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
      for (const [method, url] of [
        ['GET', `/deploy/${id}/status`],
        ['GET', `/deploy-status?id=${id}`],
        ['GET', `/deploy/${id}/logs`],
        ['POST', `/deploy/${id}/cancel`],
        ['POST', `/deploy/${id}/retry`],
      ] as const) {
        const response = await h.app.inject({ method, url, headers: auth('org_other') });
        expect(response.statusCode, `${method} ${url}`).toBe(404);
        expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'NOT_FOUND' });
      }
      expect((await h.app.inject({ url: '/deploy/project/site', headers: auth('org_other') })).json()).toMatchObject({ deployments: [] });
      expect(await h.adapters.store.get({ orgId: 'org_456', deploymentId: id })).toEqual(before);
    });

    it('refuses malformed ids with 400 naming the field', async () => {
      const response = await h.app.inject({ url: '/deploy/not-an-id/status', headers: auth('org_456') });
      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'id' }] });
      expect((await h.app.inject({ url: '/deploy-status', headers: auth('org_456') })).json()).toMatchObject({ details: [{ field: 'id' }] });
    });

    it('serves logs as JSON, or as text with Accept: text/plain', async () => {
      const id = idOf(await deploy());
      await h.adapters.artifacts.appendLog(id, `${JSON.stringify({ timestamp: '2026-01-01T00:00:00.000Z', step: 'build', level: 'info', message: 'compiling' })}\n`);
      const json = await h.app.inject({ url: `/deploy/${id}/logs`, headers: auth('org_456') });
      expect(json.json()).toEqual({ deploymentId: id, logs: [{ timestamp: '2026-01-01T00:00:00.000Z', step: 'build', level: 'info', message: 'compiling' }] });
      const text = await h.app.inject({ url: `/deploy/${id}/logs`, headers: { ...auth('org_456'), accept: 'text/plain' } });
      expect(text.headers['content-type']).toContain('text/plain');
      expect(text.body).toBe('2026-01-01T00:00:00.000Z [build] compiling\n');
      const status = await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') });
      expect(status.json()).toMatchObject({ logs: ['2026-01-01T00:00:00.000Z [build] compiling'] });
    });

    it('keeps the last log lines of a deployment that ended a while ago, until its record changes (retry)', async () => {
      const id = idOf(await deploy());
      const line = (message: string) => `${JSON.stringify({ timestamp: '2026-01-01T00:00:00.000Z', step: 'build', level: 'info', message })}\n`;
      const logsOf = async () => ((await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') })).json<{ logs: string[] }>()).logs;
      await h.adapters.artifacts.appendLog(id, line('first'));
      const queued = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
      if (queued === null) throw new Error('no record');
      // Failed a minute ago: its log is final.
      const failed = await h.adapters.store.replace({
        ...apply(queued, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'build' } }, new Date(Date.now() - 60_000)),
      });
      expect(await logsOf()).toEqual(['2026-01-01T00:00:00.000Z [build] first']);
      await h.adapters.artifacts.appendLog(id, line('late'));
      expect(await logsOf()).toEqual(['2026-01-01T00:00:00.000Z [build] first']);
      // The kept answer is the answer: same bytes and type as the one computed, and still only for its org.
      const kept = await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') });
      const v1 = await h.app.inject({ url: `/deploy-status?id=${id}`, headers: auth('org_456') });
      expect(kept.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(v1.body).toBe(kept.body);
      expect(kept.json()).toMatchObject({ deploymentId: id, status: 'failed', errorCode: 'BUILD_FAILED' });
      expect((await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_other') })).statusCode).toBe(404);
      // A retry writes the record: the log is read again.
      await h.adapters.store.replace(apply(failed, { type: 'retried' }, new Date()));
      expect(await logsOf()).toEqual(['2026-01-01T00:00:00.000Z [build] first', '2026-01-01T00:00:00.000Z [build] late']);
      // A kept answer never outlives its record.
      const again = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
      if (again === null) throw new Error('no record');
      await h.adapters.store.replace(apply(again, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'y', step: 'build' } }, new Date(Date.now() - 60_000)));
      expect((await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') })).statusCode).toBe(200);
      await h.adapters.store.delete({ orgId: 'org_456', deploymentId: id });
      expect((await h.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') })).statusCode).toBe(404);
    });

    it('cancels a queued deployment at once; a second cancel is 409', async () => {
      const id = idOf(await deploy());
      const cancelled = await h.app.inject({ method: 'POST', url: `/deploy/${id}/cancel`, headers: auth('org_456') });
      expect(cancelled.statusCode).toBe(202);
      expect(cancelled.json()).toMatchObject({ success: true, deploymentId: id, status: 'cancelled' });
      const again = await h.app.inject({ method: 'POST', url: `/deploy/${id}/cancel`, headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload: '' });
      expect(again.statusCode).toBe(409);
      expect(again.json()).toMatchObject({ ...ERROR_SHAPE, error: 'INVALID_STATE' });
    });

    it('flags a running deployment for cancel; the worker finishes it', async () => {
      const id = idOf(await deploy());
      const ref = { orgId: 'org_456', deploymentId: id };
      const record = await h.adapters.store.get(ref);
      if (record === null) throw new Error('missing');
      await h.adapters.store.replace(apply(record, { type: 'attempt_started' }, new Date()));
      const response = await h.app.inject({ method: 'POST', url: `/deploy/${id}/cancel`, headers: auth('org_456') });
      expect(response.json()).toMatchObject({ status: 'in_progress' });
      expect((await h.adapters.store.get(ref))?.cancelRequested).toBe(true);
    });

    it('retries only failed or cancelled deployments, as a new attempt with a new job', async () => {
      const id = idOf(await deploy());
      const early = await h.app.inject({ method: 'POST', url: `/deploy/${id}/retry`, headers: auth('org_456') });
      expect(early.statusCode).toBe(409);
      await h.app.inject({ method: 'POST', url: `/deploy/${id}/cancel`, headers: auth('org_456') });
      const before = await h.adapters.queue.counts();
      const retried = await h.app.inject({ method: 'POST', url: `/deploy/${id}/retry`, headers: auth('org_456') });
      expect(retried.statusCode).toBe(202);
      expect(retried.json()).toMatchObject({ deploymentId: id, status: 'queued', attempt: 2 });
      expect((await h.adapters.queue.counts()).active).toBe(before.active + 1);
    });

    it('lists a project\'s deployments newest first with a cursor', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i += 1) ids.push(idOf(await deploy(staticBody({ projectId: 'paged' }))));
      const first = await h.app.inject({ url: '/deploy/project/paged?limit=3', headers: auth('org_456') });
      const page1 = first.json<{ deployments: { deploymentId: string }[]; nextCursor: string }>();
      expect(page1.deployments).toHaveLength(3);
      const second = await h.app.inject({ url: `/deploy/project/paged?limit=3&cursor=${encodeURIComponent(page1.nextCursor)}`, headers: auth('org_456') });
      const page2 = second.json<{ deployments: { deploymentId: string }[]; nextCursor: string | null }>();
      expect(page2.nextCursor).toBeNull();
      const listed = [...page1.deployments, ...page2.deployments] as { deploymentId: string; createdAt: string }[];
      // Newest first; deployments created in the same millisecond have no order between them.
      expect(new Set(listed.map((d) => d.deploymentId))).toEqual(new Set(ids));
      expect(listed.map((d) => d.createdAt)).toEqual(listed.map((d) => d.createdAt).sort().reverse());
      const bad = await h.app.inject({ url: '/deploy/project/paged?cursor=garbage', headers: auth('org_456') });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'cursor' }] });
      const tooMany = await h.app.inject({ url: '/deploy/project/paged?limit=1000', headers: auth('org_456') });
      expect(tooMany.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'limit' }] });
      // Decimal digits only: Number()'s other forms (which Ajv's coercion takes) are refused, not read as 1.
      for (const limit of ['1.', '1.0', '1e0', '0x1', '+1']) {
        const odd = await h.app.inject({ url: `/deploy/project/paged?limit=${encodeURIComponent(limit)}`, headers: auth('org_456') });
        expect(odd.statusCode, limit).toBe(400);
        expect(odd.json(), limit).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'limit', message: expect.stringContaining('integer') }] });
      }
      expect((await h.app.inject({ url: '/deploy/project/paged?limit=2', headers: auth('org_456') })).statusCode).toBe(200);
    });

    it('returns the same deployment for a repeated Idempotency-Key and body; 409 for another body', async () => {
      const body = staticBody({ projectId: 'idem' });
      const first = await deploy(body, 'org_456', { 'idempotency-key': 'key-1' });
      const second = await deploy(body, 'org_456', { 'idempotency-key': 'key-1' });
      expect(idOf(second)).toBe(idOf(first));
      expect(second.headers['idempotent-replayed']).toBe('true');
      const other = await deploy(staticBody({ projectId: 'idem', userId: 'someone-else' }), 'org_456', { 'idempotency-key': 'key-1' });
      expect(other.statusCode).toBe(409);
      expect(other.json()).toMatchObject({ error: 'IDEMPOTENCY_CONFLICT' });
      const page = (await h.app.inject({ url: '/deploy/project/idem', headers: auth('org_456') })).json<{ deployments: unknown[] }>();
      expect(page.deployments).toHaveLength(1);
      // the same key in another org is another deployment
      const elsewhere = await deploy(staticBody({ projectId: 'idem', organizationId: 'org_other' }), 'org_other', { 'idempotency-key': 'key-1' });
      expect(elsewhere.statusCode).toBe(202);
      expect(idOf(elsewhere)).not.toBe(idOf(first));
    });

    it('answers concurrent POSTs with one new Idempotency-Key with one deployment (the losers of the race replay the winner)', async () => {
      const body = staticBody({ projectId: 'idem-race' });
      const answers = await Promise.all(Array.from({ length: 10 }, () => deploy(body, 'org_456', { 'idempotency-key': 'key-race' })));
      expect(answers.map((answer) => answer.statusCode)).toEqual(Array.from({ length: 10 }, () => 202));
      expect(new Set(answers.map(idOf)).size).toBe(1);
      expect(answers.filter((answer) => answer.headers['idempotent-replayed'] === 'true')).toHaveLength(9);
      const page = (await h.app.inject({ url: '/deploy/project/idem-race', headers: auth('org_456') })).json<{ deployments: unknown[] }>();
      expect(page.deployments).toHaveLength(1);
    });
  });

  describe('status endpoints', () => {
    it('GET /status counts the org\'s deployments by status', async () => {
      const response = await h.app.inject({ url: '/status', headers: auth('org_other') });
      expect(response.statusCode).toBe(200);
      expect(response.json()).toMatchObject({
        service: 'Zepid Deploy v3',
        organizationId: 'org_other',
        deployments: { queued: 1, in_progress: 0, completed: 0, failed: 0, cancelled: 0, superseded: 0 },
      });
    });

    it('GET /status/deployments lists recent ones of the org only', async () => {
      const body = (await h.app.inject({ url: '/status/deployments?limit=100', headers: auth('org_other') })).json<{ deployments: { projectId: string }[] }>();
      expect(body.deployments.map((d) => d.projectId)).toEqual(['idem']);
    });

    it('GET /status/queue reports active, scheduled and dead-lettered jobs', async () => {
      const body = (await h.app.inject({ url: '/status/queue', headers: auth('org_456') })).json<{ queue: Record<string, number> }>();
      expect(body.queue).toEqual({ active: expect.any(Number), scheduled: 0, deadLettered: 0 });
      expect(body.queue.active).toBeGreaterThan(0);
    });

    it('GET /status/queue shows poison messages the worker dead-lettered, by reason', async () => {
      const own = await createHarness();
      try {
        await own.adapters.queue.publish({ nonsense: true } as never, { messageId: 'poison-1', sessionId: 's' });
        const received = await own.adapters.queue.receive({ waitMs: 1000 });
        if (received === null) throw new Error('no message');
        await own.adapters.queue.deadLetter(received, { reason: 'MALFORMED_MESSAGE', description: 'not a job' });
        const body = (await own.app.inject({ url: '/status/queue', headers: auth('org_456') })).json<Record<string, unknown>>();
        expect(body).toMatchObject({ queue: { active: 0, scheduled: 0, deadLettered: 1 }, deadLetterReasons: { MALFORMED_MESSAGE: 1 } });
        // reasons only: no message ids, which would name other orgs' deployments
        expect(JSON.stringify(body)).not.toContain('poison-1');
      } finally {
        await own.close();
      }
    });

    it('POST /status/cleanup removes old finished deployments with their artifacts, keeping the live one', async () => {
      const cleanup = await createHarness();
      try {
        const make = async (projectId: string) =>
          idOf(await cleanup.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId, envVariables: { K: 'value-1234' } }) }));
        const cancelledId = await make('a');
        await cleanup.app.inject({ method: 'POST', url: `/deploy/${cancelledId}/cancel`, headers: auth('org_456') });
        // a completed one: the live revision of its app
        const liveId = await make('b');
        const ref = { orgId: 'org_456', deploymentId: liveId };
        let record = await cleanup.adapters.store.get(ref);
        if (record === null) throw new Error('missing');
        const at = new Date();
        record = apply(record, { type: 'attempt_started' }, at);
        for (const step of STEPS) {
          record = apply(record, { type: 'step_started', step }, at);
          record = apply(record, { type: 'step_completed', step, output: {} }, at);
        }
        await cleanup.adapters.store.replace(apply(record, { type: 'completed', result: { image: 'i', revision: 'r', url: 'u' } }, at));
        const queuedId = await make('c');

        cleanup.advance(8 * 86_400_000);
        const dry = await cleanup.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456'), payload: { dryRun: true } });
        // The count matches the ids listed (it said 0 while listing them), secrets included; nothing is removed.
        expect(dry.json()).toMatchObject({ dryRun: true, deploymentIds: [cancelledId], removed: { deployments: 1, secrets: 1, artifacts: 0, objects: 0 } });
        expect((await cleanup.app.inject({ url: `/deploy/${cancelledId}/status`, headers: auth('org_456') })).statusCode).toBe(200);
        const response = await cleanup.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456') });
        expect(response.statusCode).toBe(200);
        expect(response.json()).toMatchObject({
          success: true,
          deploymentIds: [cancelledId],
          removed: { deployments: 1, artifacts: 1, secrets: 1 },
          kept: [{ deploymentId: liveId }],
          more: false,
        });
        expect((await cleanup.app.inject({ url: `/deploy/${cancelledId}/status`, headers: auth('org_456') })).statusCode).toBe(404);
        expect(await cleanup.adapters.secrets.get(cancelledId)).toEqual({});
        expect((await cleanup.artifactFiles()).some((file) => file.includes(cancelledId))).toBe(false);
        for (const id of [liveId, queuedId]) expect((await cleanup.app.inject({ url: `/deploy/${id}/status`, headers: auth('org_456') })).statusCode).toBe(200);
        const invalid = await cleanup.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456'), payload: { olderThanDays: -1 } });
        expect(invalid.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'olderThanDays' }] });
      } finally {
        await cleanup.close();
      }
    });

    it('POST /status/cleanup keeps every completed deployment whose revision serves the app (an identical redeploy kept it)', async () => {
      const cleanup = await createHarness();
      try {
        const projectId = 'kept';
        const complete = async (revision: string, finishedAt: Date) => {
          const id = idOf(await cleanup.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId, envVariables: { K: 'value-1234' } }) }));
          let record = await cleanup.adapters.store.get({ orgId: 'org_456', deploymentId: id });
          if (record === null) throw new Error('missing');
          record = apply(record, { type: 'attempt_started' }, finishedAt);
          for (const step of STEPS) {
            record = apply(record, { type: 'step_started', step }, finishedAt);
            record = apply(record, { type: 'step_completed', step, output: {} }, finishedAt);
          }
          await cleanup.adapters.store.replace(apply(record, { type: 'completed', result: { image: 'img@sha256:1', revision, url: 'u' } }, finishedAt));
          return id;
        };
        const start = Date.now();
        const replaced = await complete('app--old', new Date(start));
        // `started` started revision app--a (its process or Key Vault references use its secrets);
        // `keptOnce` and `live` were identical redeploys that kept it.
        const started = await complete('app--a', new Date(start + 1000));
        const keptOnce = await complete('app--a', new Date(start + 2000));
        const live = await complete('app--a', new Date(start + 3000));

        cleanup.advance(8 * 86_400_000);
        const response = await cleanup.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456') });
        expect(response.statusCode).toBe(200);
        const body = response.json<{ deploymentIds: string[]; kept: { deploymentId: string; reason: string }[] }>();
        expect(body.deploymentIds).toEqual([replaced]);
        expect(body.kept).toEqual([
          { deploymentId: started, reason: `its revision app--a still serves the app's traffic (kept by ${live})` },
          { deploymentId: keptOnce, reason: `its revision app--a still serves the app's traffic (kept by ${live})` },
          { deploymentId: live, reason: 'serves the app\'s traffic' },
        ]);
        expect(await cleanup.adapters.secrets.get(started)).toEqual({ K: 'value-1234' });
        expect(await cleanup.adapters.secrets.get(replaced)).toEqual({});
      } finally {
        await cleanup.close();
      }
    });
  });
});

describe('API limits per org and per token', () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it('answers 429 with Retry-After past the org\'s active-deployment limit, other orgs unaffected', async () => {
    h = await createHarness({ maxActivePerOrg: 2 });
    const post = (org: 'org_456' | 'org_other') =>
      h.app.inject({ method: 'POST', url: '/deploy', headers: auth(org), payload: staticBody({ organizationId: org }) });
    expect((await post('org_456')).statusCode).toBe(202);
    expect((await post('org_456')).statusCode).toBe(202);
    const third = await post('org_456');
    expect(third.statusCode).toBe(429);
    expect(third.headers['retry-after']).toBe('30');
    expect(third.json()).toMatchObject({ ...ERROR_SHAPE, error: 'QUOTA_EXCEEDED', details: { active: 2, limit: 2 } });
    expect(await h.adapters.artifacts.listSources('org_456')).toHaveLength(2);
    expect((await post('org_other')).statusCode).toBe(202);
  });

  it('at the limit, refuses before writing anything: new files are not uploaded, env values not stored; known files go to the intake\'s own check', async () => {
    h = await createHarness({ maxActivePerOrg: 1 });
    const post = (files: { path: string; content: string }[], envVariables?: Record<string, string>) =>
      h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ organizationId: 'org_456', files, ...(envVariables && { envVariables }) }) });
    const known = [{ path: 'index.html', content: '<h1>known</h1>' }];
    expect((await post(known)).statusCode).toBe(202);
    const counts = vi.spyOn(h.adapters.store, 'countActive');
    const uploads = vi.spyOn(h.adapters.artifacts, 'putObject');
    const secrets = vi.spyOn(h.adapters.secrets, 'put');
    const before = await h.artifactFiles();
    // Known files only: nothing to write first, so no early count; the intake refuses it.
    const again = await post(known);
    expect(again.statusCode).toBe(429);
    expect(again.json()).toMatchObject({ ...ERROR_SHAPE, error: 'QUOTA_EXCEEDED', details: { active: 1, limit: 1 } });
    expect(counts).not.toHaveBeenCalled();
    // A new file, or env values: refused by the early count, before the upload or the secret store.
    for (const response of [await post([{ path: 'new.html', content: '<h1>new</h1>' }]), await post(known, { API_KEY: 'value' })]) {
      expect(response.statusCode).toBe(429);
      expect(response.json()).toMatchObject({ error: 'QUOTA_EXCEEDED', details: { active: 1, limit: 1 } });
    }
    expect(counts).toHaveBeenCalledTimes(2);
    expect(uploads).not.toHaveBeenCalled();
    // (Called for the first refused one with no values, which writes nothing.)
    expect(secrets.mock.calls.filter(([, values]) => Object.keys(values).length > 0)).toEqual([]);
    expect(await h.artifactFiles()).toEqual(before);
    expect(await h.adapters.artifacts.listSources('org_456')).toHaveLength(1);
  });

  it('counts rollbacks and env restarts against the same limit: 429, and nothing stored or queued', async () => {
    h = await createHarness({ maxActivePerOrg: 2 });
    const post = (projectId: string, envVariables?: Record<string, string>) =>
      h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId, ...(envVariables === undefined ? {} : { envVariables }) }) });
    const live = (await post('limited', { A: 'a' })).json<{ deploymentId: string }>().deploymentId;
    await completeDeployment(h.adapters, 'org_456', live, new Date());
    expect((await post('busy-1')).statusCode).toBe(202);
    expect((await post('busy-2')).statusCode).toBe(202);
    const before = await h.adapters.store.listRecent('org_456', 100);
    const rollback = await h.app.inject({ method: 'POST', url: `/deploy/${live}/rollback`, headers: auth('org_456') });
    expect(rollback.statusCode).toBe(429);
    expect(rollback.json()).toMatchObject({ ...ERROR_SHAPE, error: 'QUOTA_EXCEEDED', details: { active: 2, limit: 2 } });
    const env = await h.app.inject({ method: 'PUT', url: '/projects/limited/env/A', headers: auth('org_456'), payload: { value: 'b' } });
    expect(env.statusCode).toBe(429);
    expect(await h.adapters.secrets.getAppEnv({ orgId: 'org_456', projectId: 'limited', environment: 'development', appName: appName('org_456', 'limited', 'development') })).toEqual({ A: 'a' });
    expect(await h.adapters.store.listRecent('org_456', 100)).toHaveLength(before.length);
    // apply none starts nothing, so the limit does not apply
    expect((await h.app.inject({ method: 'PUT', url: '/projects/limited/env/A', headers: auth('org_456'), payload: { value: 'b', apply: 'none' } })).statusCode).toBe(200);
  });

  it('rate-limits per token with 429 and Retry-After', async () => {
    h = await createHarness({ rateLimitPerMinute: 3 });
    for (let i = 0; i < 3; i += 1) expect((await h.app.inject({ url: '/status', headers: auth('org_456') })).statusCode).toBe(200);
    const limited = await h.app.inject({ url: '/status', headers: auth('org_456') });
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.json()).toMatchObject({ ...ERROR_SHAPE, error: 'RATE_LIMITED' });
    expect((await h.app.inject({ url: '/status', headers: auth('org_other') })).statusCode).toBe(200);
  });

  it('answers 503 with Retry-After when the store is down, and says so in health', async () => {
    h = await createHarness();
    // The embedded database closes with the last of its users (store, queue, manifests, webhooks, stream leases).
    for (let i = 0; i < 5; i += 1) await h.adapters.store.close();
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody() });
    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(response.json()).toMatchObject({ ...ERROR_SHAPE, error: 'DEPENDENCY_UNAVAILABLE' });
    expect(response.body).not.toMatch(/sqlite|\.db|stack/i);
    const health = await h.app.inject('/health');
    expect(health.statusCode).toBe(503);
    expect(health.json()).toMatchObject({ status: 'unhealthy', checks: { database: 'unhealthy' } });
    expect((await h.app.inject('/health/ready')).json()).toMatchObject({ status: 'not_ready' });
    for (let i = 0; i < 5; i += 1) await h.adapters.store.start();
    expect((await h.app.inject('/health')).statusCode).toBe(200);
  });
});
