import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { DependencyHealth } from '@zepid/core';
import { SERVICE_NAME, SERVICE_VERSION } from '@zepid/core';
import type { AppContext } from '../context.ts';

const Status = Type.Union([Type.Literal('healthy'), Type.Literal('unhealthy')]);
const Dependency = Type.Object({
  status: Status,
  latencyMs: Type.Number(),
  detail: Type.Optional(Type.String()),
});

const HealthBody = Type.Object({
  status: Status,
  timestamp: Type.String(),
  service: Type.String(),
  version: Type.String(),
  uptime: Type.Number({ description: 'Milliseconds since the process started.' }),
  checks: Type.Object({ database: Status, queue: Status }),
});

const DetailedBody = Type.Object({
  status: Status,
  timestamp: Type.String(),
  service: Type.String(),
  version: Type.String(),
  mode: Type.String(),
  uptime: Type.Number(),
  checks: Type.Object({
    store: Dependency,
    queue: Dependency,
    artifacts: Dependency,
    secrets: Dependency,
    worker: Type.Object({
      status: Status,
      lastSeenAt: Type.Union([Type.String(), Type.Null()]),
      workers: Type.Array(
        Type.Object({ workerId: Type.String(), lastSeenAt: Type.String(), running: Type.Number(), capacity: Type.Number(), version: Type.String() }),
      ),
    }),
  }),
});

/** Public health endpoints: for load balancers, probes and humans. Unhealthy answers are 503. */
export const healthRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters } = context;
  const base = () => ({
    timestamp: new Date().toISOString(),
    service: SERVICE_NAME,
    version: SERVICE_VERSION,
    uptime: Date.now() - context.startedAt,
  });
  const core = () => Promise.all([adapters.store.health(), adapters.queue.health()]);
  const worst = (...checks: DependencyHealth[]) => (checks.every((check) => check.status === 'healthy') ? 'healthy' : 'unhealthy');

  app.get(
    '/health',
    { schema: { tags: ['health'], summary: 'Service health with store and queue checks', response: { 200: HealthBody, 503: HealthBody } } },
    async (_request, reply) => {
      const [store, queue] = await core();
      const status = worst(store, queue);
      return reply.code(status === 'healthy' ? 200 : 503).send({ ...base(), status, checks: { database: store.status, queue: queue.status } });
    },
  );

  app.get(
    '/health/detailed',
    {
      schema: {
        tags: ['health'],
        summary: 'Every dependency with latency, and the worker heartbeat',
        response: { 200: DetailedBody, 503: DetailedBody },
      },
    },
    async (_request, reply) => {
      const [[store, queue], artifacts, secrets, heartbeats] = await Promise.all([
        core(),
        adapters.artifacts.health(),
        adapters.secrets.health(),
        adapters.store.listHeartbeats().catch(() => []),
      ]);
      const now = Date.now();
      const alive = heartbeats.filter((beat) => now - Date.parse(beat.lastSeenAt) < context.workerStaleMs);
      const worker = {
        status: alive.length > 0 ? ('healthy' as const) : ('unhealthy' as const),
        lastSeenAt: heartbeats[0]?.lastSeenAt ?? null,
        workers: alive.map(({ workerId, lastSeenAt, running, capacity, version }) => ({ workerId, lastSeenAt, running, capacity, version })),
      };
      const status = worst(store, queue, artifacts, secrets) === 'healthy' && worker.status === 'healthy' ? 'healthy' : 'unhealthy';
      return reply
        .code(status === 'healthy' ? 200 : 503)
        .send({ ...base(), mode: context.mode, status, checks: { store, queue, artifacts, secrets, worker } });
    },
  );

  app.get(
    '/health/ready',
    {
      schema: {
        tags: ['health'],
        summary: 'Readiness: 200 when the store and the queue answer',
        response: { 200: Type.Object({ status: Type.Literal('ready') }), 503: Type.Object({ status: Type.Literal('not_ready'), reasons: Type.Array(Type.String()) }) },
      },
    },
    async (_request, reply) => {
      const [store, queue] = await core();
      const reasons = [store.status === 'healthy' ? null : 'store', queue.status === 'healthy' ? null : 'queue'].filter((r): r is string => r !== null);
      if (reasons.length > 0) return reply.code(503).send({ status: 'not_ready' as const, reasons });
      return { status: 'ready' as const };
    },
  );

  app.get(
    '/health/live',
    {
      schema: {
        tags: ['health'],
        summary: 'Liveness: 200 while the process serves requests',
        response: { 200: Type.Object({ status: Type.Literal('alive'), uptime: Type.Number() }) },
      },
    },
    () => ({ status: 'alive' as const, uptime: Date.now() - context.startedAt }),
  );
};
