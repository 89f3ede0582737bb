import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { DeploymentRecord } from '@zepid/core';
import { checkDeployRequest, DeployError, DeployRequestSchema, formatLogLine, LIMITS, parseLogLines } from '@zepid/core';
import type { AppContext } from '../context.ts';
import {
  AcceptedBody,
  DeploymentIdParams,
  DeploymentIdQuery,
  DeploymentSummary,
  errorResponses,
  LogLineView,
  PageQuery,
  ProjectParams,
  StatusView,
} from '../schemas.ts';
import { RecentTimesCache } from '../estimates.ts';
import { statusView, summaryView } from '../views.ts';

const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: LIMITS.idempotencyKeyLength,
      pattern: '^[\\x21-\\x7e]+$',
      description: 'Same key and body within the retention period: the same deployment answers again. Same key, other body: 409.',
    }),
  ),
});

const deploySchema = (summary: string, deprecated = false) => ({
  tags: ['deployments'],
  summary,
  deprecated,
  security: [{ bearerAuth: [] }],
  headers: IdempotencyHeaders,
  body: DeployRequestSchema,
  response: { 202: AcceptedBody, ...errorResponses(400, 401, 403, 409, 413, 415, 429, 503) },
});

/** How long after a deployment ends its log is taken as final (the worker's last flush is within 250 ms). */
const FINAL_LOG_AFTER_MS = 10_000;
const FINAL_LOG_ENTRIES = 1000;

/** Deployment endpoints. Every handler sees only the org of the token (`request.orgId`). */
export const deployRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { service, adapters } = context;

  const notFound = (id: string) => new DeployError('NOT_FOUND', `Deployment ${id} not found`);
  const load = async (orgId: string, id: string): Promise<DeploymentRecord> => {
    const record = await adapters.store.get({ orgId, deploymentId: id });
    if (record === null) throw notFound(id);
    return record;
  };

  /**
   * Status is what clients poll. A deployment that ended more than FINAL_LOG_AFTER_MS ago has its
   * whole log written (the worker flushes on finishing), so its formatted last lines are kept,
   * keyed by the record's etag (a retry changes it): no log read for finished deployments. Running
   * ones read the tail every time (a stat when it has not grown).
   */
  const finalLines = new Map<string, { etag: string; lines: string[] }>();
  const recent = new RecentTimesCache(adapters.store);
  const status = async (orgId: string, id: string) => {
    const record = await load(orgId, id);
    if (record.status === 'in_progress') {
      const { stepMs } = await recent.forOrg(orgId).catch(() => ({ stepMs: {} }));
      const tail = await adapters.artifacts.readLogTail(id, LIMITS.statusLogLines * 512);
      return statusView(record, parseLogLines(tail).slice(-LIMITS.statusLogLines).map(formatLogLine), stepMs);
    }
    const known = finalLines.get(id);
    if (known !== undefined && known.etag === record.etag) return statusView(record, known.lines);
    const tail = await adapters.artifacts.readLogTail(id, LIMITS.statusLogLines * 512);
    const lines = parseLogLines(tail).slice(-LIMITS.statusLogLines).map(formatLogLine);
    if (record.finishedAt !== null && Date.now() - Date.parse(record.finishedAt) > FINAL_LOG_AFTER_MS) {
      if (finalLines.size >= FINAL_LOG_ENTRIES) finalLines.delete(finalLines.keys().next().value ?? '');
      finalLines.set(id, { etag: record.etag, lines });
    }
    return statusView(record, lines);
  };

  // What deployments of the organization took lately; the configured text until some completed.
  const estimatedDuration = async (orgId: string) => (await recent.forOrg(orgId).catch(() => ({ summary: null }))).summary ?? context.estimatedDuration;
  const accepted = async (record: DeploymentRecord, message: string) => ({
    success: true as const,
    deploymentId: record.id,
    status: record.status,
    attempt: record.attempt,
    message,
    timestamp: new Date().toISOString(),
    estimatedDuration: await estimatedDuration(record.orgId),
    statusUrl: `/deploy/${record.id}/status`,
  });

  for (const [url, summary, deprecated] of [
    ['/deploy', 'Queue a deployment of a project\'s files', false],
    ['/api/deploy', 'v2 alias of POST /deploy', true],
  ] as const) {
    app.post(url, { schema: deploySchema(summary, deprecated) }, async (request, reply) => {
      const checked = checkDeployRequest(request.body);
      if ('errors' in checked) {
        throw new DeployError('VALIDATION_ERROR', `Invalid body: ${checked.errors.map((e) => e.field).slice(0, 5).join(', ')}`, {
          details: checked.errors,
        });
      }
      if (checked.request.orgId !== request.orgId) {
        throw new DeployError('FORBIDDEN', `This token does not belong to organization ${checked.request.orgId}`);
      }
      const key = request.headers['idempotency-key'];
      const { record, replayed } = await service.submit(
        checked.request,
        key === undefined ? null : { key, body: request.body },
        adapters.telemetry.currentTraceparent(),
      );
      if (!replayed) {
        adapters.telemetry.event('DeploymentQueued', {
          deploymentId: record.id,
          orgId: record.orgId,
          projectId: record.projectId,
          environment: record.environment,
        });
        request.log.info({ deploymentId: record.id, projectId: record.projectId }, 'deployment queued');
      } else {
        void reply.header('idempotent-replayed', 'true');
      }
      return reply.code(202).send(await accepted(record, replayed ? 'Deployment already queued for this Idempotency-Key' : 'Deployment queued successfully'));
    });
  }

  app.get(
    '/deploy/:id/status',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Status, progress, steps and recent log lines of a deployment',
        security: [{ bearerAuth: [] }],
        params: DeploymentIdParams,
        response: { 200: StatusView, ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request) => status(request.orgId, request.params.id),
  );

  app.get(
    '/deploy-status',
    {
      schema: {
        tags: ['deployments'],
        summary: 'v1 form of GET /deploy/:id/status',
        deprecated: true,
        security: [{ bearerAuth: [] }],
        querystring: DeploymentIdQuery,
        response: { 200: StatusView, ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request) => status(request.orgId, request.query.id),
  );

  app.get(
    '/deploy/:id/logs',
    {
      schema: {
        tags: ['deployments'],
        summary: 'All log lines of a deployment: JSON, or plain text with Accept: text/plain',
        security: [{ bearerAuth: [] }],
        params: DeploymentIdParams,
        response: {
          200: Type.Object({ deploymentId: Type.String(), logs: Type.Array(LogLineView) }),
          ...errorResponses(400, 401, 404, 503),
        },
      },
    },
    async (request, reply) => {
      await load(request.orgId, request.params.id);
      const lines = parseLogLines(await adapters.artifacts.readLog(request.params.id));
      const accept = request.headers.accept ?? '';
      if (accept.includes('text/plain') && !accept.includes('application/json')) {
        const text = lines.map((line) => `${formatLogLine(line)}\n`).join('');
        return reply.type('text/plain; charset=utf-8').serializer((payload: unknown) => String(payload)).send(text as never);
      }
      return { deploymentId: request.params.id, logs: lines };
    },
  );

  app.post(
    '/deploy/:id/cancel',
    {
      bodyLimit: 1024,
      schema: {
        tags: ['deployments'],
        summary: 'Cancel a queued or running deployment; what it created is removed',
        security: [{ bearerAuth: [] }],
        params: DeploymentIdParams,
        response: { 202: AcceptedBody, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const record = await service.cancel(request.orgId, request.params.id);
      if (record.status === 'cancelled') {
        adapters.telemetry.event('DeploymentCancelled', { deploymentId: record.id, orgId: record.orgId, projectId: record.projectId, environment: record.environment });
      }
      const message = record.status === 'cancelled' ? 'Deployment cancelled' : 'Cancellation requested; the worker is stopping the deployment';
      return reply.code(202).send(await accepted(record, message));
    },
  );

  app.post(
    '/deploy/:id/retry',
    {
      bodyLimit: 1024,
      schema: {
        tags: ['deployments'],
        summary: 'Run a failed or cancelled deployment again as a new attempt, from its first unfinished step',
        security: [{ bearerAuth: [] }],
        params: DeploymentIdParams,
        response: { 202: AcceptedBody, ...errorResponses(400, 401, 404, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const record = await service.retry(request.orgId, request.params.id, adapters.telemetry.currentTraceparent());
      return reply.code(202).send(await accepted(record, `Attempt ${record.attempt} queued`));
    },
  );

  app.get(
    '/deploy/project/:projectId',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Deployments of a project, newest first, paged with a cursor',
        security: [{ bearerAuth: [] }],
        params: ProjectParams,
        querystring: PageQuery,
        response: {
          200: Type.Object({ projectId: Type.String(), deployments: Type.Array(DeploymentSummary), nextCursor: Type.Union([Type.String(), Type.Null()]) }),
          ...errorResponses(400, 401, 503),
        },
      },
    },
    async (request) => {
      const page = await adapters.store.listByProject(request.orgId, request.params.projectId, {
        limit: request.query.limit ?? LIMITS.defaultPageSize,
        cursor: request.query.cursor ?? null,
      });
      return { projectId: request.params.projectId, deployments: page.items.map((record) => summaryView(record)), nextCursor: page.nextCursor };
    },
  );
};
