/**
 * What every peer service shares: a Fastify app configured the way a competent engineer would for
 * this job, doing the same per-request work as our API where the work is not the point of the
 * comparison — the bearer token checked against its SHA-256 in constant time, the body validated
 * against the same JSON schema as ours (DeployRequestSchema, Fastify's own Ajv), one access-log
 * line per request at the same level as ours (to the file the bench redirects output to).
 * No rate limiter, no OpenAPI, no content-addressed files: what our API does beyond that is ours to pay for.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DeployRequestSchema, LIMITS } from '@zepid/core';

export { DeployRequestSchema };

const sha256 = (text: string) => createHash('sha256').update(text).digest();

export function peerApp(): FastifyInstance {
  const app = Fastify({
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: LIMITS.bodyBytes,
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, responseTimeMs: reply.elapsedTime }, 'request completed');
  });
  return app;
}

/** `TOKENS=org:token,…`; returns an onRequest hook that sets `orgOf(request)` or answers 401. */
export function bearerAuth(): { hook: (request: FastifyRequest, reply: FastifyReply) => Promise<void>; orgOf: (request: FastifyRequest) => string } {
  const entries = (process.env.TOKENS ?? '').split(',').filter(Boolean).map((pair) => {
    const at = pair.indexOf(':');
    return { orgId: pair.slice(0, at), hash: sha256(pair.slice(at + 1)) };
  });
  const orgs = new WeakMap<FastifyRequest, string>();
  return {
    async hook(request, reply) {
      const match = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '');
      const presented = match?.[1] === undefined ? null : sha256(match[1]);
      const entry = presented === null ? undefined : entries.find((candidate) => timingSafeEqual(candidate.hash, presented));
      if (entry === undefined) {
        await reply.code(401).send({ success: false, error: 'UNAUTHORIZED', message: 'bad token', timestamp: new Date().toISOString() });
        return;
      }
      orgs.set(request, entry.orgId);
    },
    orgOf: (request) => orgs.get(request) ?? '',
  };
}

/** Listens on PORT (loopback) and closes on SIGTERM, as bench services do. */
export async function serve(app: FastifyInstance, onClose: () => Promise<void> | void = () => undefined): Promise<void> {
  await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' });
  process.on('SIGTERM', () => {
    void app
      .close()
      .then(onClose)
      .finally(() => process.exit(0));
  });
}
