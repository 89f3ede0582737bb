import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSourcePath, DOMAIN_PATTERN, ENV_NAME_PATTERN, FILE_DIGEST_PATTERN, ID_PATTERN, isAllowedContainerSize, LIMITS } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

const ID = new RegExp(ID_PATTERN);
const DOMAIN = new RegExp(DOMAIN_PATTERN);
const ENV_NAME = new RegExp(ENV_NAME_PATTERN);
const DIGEST = new RegExp(FILE_DIGEST_PATTERN);
/** Well-formed SHA-256 hex that no test ever stored (the chance of a collision is nil). */
const hexDigest = fc.stringMatching(/^[0-9a-f]{64}$/);

/** Strings attackers and broken clients send: control characters, look-alikes, traversal, huge. */
const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', ' ', 'a\u0000b', 'a\nb', 'a\r\nX-Evil: 1', '\u202eevil', 'р' /* Cyrillic er */, 'ⅰ', 'ﬁle', '../..', '..\\..', '%2e%2e%2f', '<script>', "' OR 1=1 --"),
  fc.string({ minLength: 129, maxLength: 2000 }),
);
const wrongType = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { minKeys: 1, maxKeys: 2 }));
const badId = fc.oneof(nasty.filter((s) => !ID.test(s)), wrongType);
const badPath = fc
  .oneof(
    nasty,
    fc.constantFrom('/etc/passwd', '../x', 'a/../../b', 'a/./b', 'a//b', 'dir/', 'C:/x', 'a\\b', '.', '..'),
    fc.tuple(fc.constantFrom('../', '/', './', 'a/../', '\u0000'), fc.string({ maxLength: 20 })).map(([prefix, rest]) => prefix + rest),
  )
  .filter((path) => checkSourcePath(path) !== null);

/** One field of a valid body replaced by something invalid; always a request the API must refuse. */
const badDeployBody: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({ field: fc.constantFrom('projectId', 'userId', 'organizationId', 'orgId'), value: badId }).map(({ field, value }) => staticBody({ [field]: value })),
  fc.constantFrom('projectId', 'userId').map((field) => staticBody({ [field]: undefined })),
  fc.oneof(nasty, wrongType).filter((v) => !['development', 'staging', 'production'].includes(v as string)).map((environment) => staticBody({ environment })),
  fc.oneof(nasty, wrongType, fc.domain().map((d) => `${d}\r\nSet-Cookie: a=b`), fc.domain().map((d) => `${d}/path`)).filter((d) => typeof d !== 'string' || !DOMAIN.test(d)).map((customDomain) => staticBody({ customDomain })),
  fc
    .record({ cpu: fc.oneof(fc.double({ min: -4, max: 16, noNaN: true }), fc.string({ maxLength: 6 }), wrongType), memory: fc.oneof(fc.string({ maxLength: 8 }), wrongType) })
    .filter(({ cpu, memory }) => typeof memory !== 'string' || (typeof cpu !== 'number' && typeof cpu !== 'string') || !isAllowedContainerSize(Number(cpu), memory))
    .map((containerSize) => staticBody({ containerSize })),
  fc.oneof(nasty.filter((name) => !ENV_NAME.test(name)), fc.constant('PORT')).map((name) => staticBody({ envVariables: { [name]: 'x' } })),
  wrongType.map((value) => staticBody({ envVariables: { VALID_NAME: value } })),
  fc.oneof(wrongType, fc.string()).map((envVariables) => staticBody({ envVariables })),
  badPath.map((path) => staticBody({ files: [{ path, content: 'x' }] })),
  fc.oneof(wrongType, fc.constant([]), fc.string()).map((files) => staticBody({ files })),
  fc.string({ maxLength: 30 }).filter((s) => /[^A-Za-z0-9+/=]/.test(s)).map((content) => staticBody({ files: [{ path: 'a.bin', content, encoding: 'base64' }] })),
  // Files by sha256: malformed digests, digests nobody stored (SOURCE_FILES_MISSING), content that does not match, neither.
  fc.oneof(nasty, wrongType, hexDigest.map((digest) => digest.toUpperCase()), hexDigest.map((digest) => `sha256:${digest}`), hexDigest.map((digest) => digest.slice(1)))
    .filter((sha256) => typeof sha256 !== 'string' || !DIGEST.test(sha256))
    .map((sha256) => staticBody({ files: [{ path: 'a.txt', sha256 }] })),
  fc.uniqueArray(hexDigest, { minLength: 1, maxLength: 5 }).map((digests) => staticBody({ files: digests.map((sha256, i) => ({ path: `f${i}.txt`, sha256 })) })),
  fc.tuple(fc.string({ maxLength: 40 }), hexDigest).map(([content, sha256]) => staticBody({ files: [{ path: 'a.txt', content, sha256 }, { path: 'b.txt', content: 'ok' }] })),
  fc.constant(staticBody({ files: [{ path: 'a.txt' }] })),
  fc.tuple(badPath, hexDigest).map(([path, sha256]) => staticBody({ files: [{ path, sha256 }] })),
  fc.oneof(fc.integer({ min: 65536 }), fc.integer({ max: 0 }), fc.double({ min: 1.1, max: 100, noInteger: true }), fc.string()).map((port) => staticBody({ port })),
  fc.oneof(fc.string({ maxLength: 5 }).map((s) => `build\n${s}`), fc.string({ minLength: LIMITS.commandLength + 1, maxLength: LIMITS.commandLength + 50 }), wrongType).map((buildCommand) => staticBody({ buildCommand })),
  fc.string({ minLength: 1, maxLength: 12 }).filter((key) => !['projectId', 'organizationId', 'orgId', 'userId', 'projectName', 'environment', 'customDomain', 'containerSize', 'envVariables', 'buildCommand', 'startCommand', 'port', 'files', 'initFiles', 'historyMessages', '__proto__', 'constructor'].includes(key)).map((key) => staticBody({ [key]: 1 })),
  fc.oneof(nasty, wrongType).filter((role) => !['user', 'assistant', 'system'].includes(role as string)).map((role) => staticBody({ historyMessages: [{ role, content: 'x' }] })),
  fc.oneof(fc.array(fc.integer(), { maxLength: 3 }), fc.string(), fc.integer(), fc.boolean(), fc.constant(null)),
);

/** Deeply nested JSON in some field. */
const deeplyNested = fc.integer({ min: 100, max: 20_000 }).map((depth) => `{"projectId":${'['.repeat(depth)}${']'.repeat(depth)},"userId":"u","organizationId":"org_456","files":[]}`);
/** Valid JSON cut or corrupted somewhere. */
const malformedJson = fc
  .tuple(fc.nat(), fc.constantFrom('', '}', '{', ',', '"', '\u0000', 'NaN', 'undefined'))
  .map(([cut, junk]) => {
    const text = JSON.stringify(staticBody());
    const at = 1 + (cut % (text.length - 2));
    return text.slice(0, at) + junk;
  })
  .filter((text) => {
    try {
      JSON.parse(text);
      return false;
    } catch {
      return true;
    }
  });
const wrongContentType = fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream', 'text/html', 'image/png', 'application/jsonx');

/** Request routes with a deployment id, and values that are not one. */
const idRoutes = ['GET /deploy/:id/status', 'GET /deploy/:id/logs', 'POST /deploy/:id/cancel', 'POST /deploy/:id/retry', 'POST /deploy/:id/rollback'] as const;
// `.` and `..` are left out: URL parsing (the client's, here light-my-request's) resolves them into
// another route before the request is sent, so the server never sees them as an id.
const badDeploymentId = fc
  .oneof(nasty, fc.string({ minLength: 1, maxLength: 40 }), fc.stringMatching(/^dep_[A-Z0-9]{26}$/), fc.constantFrom('%E0%A4%A', '%', '%zz'))
  .filter((id) => id !== '' && id !== '.' && id !== '..' && !/^dep_[a-z2-7]{26}$/.test(id));

describe('hostile input', () => {
  let h: Harness;
  let requests = 0;
  beforeAll(async () => {
    h = await createHarness({ maxActivePerOrg: 1_000_000, rateLimitPerMinute: 10_000_000 });
  });
  afterAll(async () => {
    await h.close();
  });

  /** Every answer: a 4xx, JSON, in the documented error shape. */
  const expectClientError = (response: { statusCode: number; headers: Record<string, unknown>; body: string }, context: string) => {
    requests += 1;
    if (response.statusCode < 400 || response.statusCode >= 500) {
      throw new Error(`${context} answered ${response.statusCode}: ${response.body.slice(0, 300)}`);
    }
    expect(String(response.headers['content-type'])).toContain('application/json');
    const body = JSON.parse(response.body) as Record<string, unknown>;
    expect(body.success).toBe(false);
    expect(typeof body.error).toBe('string');
    expect(typeof body.message).toBe('string');
    expect(typeof body.timestamp).toBe('string');
  };

  it('refuses generated bad deployment bodies (POST /deploy and /api/deploy)', async () => {
    await fc.assert(
      fc.asyncProperty(badDeployBody, fc.constantFrom('/deploy', '/api/deploy'), async (body, url) => {
        const response = await h.app.inject({ method: 'POST', url, headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
        expectClientError(response, `POST ${url} ${JSON.stringify(body).slice(0, 200)}`);
      }),
      { numRuns: 6000 },
    );
  }, 120_000);

  it('refuses malformed JSON, deep nesting and wrong content types', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(malformedJson, deeplyNested), async (payload) => {
        const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload });
        expectClientError(response, `POST /deploy ${payload.slice(0, 100)}`);
      }),
      { numRuns: 1000 },
    );
    await fc.assert(
      fc.asyncProperty(wrongContentType, async (type) => {
        const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'content-type': type }, payload: JSON.stringify(staticBody()) });
        expect(response.statusCode).toBe(415);
        expectClientError(response, `content-type ${type}`);
      }),
      { numRuns: 300 },
    );
  }, 120_000);

  it('refuses oversized bodies with 413', async () => {
    for (const extra of [1, 1024, 1024 * 1024]) {
      const payload = `{"projectId":"p","userId":"u","organizationId":"org_456","files":[{"path":"a","content":"${'a'.repeat(LIMITS.bodyBytes + extra)}"}]}`;
      const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload });
      expect(response.statusCode).toBe(413);
      expectClientError(response, 'oversized body');
    }
  }, 60_000);

  it('refuses bad ids, queries and bodies on every other endpoint', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...idRoutes), badDeploymentId, async (route, id) => {
        const [method, path] = route.split(' ') as ['GET' | 'POST', string];
        // Raw percent sequences are sent as they are, to reach the server's URL decoding.
        const url = path.replace(':id', id.startsWith('%') ? id : encodeURIComponent(id));
        expectClientError(await h.app.inject({ method, url, headers: auth('org_456') }), `${method} ${url}`);
      }),
      { numRuns: 1200 },
    );
    await fc.assert(
      fc.asyncProperty(badDeploymentId, async (id) => {
        expectClientError(await h.app.inject({ url: `/deploy-status?id=${encodeURIComponent(id)}`, headers: auth('org_456') }), `deploy-status ${id}`);
      }),
      { numRuns: 300 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ limit: fc.oneof(fc.integer({ max: 0 }), fc.integer({ min: 101 }), fc.string({ minLength: 1 }).filter((s) => !/^\s*\d+\s*$/.test(s))) }).map(({ limit }) => `limit=${encodeURIComponent(String(limit))}`),
          fc.string({ minLength: 1, maxLength: 100 }).map((cursor) => `cursor=${encodeURIComponent(cursor)}`),
        ),
        async (query) => {
          expectClientError(await h.app.inject({ url: `/deploy/project/site?${query}`, headers: auth('org_456') }), `project list ${query}`);
        },
      ),
      { numRuns: 700 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ olderThanDays: fc.oneof(fc.integer({ max: -1 }), fc.integer({ min: 3651 }), fc.string(), fc.constant(null)) }),
          fc.record({ dryRun: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) }),
          fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => !['olderThanDays', 'dryRun', '__proto__', 'constructor'].includes(k)), fc.integer(), { minKeys: 1, maxKeys: 2 }),
          fc.oneof(fc.array(fc.integer()), fc.string(), fc.integer()),
        ),
        async (body) => {
          const response = await h.app.inject({ method: 'POST', url: '/status/cleanup', headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
          expectClientError(response, `cleanup ${JSON.stringify(body)}`);
        },
      ),
      { numRuns: 500 },
    );
  }, 120_000);

  it('refuses bad env variable bodies on the env endpoints, in the error shape', async () => {
    const badName = fc.oneof(nasty, fc.string({ minLength: 1, maxLength: 20 })).filter((name) => !new RegExp(ENV_NAME_PATTERN).test(name) && !['__proto__', 'constructor', '.', '..'].includes(name));
    const badValue = fc.oneof(fc.integer(), fc.boolean(), fc.array(fc.string(), { maxLength: 2 }), fc.constant({}), fc.constant('x'.repeat(LIMITS.envValueBytes + 1)), fc.constant('a\u0000b'));
    const body = fc.oneof(
      fc.record({ set: fc.dictionary(badName, fc.string({ maxLength: 5 }), { minKeys: 1, maxKeys: 3 }) }),
      fc.record({ set: fc.dictionary(fc.constantFrom('A', 'B', 'PORT'), badValue, { minKeys: 1, maxKeys: 2 }) }),
      fc.record({ set: fc.constant({ A: 'a' }), replace: fc.oneof(fc.string(), fc.integer()) }),
      fc.record({ set: fc.constant({ A: 'a' }), apply: fc.string().filter((apply) => apply !== 'restart' && apply !== 'none') }),
      fc.record({ set: fc.constant({ A: 'a' }), environment: fc.string().filter((environment) => !['development', 'staging', 'production'].includes(environment)) }),
      fc.oneof(fc.array(fc.integer()), fc.string(), fc.integer(), fc.constant({})),
    );
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom('PATCH /projects/site/env', 'PUT /env/bulk', 'POST /env'), async (payload, route) => {
        const [method, url] = route.split(' ') as ['PATCH' | 'PUT' | 'POST', string];
        const response = await h.app.inject({ method, url, headers: { ...auth('org_456'), 'content-type': 'application/json' }, payload: JSON.stringify(payload) });
        expectClientError(response, `${route} ${JSON.stringify(payload).slice(0, 200)}`);
      }),
      { numRuns: 600 },
    );
    await fc.assert(
      fc.asyncProperty(badName, async (name) => {
        const url = `/projects/site/env/${encodeURIComponent(name)}`;
        expectClientError(await h.app.inject({ method: 'PUT', url, headers: auth('org_456'), payload: { value: 'x' } }), `PUT ${url}`);
      }),
      { numRuns: 300 },
    );
  }, 120_000);

  it('refuses requests without a valid token on every protected endpoint', async () => {
    const routes = [
      'POST /deploy',
      'POST /api/deploy',
      'GET /deploy-status?id=dep_aaaaaaaaaaaaaaaaaaaaaaaaaa',
      'GET /status',
      'GET /status/queue',
      'GET /status/deployments',
      'POST /status/cleanup',
      'GET /deploy/project/site',
      ...idRoutes.map((r) => r.replace(':id', 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa')),
      // app operations (issue 12)
      'GET /apps',
      'GET /projects/site/env',
      'PUT /projects/site/env/A',
      'PATCH /projects/site/env',
      'DELETE /projects/site/env/A',
      'DELETE /projects/site',
      'POST /env',
      'PUT /env/bulk',
      'DELETE /env/site-abcdef-development/A',
      'GET /droplets/count',
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), fc.option(fc.oneof(fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 }), fc.string({ maxLength: 40 }).map((t) => `Bearer ${t.replace(/[^\x20-\x7e]/g, '')}`))), async (route, authorization) => {
        const [method, url] = route.split(' ') as ['GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', string];
        const response = await h.app.inject({ method, url, headers: authorization === null ? {} : { authorization }, ...(method === 'POST' || method === 'PUT' || method === 'PATCH' ? { payload: staticBody() } : {}) });
        expect(response.statusCode).toBe(401);
        expectClientError(response, `${route} with ${String(authorization)}`);
      }),
      { numRuns: 700 },
    );
  }, 60_000);

  it(`sent over 10,000 bad requests and stored nothing`, async () => {
    expect(requests).toBeGreaterThanOrEqual(10_000);
    for (const org of ['org_456', 'org_other']) {
      expect(await h.adapters.store.countByStatus(org)).toEqual({ queued: 0, in_progress: 0, completed: 0, failed: 0, cancelled: 0, superseded: 0 });
    }
    expect(await h.adapters.queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });
    expect(await h.artifactFiles()).toEqual([]);
    expect((await h.app.inject('/health')).statusCode).toBe(200);
  });
});
