import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIMITS } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

/** Every documented limit, broken once: a 4xx naming the field, and nothing stored. */
describe('request validation and limits', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  const file = (path: string, content = 'x', encoding?: 'utf8' | 'base64') => ({ path, content, ...(encoding === undefined ? {} : { encoding }) });
  const big = (bytes: number) => 'a'.repeat(bytes);

  const cases: [string, Record<string, unknown>, string][] = [
    ['missing projectId', { ...staticBody(), projectId: undefined }, 'projectId'],
    ['missing userId', { ...staticBody(), userId: undefined }, 'userId'],
    ['missing org', { ...staticBody(), organizationId: undefined }, 'organizationId'],
    ['projectId of the wrong type', staticBody({ projectId: 42 }), 'projectId'],
    ['projectId with a space', staticBody({ projectId: 'my app' }), 'projectId'],
    ['projectId too long', staticBody({ projectId: 'p'.repeat(LIMITS.idLength + 1) }), 'projectId'],
    ['unknown field', staticBody({ region: 'eu' }), 'region'],
    ['environment not allowed', staticBody({ environment: 'qa' }), 'environment'],
    ['projectName with a newline', staticBody({ projectName: 'a\nb' }), 'projectName'],
    ['no files', staticBody({ files: [] }), 'files'],
    ['files and initFiles both', staticBody({ initFiles: [file('a.html')] }), 'initFiles'],
    ['too many files', staticBody({ files: Array.from({ length: LIMITS.files + 1 }, (_, i) => file(`f${i}.txt`)) }), 'files'],
    ['absolute path', staticBody({ files: [file('/etc/passwd')] }), 'files/0/path'],
    ['path traversal', staticBody({ files: [file('a/../../x')] }), 'files/0/path'],
    ['backslash traversal', staticBody({ files: [file('..\\..\\x')] }), 'files/0/path'],
    ['drive letter', staticBody({ files: [file('C:/x')] }), 'files/0/path'],
    ['NUL in a path', staticBody({ files: [file('a\u0000b')] }), 'files/0/path'],
    ['control character in a path', staticBody({ files: [file('a\u001bb')] }), 'files/0/path'],
    ['bidi override in a path', staticBody({ files: [file('evil\u202etxt.sh')] }), 'files/0/path'],
    ['path too long', staticBody({ files: [file('p'.repeat(LIMITS.pathLength + 1))] }), 'files/0/path'],
    ['duplicate paths', staticBody({ files: [file('a'), file('a')] }), 'files/1/path'],
    ['invalid base64', staticBody({ files: [file('a.bin', 'not base64!!', 'base64')] }), 'files/0/content'],
    ['unknown encoding', staticBody({ files: [{ path: 'a', content: 'x', encoding: 'hex' }] }), 'files/0/encoding'],
    ['file over the per-file limit', staticBody({ files: [file('big.txt', big(LIMITS.fileBytes + 1))] }), 'files/0/content'],
    [
      'source over the total limit',
      staticBody({ files: [file('a.txt', big(LIMITS.fileBytes)), file('b.txt', big(LIMITS.fileBytes)), file('c.txt', big(LIMITS.fileBytes))] }),
      'files',
    ],
    ['domain with a header injection', staticBody({ customDomain: 'a.com\r\nX-Evil: 1' }), 'customDomain'],
    ['domain without a dot', staticBody({ customDomain: 'localhost' }), 'customDomain'],
    ['domain with a path', staticBody({ customDomain: 'example.com/x' }), 'customDomain'],
    ['IP address as domain', staticBody({ customDomain: '10.0.0.1' }), 'customDomain'],
    ['domain too long', staticBody({ customDomain: `${'a'.repeat(60)}.`.repeat(5) + 'com' }), 'customDomain'],
    ['env name with a dash', staticBody({ envVariables: { 'BAD-NAME': 'x' } }), 'envVariables/BAD-NAME'],
    ['env name starting with a digit', staticBody({ envVariables: { '1ABC': 'x' } }), 'envVariables/1ABC'],
    ['reserved env name', staticBody({ envVariables: { PORT: '3000' } }), 'envVariables/PORT'],
    ['env value not a string', staticBody({ envVariables: { A: 1 } }), 'envVariables/A'],
    ['env value with NUL', staticBody({ envVariables: { A: 'a\u0000b' } }), 'envVariables/A'],
    ['too many env variables', staticBody({ envVariables: Object.fromEntries(Array.from({ length: LIMITS.envVariables + 1 }, (_, i) => [`V${i}`, 'x'])) }), 'envVariables'],
    ['container size not a Container Apps pair', staticBody({ containerSize: { cpu: 1, memory: '3Gi' } }), 'containerSize'],
    ['container size too large', staticBody({ containerSize: { cpu: '8', memory: '16Gi' } }), 'containerSize'],
    ['container size with an extra field', staticBody({ containerSize: { cpu: 1, memory: '2Gi', gpu: 1 } }), 'containerSize/gpu'],
    ['port out of range', staticBody({ port: 70000 }), 'port'],
    ['port not an integer', staticBody({ port: '80' }), 'port'],
    ['command with a newline', staticBody({ buildCommand: 'npm run build\nrm -rf /' }), 'buildCommand'],
    ['command too long', staticBody({ startCommand: 'x'.repeat(LIMITS.commandLength + 1) }), 'startCommand'],
    ['history role unknown', staticBody({ historyMessages: [{ role: 'robot', content: 'hi' }] }), 'historyMessages/0/role'],
  ];

  for (const [name, body, field] of cases) {
    it(`refuses ${name} (${field})`, async () => {
      const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: body });
      expect(response.statusCode, response.body.slice(0, 300)).toBe(400);
      const json = response.json<{ success: boolean; error: string; details: { field: string; message: string }[] }>();
      expect(json.success).toBe(false);
      expect(json.error).toBe('VALIDATION_ERROR');
      expect(json.details.map((d) => d.field)).toContain(field);
    });
  }

  it('refuses a body over the size limit with 413', async () => {
    const response = await h.app.inject({
      method: 'POST',
      url: '/deploy',
      headers: { ...auth('org_456'), 'content-type': 'application/json' },
      payload: JSON.stringify(staticBody({ files: [file('a', big(LIMITS.bodyBytes))] })),
    });
    expect(response.statusCode).toBe(413);
    expect(response.json()).toMatchObject({ success: false, error: 'PAYLOAD_TOO_LARGE' });
  });

  it('refuses malformed JSON, prototype pollution and other content types', async () => {
    const send = (payload: string, type = 'application/json') =>
      h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'content-type': type }, payload });
    expect((await send('{"projectId": ')).json()).toMatchObject({ error: 'INVALID_JSON' });
    expect((await send('{"__proto__": {"admin": true}}')).statusCode).toBe(400);
    const text = await send('projectId=x', 'text/plain');
    expect(text.statusCode).toBe(415);
    expect(text.json()).toMatchObject({ error: 'UNSUPPORTED_MEDIA_TYPE' });
    expect((await send('a=b', 'application/x-www-form-urlencoded')).statusCode).toBe(415);
  });

  it('refuses a bad Idempotency-Key', async () => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'idempotency-key': 'k'.repeat(300) }, payload: staticBody() });
    expect(response.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'idempotency-key' }] });
  });

  it('stored nothing for any refused request', async () => {
    expect(await h.adapters.store.countByStatus('org_456')).toEqual({ queued: 0, in_progress: 0, completed: 0, failed: 0, cancelled: 0, superseded: 0 });
    expect(await h.adapters.queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });
    expect(await h.artifactFiles()).toEqual([]);
  });
});
