import type { FastifyInstance } from 'fastify';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { registerErrorHandling } from '../src/errors.ts';
import { rateLimitHook } from '../src/rate-limit.ts';

/**
 * RATE_LIMIT_PER_MINUTE's counter (the API's own since issue 16's status work; it replaced
 * @fastify/rate-limit's local store and keeps its headers): a fixed window of a minute per key.
 */
describe('rate limit per token', () => {
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  async function limited(max: number) {
    let now = 1_000_000;
    const app = Fastify();
    apps.push(app);
    registerErrorHandling(app);
    app.addHook('onRequest', rateLimitHook(max, (request) => String(request.headers['x-key']), () => now));
    app.get('/', () => ({ ok: true }));
    await app.ready();
    return { app, advance: (ms: number) => (now += ms), get: (key: string) => app.inject({ url: '/', headers: { 'x-key': key } }) };
  }

  it('counts per key in windows of a minute, with the limit headers; refuses with 429 RATE_LIMITED and Retry-After', async () => {
    const { get, advance } = await limited(2);
    const first = await get('a');
    expect(first.statusCode).toBe(200);
    expect(first.headers).toMatchObject({ 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '1', 'x-ratelimit-reset': '60' });
    advance(20_500);
    expect((await get('a')).headers).toMatchObject({ 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '40' });
    const refused = await get('a');
    expect(refused.statusCode).toBe(429);
    expect(refused.headers).toMatchObject({ 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '40', 'retry-after': '40' });
    expect(refused.json()).toMatchObject({ success: false, error: 'RATE_LIMITED', message: 'More than 2 requests per minute with this token; retry in 40 s' });
    // Another key has its own count.
    expect((await get('b')).statusCode).toBe(200);
    // The window ends a minute after its first request: counted afresh.
    advance(39_500);
    const next = await get('a');
    expect(next.statusCode).toBe(200);
    expect(next.headers).toMatchObject({ 'x-ratelimit-remaining': '1', 'x-ratelimit-reset': '60' });
  });
});
