import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { DEPLOYMENT_STATUSES, LIMITS, OBJECT_RETENTION, SERVICE_NAME, SERVICE_VERSION } from '@zepid/core';
import { cleanupFinished } from '../cleanup.ts';
import type { AppContext } from '../context.ts';
import { DeploymentSummary, errorResponses } from '../schemas.ts';
import { summaryView } from '../views.ts';
import { buildersOf, imageBuilderOf } from '../apps.ts';

const Counts = Type.Object(Object.fromEntries(DEPLOYMENT_STATUSES.map((status) => [status, Type.Integer()])) as Record<(typeof DEPLOYMENT_STATUSES)[number], ReturnType<typeof Type.Integer>>);

/** Service statistics for the token's org, queue metrics, and retention cleanup. */
export const statusRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters } = context;
  const security = [{ bearerAuth: [] }];

  app.get(
    '/status',
    {
      schema: {
        tags: ['status'],
        summary: 'Deployment counts by status for your organization, uptime and version',
        security,
        response: {
          200: Type.Object({
            service: Type.String(),
            version: Type.String(),
            mode: Type.String(),
            uptime: Type.Number(),
            timestamp: Type.String(),
            organizationId: Type.String(),
            deployments: Counts,
            limits: Type.Object({ maxActiveDeployments: Type.Integer(), retentionDays: Type.Integer() }),
          }),
          ...errorResponses(401, 503),
        },
      },
    },
    async (request) => ({
      service: SERVICE_NAME,
      version: SERVICE_VERSION,
      mode: context.mode,
      uptime: Date.now() - context.startedAt,
      timestamp: new Date().toISOString(),
      organizationId: request.orgId,
      deployments: await adapters.store.countByStatus(request.orgId),
      limits: { maxActiveDeployments: context.service.maxActivePerOrg, retentionDays: context.retentionDays },
    }),
  );

  app.get(
    '/status/deployments',
    {
      schema: {
        tags: ['status'],
        summary: 'Recent deployments of your organization, newest first',
        security,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.pageSize, default: LIMITS.defaultPageSize })) }),
        response: { 200: Type.Object({ deployments: Type.Array(DeploymentSummary), timestamp: Type.String() }), ...errorResponses(400, 401, 503) },
      },
    },
    async (request) => {
      const records = await adapters.store.listRecent(request.orgId, request.query.limit ?? LIMITS.defaultPageSize);
      const builders = await buildersOf(adapters, request.orgId, records);
      return { deployments: records.map((record) => summaryView(record, {}, builders.get(imageBuilderOf(record)))), timestamp: new Date().toISOString() };
    },
  );

  app.get(
    '/status/queue',
    {
      schema: {
        tags: ['status'],
        summary: 'Job queue: active, scheduled (back-off) and dead-lettered jobs, with dead-letter reasons',
        security,
        response: {
          200: Type.Object({
            queue: Type.Object({ active: Type.Integer(), scheduled: Type.Integer(), deadLettered: Type.Integer() }),
            deadLetterReasons: Type.Record(Type.String(), Type.Integer(), { description: 'Recent dead-lettered jobs by reason.' }),
            timestamp: Type.String(),
          }),
          ...errorResponses(401, 503),
        },
      },
    },
    async () => {
      const [counts, dead] = await Promise.all([adapters.queue.counts(), adapters.queue.listDeadLettered(100)]);
      // Reasons only: message ids name other orgs' deployments.
      const deadLetterReasons: Record<string, number> = {};
      for (const job of dead) deadLetterReasons[job.reason] = (deadLetterReasons[job.reason] ?? 0) + 1;
      return { queue: counts, deadLetterReasons, timestamp: new Date().toISOString() };
    },
  );

  app.post(
    '/status/cleanup',
    {
      bodyLimit: 1024,
      schema: {
        tags: ['status'],
        summary: 'Remove records, logs, sources and secrets of your finished deployments older than the retention',
        description:
          'The deployment serving each app\'s traffic is kept whatever its age, and so is every completed deployment of the same revision ' +
          '(an identical redeploy keeps the revision an earlier deployment started, which runs with that deployment\'s env values). At most 500 deployments per call; `more` says whether to call again. ' +
          `Then stored files (objects) that no remaining deployment uses and that no deployment referenced for ${OBJECT_RETENTION.graceMs / 3_600_000} hours are deleted (\`removed.objects\`, \`removed.objectBytes\`).`,
        security,
        body: Type.Object(
          {
            olderThanDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 3650, description: 'Defaults to RETENTION_DAYS.' })),
            dryRun: Type.Optional(
              Type.Boolean({
                description:
                  'Report what would be removed, remove nothing: `deploymentIds`, `removed.deployments` and `removed.secrets` as a real run would; `removed.artifacts`, `objects` and `objectBytes` are counted only when removed (0 in a dry run).',
              }),
            ),
          },
          { additionalProperties: false, description: 'Optional; an empty body uses the defaults.' },
        ),
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            dryRun: Type.Boolean(),
            cutoff: Type.String(),
            removed: Type.Object({ deployments: Type.Integer(), artifacts: Type.Integer(), secrets: Type.Integer(), objects: Type.Integer(), objectBytes: Type.Integer() }),
            deploymentIds: Type.Array(Type.String()),
            kept: Type.Array(Type.Object({ deploymentId: Type.String(), reason: Type.String() })),
            more: Type.Boolean(),
            timestamp: Type.String(),
          }),
          ...errorResponses(400, 401, 415, 503),
        },
      },
    },
    async (request) => {
      const days = request.body.olderThanDays ?? context.retentionDays;
      const now = context.clock();
      const cutoff = new Date(now.getTime() - days * 86_400_000);
      const report = await cleanupFinished(adapters, request.orgId, cutoff, request.body.dryRun ?? false, now);
      request.log.info({ removed: report.removed, cutoff }, 'cleanup finished');
      return { success: true as const, dryRun: request.body.dryRun ?? false, cutoff: cutoff.toISOString(), ...report, timestamp: new Date().toISOString() };
    },
  );
};
