import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { FastifyReply } from 'fastify';
import type { AppRef, DeploymentRecord, Environment, EnvScope } from '@zepid/core';
import { DeployError, ENV_NAME_PATTERN, ENVIRONMENTS, LIMITS } from '@zepid/core';
import type { ApplyMode, EnvChangeAnswer } from '../apps.ts';
import type { AppContext } from '../context.ts';
import { acceptedView } from '../views.ts';
import { noteDerivedQueued } from './queued.ts';
import {
  AcceptedBody,
  AppsPage,
  ApplyField,
  DeploymentIdParams,
  EnvChangeView,
  EnvironmentField,
  EnvListView,
  EnvNameParams,
  EnvScopeField,
  EnvValue,
  errorResponses,
  idempotencyHeaders,
  PageQuery,
  ProjectParams,
} from '../schemas.ts';

const security = [{ bearerAuth: [] }];

const RollbackAccepted = Type.Object({
  ...AcceptedBody.properties,
  kind: Type.Literal('rollback'),
  rollbackOf: Type.String({ description: 'The deployment whose image goes back live.' }),
});

const EnvName = Type.String({ pattern: ENV_NAME_PATTERN, maxLength: LIMITS.envNameLength });
const EnvSetMap = Type.Record(EnvName, Type.Union([EnvValue, Type.Null()]), {
  maxProperties: LIMITS.envVariables,
  additionalProperties: false,
  description: `Name → new value (null removes the variable); at most ${LIMITS.envVariables} names, and an app has at most ${LIMITS.envVariables} variables.`,
});
const ScopeMap = Type.Record(EnvName, EnvScopeField, { maxProperties: LIMITS.envVariables, additionalProperties: false, description: 'Name → scope, for names this change sets.' });
const AppName = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9-]*$', description: 'The appName (GET /apps).' });

const envChangeResponses = { 200: EnvChangeView, 202: EnvChangeView, ...errorResponses(400, 401, 404, 409, 429, 503) };
const envChangeNote =
  ' Answers 202 with the `deploymentId` that applies the change (a `config` deployment restarts the live image without building; a `build` one when a build-scoped variable changed), or 200 when none started (`apply: "none"`, nothing changed, or no live deployment). Changes of one app are made one at a time across API replicas: 409 `CONFLICT` when another has held the app\'s env for over 15 s (retry).';

/** Apps (issue 12): list, rollback, env variables (and their seed 004 forms), deletion, the active count. */
export const appRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters, apps, service } = context;

  const answerChange = (reply: FastifyReply, answer: EnvChangeAnswer) => {
    if (answer.deploymentId !== null) {
      adapters.telemetry.event('DeploymentQueued', { deploymentId: answer.deploymentId, orgId: reply.request.orgId, projectId: answer.projectId, environment: answer.environment });
    }
    reply.request.log.info({ appName: answer.appName, deploymentId: answer.deploymentId, kind: answer.kind }, 'env variables changed');
    return reply.code(answer.deploymentId === null ? 200 : 202).send({ success: true as const, ...answer });
  };
  const change = async (
    reply: FastifyReply,
    ref: AppRef,
    set: Record<string, string | null>,
    options: { replace?: boolean; scopes?: Record<string, EnvScope>; apply?: ApplyMode },
  ) => {
    // Only an app that exists (it has deployments, or a record): another org's project is a 404 like its deployments.
    await apps.find(ref.orgId, ref.appName);
    return answerChange(reply, await apps.changeEnv(ref, { set, replace: options.replace ?? false, scopes: options.scopes ?? {} }, options.apply ?? 'restart', adapters.telemetry.currentTraceparent(), reply.request.caller));
  };
  const refOf = (orgId: string, projectId: string, environment: Environment | undefined) => apps.ref(orgId, projectId, environment ?? 'development');

  app.get(
    '/apps',
    {
      schema: {
        tags: ['apps'],
        summary: 'Your organization\'s apps with their URL, status and live deployment, by name, paged with a cursor',
        security,
        querystring: PageQuery,
        response: { 200: AppsPage, ...errorResponses(400, 401, 503) },
      },
    },
    async (request) => apps.list(request.orgId, { limit: request.query.limit ?? LIMITS.defaultPageSize, cursor: request.query.cursor ?? null }),
  );

  app.post(
    '/deploy/:id/rollback',
    {
      bodyLimit: 1024,
      schema: {
        tags: ['deployments'],
        summary: 'Put a completed deployment\'s image back live for its app, without building',
        description:
          'Creates a deployment of kind `rollback` that runs the image of deployment `:id` (locally the kept image; Azure: its revision reactivated when it still exists, else a new revision of the same digest). ' +
          'Env values: the app\'s current ones (`env: "current"`, default) or those `:id` ran with (`"snapshot"`). 409 when `:id` did not complete, its image was removed by retention (`canRollback` in the lists says so), or the app is being deleted.',
        security,
        headers: idempotencyHeaders('Same key and body: the same rollback answers again. Same key, other body (or another request): 409.'),
        params: DeploymentIdParams,
        body: Type.Object({ env: Type.Optional(Type.Enum(['current', 'snapshot'] as const, { default: 'current' })) }, { additionalProperties: false }),
        response: { 202: RollbackAccepted, ...errorResponses(400, 401, 404, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const env = request.body?.env ?? 'current';
      const key = request.headers['idempotency-key'];
      const outcome = await apps.rollback(
        request.orgId,
        request.params.id,
        env,
        key === undefined ? null : { key, body: { rollbackOf: request.params.id, env } },
        adapters.telemetry.currentTraceparent(),
        request.caller,
      );
      const { record, replayed } = outcome;
      noteDerivedQueued(reply, adapters.telemetry, outcome, { rollbackOf: request.params.id }, 'rollback queued');
      return reply.code(202).send(accepted(record, replayed ? 'Rollback already queued for this Idempotency-Key' : `Rollback to ${request.params.id} queued; no build`));
    },
  );

  const accepted = (record: DeploymentRecord, message: string) => ({
    ...acceptedView(record, message, context.estimatedDuration),
    kind: 'rollback' as const,
    rollbackOf: record.rollbackOf ?? '',
  });

  // ---- env variables of an app -----------------------------------------------------------------

  app.get(
    '/projects/:projectId/env',
    {
      schema: {
        tags: ['apps'],
        summary: 'Names of an app\'s env variables (never values), when each was set, and whether the live deployment runs with it',
        security,
        params: ProjectParams,
        querystring: Type.Object({ environment: Type.Optional(EnvironmentField) }),
        response: { 200: EnvListView, ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request) => {
      const ref = refOf(request.orgId, request.params.projectId, request.query.environment);
      // An app with no variables answers an empty list; one that does not exist (or is another org's) 404.
      await apps.find(request.orgId, ref.appName);
      const listed = await apps.getEnv(ref);
      return { projectId: ref.projectId, appName: ref.appName, environment: ref.environment, ...listed };
    },
  );

  app.put(
    '/projects/:projectId/env/:name',
    {
      schema: {
        tags: ['apps'],
        summary: 'Set one env variable of an app.' + envChangeNote,
        security,
        params: EnvNameParams,
        body: Type.Object(
          { value: EnvValue, environment: Type.Optional(EnvironmentField), scope: Type.Optional(EnvScopeField), apply: Type.Optional(ApplyField) },
          { additionalProperties: false },
        ),
        response: envChangeResponses,
      },
    },
    async (request, reply) => {
      const { name, projectId } = request.params;
      const ref = refOf(request.orgId, projectId, request.body.environment);
      return change(reply, ref, { [name]: request.body.value }, { scopes: request.body.scope === undefined ? {} : { [name]: request.body.scope }, apply: request.body.apply });
    },
  );

  app.patch(
    '/projects/:projectId/env',
    {
      schema: {
        tags: ['apps'],
        summary: 'Set and remove several env variables of an app at once (`replace: true`: exactly these).' + envChangeNote,
        security,
        params: ProjectParams,
        body: Type.Object(
          {
            environment: Type.Optional(EnvironmentField),
            set: EnvSetMap,
            replace: Type.Optional(Type.Boolean({ default: false, description: 'true: the app\'s variables become exactly the non-null ones of `set`.' })),
            scope: Type.Optional(ScopeMap),
            apply: Type.Optional(ApplyField),
          },
          { additionalProperties: false },
        ),
        response: envChangeResponses,
      },
    },
    async (request, reply) => {
      const ref = refOf(request.orgId, request.params.projectId, request.body.environment);
      return change(reply, ref, request.body.set, { replace: request.body.replace, scopes: request.body.scope, apply: request.body.apply });
    },
  );

  app.delete(
    '/projects/:projectId/env/:name',
    {
      schema: {
        tags: ['apps'],
        summary: 'Remove one env variable of an app (no error when it is not set).' + envChangeNote,
        security,
        params: EnvNameParams,
        querystring: Type.Object({ environment: Type.Optional(EnvironmentField), apply: Type.Optional(ApplyField) }),
        response: envChangeResponses,
      },
    },
    async (request, reply) => {
      const ref = refOf(request.orgId, request.params.projectId, request.query.environment);
      return change(reply, ref, { [request.params.name]: null }, { apply: request.query.apply });
    },
  );

  // ---- seed 004 forms (`uuid` = appName), applied with a restart ----------------------------------

  app.post(
    '/env',
    {
      schema: {
        tags: ['v1 env'],
        summary: 'Set one env variable of the app `uuid` and restart it (seed 004 form of PUT /projects/:projectId/env/:name)',
        security,
        body: Type.Object({ uuid: AppName, key: EnvName, value: EnvValue }, { additionalProperties: false }),
        response: envChangeResponses,
      },
    },
    async (request, reply) => change(reply, await apps.find(request.orgId, request.body.uuid), { [request.body.key]: request.body.value }, {}),
  );

  app.put(
    '/env/bulk',
    {
      schema: {
        tags: ['v1 env'],
        summary: 'Set several env variables of the app `uuid` (others are kept) and restart it (seed 004 form of PATCH /projects/:projectId/env)',
        security,
        body: Type.Object(
          { uuid: AppName, envs: Type.Array(Type.Object({ key: EnvName, value: EnvValue }, { additionalProperties: false }), { minItems: 1, maxItems: LIMITS.envVariables }) },
          { additionalProperties: false },
        ),
        response: envChangeResponses,
      },
    },
    async (request, reply) => {
      const set: Record<string, string> = {};
      for (const [index, { key, value }] of request.body.envs.entries()) {
        if (key in set) {
          throw new DeployError('VALIDATION_ERROR', 'Invalid body: envs', { details: [{ field: `envs/${index}/key`, message: `${key} appears more than once` }] });
        }
        set[key] = value;
      }
      return change(reply, await apps.find(request.orgId, request.body.uuid), set, {});
    },
  );

  app.delete(
    '/env/:uuid/:key',
    {
      schema: {
        tags: ['v1 env'],
        summary: 'Remove one env variable of the app `uuid` and restart it (seed 004 form of DELETE /projects/:projectId/env/:name)',
        security,
        params: Type.Object({ uuid: AppName, key: EnvName }),
        response: envChangeResponses,
      },
    },
    async (request, reply) => change(reply, await apps.find(request.orgId, request.params.uuid), { [request.params.key]: null }, {}),
  );

  app.get(
    '/droplets/count',
    {
      schema: {
        tags: ['v1 env'],
        summary: 'Your organization\'s active (queued or running) deployments and its limit (seed 004; the limit is MAX_ACTIVE_DEPLOYMENTS_PER_ORG)',
        security,
        response: { 200: Type.Object({ count: Type.Integer(), limit: Type.Integer() }), ...errorResponses(401, 503) },
      },
    },
    async (request) => ({ count: await adapters.store.countActive(request.orgId), limit: service.maxActivePerOrg }),
  );

  // ---- deletion ----------------------------------------------------------------------------------

  app.delete(
    '/projects/:projectId',
    {
      schema: {
        tags: ['apps'],
        summary: 'Delete a project\'s app (one environment, or all when omitted): its revisions or processes, images, env values, source, logs and records',
        description:
          'Marks the apps `deleting` at once (new deployments of them answer 409), cancels their running deployments, and queues a resumable job that removes everything; ' +
          'after it the URL stops answering, GET /apps no longer lists the app and its deployments answer 404. A second DELETE answers 202 again.',
        security,
        params: ProjectParams,
        querystring: Type.Object({ environment: Type.Optional(Type.Enum(ENVIRONMENTS, { description: 'Only this environment\'s app; every environment when absent.' })) }),
        response: {
          202: Type.Object({
            projectId: Type.String(),
            environment: Type.Union([Type.Enum(ENVIRONMENTS), Type.Null()]),
            apps: Type.Array(Type.String(), { description: 'The appNames being deleted.' }),
            status: Type.Literal('deleting'),
          }),
          ...errorResponses(400, 401, 404, 503),
        },
      },
    },
    async (request, reply) => {
      const environment = request.query.environment ?? null;
      const names = await apps.deleteProject(request.orgId, request.params.projectId, environment, adapters.telemetry.currentTraceparent());
      return reply.code(202).send({ projectId: request.params.projectId, environment, apps: names, status: 'deleting' as const });
    },
  );
};
