import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { createHarness } from './harness.ts';

/**
 * The API compiles each route's validators and response serializers on the route's first use (for
 * its idle memory, issue 13), so a schema Ajv or fast-json-stringify refuses would only show as a
 * 500 on that route. Here every route is built the eager way, as Fastify does by default.
 */
describe('route schemas', () => {
  const brokenRoute = (app: FastifyInstance) =>
    app.post('/__broken', { schema: { body: { type: 'object', properties: { a: { type: 'no-such-type' } } } } }, () => ({}));

  it('every route of the API compiles its validators and serializers', async () => {
    const harness = await createHarness({ compileSchemasAtStart: true });
    try {
      // The API's routes are there (not an empty app that compiles nothing).
      const openapi = (await harness.app.inject({ url: '/openapi.json' })).json<{ paths: Record<string, unknown> }>();
      for (const path of ['/deploy', '/deploy/{id}/status', '/deploy/{id}/redeploy', '/apps', '/webhooks', '/events']) expect(Object.keys(openapi.paths)).toContain(path);
      expect(Object.keys(openapi.paths).length).toBeGreaterThan(30);
    } finally {
      await harness.close();
    }
  });

  it('the eager build refuses a schema that does not compile (so the test above can fail), where the lazy one starts', async () => {
    await expect(createHarness({ compileSchemasAtStart: true, beforeReady: brokenRoute })).rejects.toThrow(/no-such-type|schema/i);
    const lazy = await createHarness({ beforeReady: brokenRoute });
    try {
      const answer = await lazy.app.inject({ method: 'POST', url: '/__broken', payload: { a: 1 } });
      expect(answer.statusCode).toBe(500);
    } finally {
      await lazy.close();
    }
  });
});
