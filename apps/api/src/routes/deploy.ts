import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { FastifyReply } from 'fastify';
import type { DeploymentRecord } from '@zepid/core';
import { checkDeployRequest, DeployError, DeployRequestSchema, formatLogLine, LIMITS, parseLogLines } from '@zepid/core';
import type { AppContext } from '../context.ts';
import {
  AcceptedBody,
  DeploymentIdParams,
  DeploymentIdQuery,
  DeploymentSummary,
  errorResponses,
  idempotencyHeaders,
  LogLineView,
  PageQuery,
  ProjectParams,
  StatusView,
} from '../schemas.ts';
import { RecentTimesCache } from '../estimates.ts';
import { acceptedView, statusView, summaryView } from '../views.ts';
import { buildersOf, imageBuilderOf } from '../apps.ts';
import { keyedRequest } from '../deployments.ts';
import { noteDerivedQueued } from './queued.ts';

const RedeployAccepted = Type.Object({
  ...AcceptedBody.properties,
  kind: Type.Literal('build'),
  redeployOf: Type.String({ description: 'The deployment whose stored source is built again.' }),
});

const deploySchema = (summary: string, deprecated = false) => ({
  tags: ['deployments'],
  summary,
  deprecated,
  security: [{ bearerAuth: [] }],
  headers: idempotencyHeaders('Same key and body within the retention period: the same deployment answers again. Same key, other body: 409.'),
  body: DeployRequestSchema,
  response: { 202: AcceptedBody, ...errorResponses(400, 401, 403, 409, 413, 415, 429, 503) },
});

/** How long after a deployment ends its log is taken as final (the worker's last flush is within 250 ms). */
const FINAL_LOG_AFTER_MS = 10_000;
const FINAL_LOG_ENTRIES = 1000;
const JSON_TYPE = 'application/json; charset=utf-8';

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
   * whole log written (the worker flushes on finishing), so nothing in its answer changes until its
   * record does: the answer is serialized once and kept, as bytes, keyed by the record's etag (a
   * retry or a cleanup changes it), with the org that owns it. A poll of a kept answer skips the log
   * read, the view, the serializer and the UTF-8 encoding, and, where the store has a write mark
   * (`writeMark`: the embedded database's commit counter, moved by every commit of every process),
   * the store read too while the mark is the one under which the etag was last checked: nothing was
   * written since, by this replica or another. Otherwise it reads the etag (by id *and* the token's
   * org) and sends the kept bytes if it did not change. The kept answer goes only to the org that
   * owns it: another org's poll is checked against the store by its own org, which answers 404.
   * Running deployments read the log tail every time (a stat when it has not grown). BENCHMARKS.md.
   */
  const recent = new RecentTimesCache(adapters.store);
  interface KeptAnswer {
    orgId: string;
    etag: string;
    body: Buffer;
    /** The store's write mark under which `etag` was last found current. */
    mark: string | null;
  }
  const finalAnswers = new Map<string, KeptAnswer>();
  const { store } = adapters;
  // Looked up once: the local store is a proxy (it rings the change signal after writes), and a
  // property read through it cost ~2 % of a kept poll's CPU.
  const writeMark = store.writeMark === undefined ? () => null : store.writeMark.bind(store);
  /** Sends the kept answer at once (no promise) when nothing was committed since its etag was checked; else the answer's promise. */
  const answerStatus = (orgId: string, id: string, reply: FastifyReply) => {
    const known = finalAnswers.get(id);
    // Taken before anything is read: what the reads below find is at least as new as this mark.
    const mark = writeMark();
    if (known !== undefined && known.orgId === orgId && mark !== null && mark === known.mark) {
      void reply.type(JSON_TYPE).send(known.body);
      return undefined;
    }
    return status(orgId, id, reply, known, mark);
  };
  const status = async (orgId: string, id: string, reply: FastifyReply, known: KeptAnswer | undefined, mark: string | null) => {
    if (known !== undefined && known.orgId === orgId) {
      // A store that can read the etag alone spares the kept answer's polls the whole record.
      if (store.etagOf !== undefined) {
        const etag = await store.etagOf({ orgId, deploymentId: id });
        if (etag === null) throw notFound(id);
        if (etag === known.etag) {
          known.mark = mark;
          return reply.type(JSON_TYPE).send(known.body);
        }
      }
    }
    const record = await load(orgId, id);
    if (known !== undefined && known.orgId === orgId && known.etag === record.etag) {
      known.mark = mark;
      return reply.type(JSON_TYPE).send(known.body);
    }
    // canRollback of a deployment running another's image depends on that one's record: read it, and keep no answer.
    const builderId = imageBuilderOf(record);
    const builder = record.status === 'completed' && builderId !== record.id ? await adapters.store.get({ orgId, deploymentId: builderId }) : undefined;
    if (record.status === 'in_progress') {
      // Progress moves within a long step, by the org's recent step times (views.ts).
      const { stepMs } = await recent.forOrg(orgId).catch(() => ({ stepMs: {} }));
      const tail = await adapters.artifacts.readLogTail(id, LIMITS.statusLogLines * 512);
      return statusView(record, parseLogLines(tail).slice(-LIMITS.statusLogLines).map(formatLogLine), stepMs);
    }
    const tail = await adapters.artifacts.readLogTail(id, LIMITS.statusLogLines * 512);
    const lines = parseLogLines(tail).slice(-LIMITS.statusLogLines).map(formatLogLine);
    const view = statusView(record, lines, {}, builder);
    if (builder === undefined && record.finishedAt !== null && Date.now() - Date.parse(record.finishedAt) > FINAL_LOG_AFTER_MS) {
      // The route's own response serializer: the kept bytes are exactly what it would send.
      const serialized = reply.serialize(view);
      const body = typeof serialized === 'string' ? Buffer.from(serialized) : Buffer.from(serialized as Uint8Array);
      if (finalAnswers.size >= FINAL_LOG_ENTRIES) finalAnswers.delete(finalAnswers.keys().next().value ?? '');
      finalAnswers.set(id, { orgId: record.orgId, etag: record.etag, body, mark });
      return reply.type(JSON_TYPE).send(body);
    }
    return view;
  };

  // What deployments of the organization took lately; the configured text until some completed.
  const estimatedDuration = async (orgId: string) => (await recent.forOrg(orgId).catch(() => ({ summary: null }))).summary ?? context.estimatedDuration;
  /** The 202 answer; without a promise when the org's recent times were read within the minute (the usual POST). */
  const accepted = (record: DeploymentRecord, message: string) => {
    const known = recent.settledFor(record.orgId);
    if (known !== undefined) return acceptedView(record, message, known.summary ?? context.estimatedDuration);
    return estimatedDuration(record.orgId).then((estimate) => acceptedView(record, message, estimate));
  };

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
      const deployRequest = checked.request;
      const app = context.apps.ref(deployRequest.orgId, deployRequest.projectId, deployRequest.environment);
      // The body is hashed once, for the replay look-up and the record.
      const idempotency = key === undefined ? null : keyedRequest({ key, body: request.body });
      // A replay answers as before, even once the app is deleting; anything new for a deleting app is a 409.
      const earlier = await service.replayOf(deployRequest.orgId, idempotency);
      let record: DeploymentRecord;
      let replayed = earlier !== null;
      if (earlier !== null) record = earlier;
      else {
        const appRecord = await context.apps.assertNotDeleting(app.orgId, app.appName);
        // Without envVariables the deployment runs with the app's current values (issue 12).
        if (!deployRequest.envVariablesGiven) deployRequest.envVariables = await context.apps.currentEnv(app, appRecord);
        ({ record, replayed } = await service.submit(deployRequest, idempotency, adapters.telemetry.currentTraceparent(), request.caller, { replayChecked: true }));
      }
      // With envVariables, exactly those, and they become the app's current values.
      if (!replayed && deployRequest.envVariablesGiven) await context.apps.adoptDeployedEnv(app, deployRequest.envVariables, deployRequest.buildEnv, record);
      if (!replayed) {
        // One log line per POST: the access line names the deployment queued, and where events are
        // log lines (local telemetry) it is the DeploymentQueued event too (`telemetry`, `event`).
        const { telemetry } = adapters;
        const queued = { deploymentId: record.id, orgId: record.orgId, projectId: record.projectId, environment: record.environment };
        if (telemetry.eventsAreLogLines === true) request.accessFields = { telemetry: true, event: 'DeploymentQueued', ...queued };
        else {
          telemetry.event('DeploymentQueued', queued);
          request.accessFields = queued;
        }
      } else {
        void reply.header('idempotent-replayed', 'true');
      }
      const answer = accepted(record, replayed ? 'Deployment already queued for this Idempotency-Key' : 'Deployment queued successfully');
      return reply.code(202).send(answer instanceof Promise ? await answer : answer);
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
    (request, reply) => answerStatus(request.orgId, request.params.id, reply),
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
    (request, reply) => answerStatus(request.orgId, request.query.id, reply),
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

  app.post(
    '/deploy/:id/redeploy',
    {
      bodyLimit: 1024,
      schema: {
        tags: ['deployments'],
        summary: 'Build and deploy a deployment\'s stored source again, as a new deployment (with the app\'s current env values)',
        description:
          'Creates a deployment of kind `build` (`redeployOf`: `:id`) from the files deployment `:id` was made of, as stored, and its build settings, with the app\'s *current* env values (those a new POST /deploy without envVariables gets). ' +
          'It really builds: the image of an earlier identical build is not reused (package caches are). ' +
          '409 `CONFLICT` while the app is being deleted; 409 `INVALID_STATE` (details.reason `source_removed`) when `:id`\'s source is no longer stored (retention removes it with the deployment\'s artifacts). 429 at the organization\'s active limit.',
        security: [{ bearerAuth: [] }],
        headers: idempotencyHeaders('Same key for the same deployment: the same redeploy answers again. Same key, another request: 409.'),
        params: DeploymentIdParams,
        response: { 202: RedeployAccepted, ...errorResponses(400, 401, 404, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const key = request.headers['idempotency-key'];
      const outcome = await context.apps.redeploy(
        request.orgId,
        request.params.id,
        key === undefined ? null : { key, body: { redeployOf: request.params.id } },
        adapters.telemetry.currentTraceparent(),
        request.caller,
      );
      const { record, replayed } = outcome;
      noteDerivedQueued(reply, adapters.telemetry, outcome, { redeployOf: request.params.id }, 'redeploy queued');
      const message = replayed ? 'Redeploy already queued for this Idempotency-Key' : `Redeploy of ${request.params.id} queued: its source is built again`;
      return reply.code(202).send({ ...(await accepted(record, message)), kind: 'build' as const, redeployOf: record.redeployOf ?? request.params.id });
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
      const builders = await buildersOf(adapters, request.orgId, page.items);
      return {
        projectId: request.params.projectId,
        deployments: page.items.map((record) => summaryView(record, {}, builders.get(imageBuilderOf(record)))),
        nextCursor: page.nextCursor,
      };
    },
  );
};
