import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import SerializerSelector from '@fastify/fast-json-stringify-compiler';
import AjvModule from 'ajv';
import type { ValidateFunction } from 'ajv';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Fastify, { LogController } from 'fastify';
import type { DeploymentCreator } from '@zepid/core';
import { LIMITS, SERVICE_NAME, SERVICE_VERSION, sha256Hex } from '@zepid/core';
import { AppService } from './apps.ts';
import type { AppContext } from './context.ts';
import { answerClientError, errorBody, registerErrorHandling } from './errors.ts';
import { rateLimitHook } from './rate-limit.ts';
import { appRoutes } from './routes/apps.ts';
import { dashboardRoutes } from './routes/dashboard.ts';
import { docsRoutes } from './routes/docs.ts';
import { deployRoutes } from './routes/deploy.ts';
import { eventRoutes, sseEventSchemas } from './routes/events.ts';
import { healthRoutes } from './routes/health.ts';
import { rootRoutes } from './routes/root.ts';
import { statusRoutes } from './routes/status.ts';
import { webhookEventSchemas, webhookRoutes } from './routes/webhooks.ts';
import { ErrorBody } from './schemas.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The org of the request's token; set by the auth hook on every protected route. */
    orgId: string;
    /** The request's token as deployments record who started them (id and name, never the token); null when unknown. */
    caller: DeploymentCreator | null;
    /** The token's SHA-256 (hex) from the auth hook, what the rate limiter counts by; null before it ran. */
    tokenKey: string | null;
    /**
     * Fields the route adds to the request's access line (null: none). POST /deploy puts the
     * deployment it queued there (id, org, project, environment; locally its DeploymentQueued event
     * too), so a POST writes one line instead of three. Ids only, never values or tokens.
     */
    accessFields: Record<string, string | boolean> | null;
  }
}

const Ajv = AjvModule.default;

/**
 * Fastify's own response serializers (fast-json-stringify: a response schema also drops fields it
 * does not name), each compiled on its route's first answer instead of at start: compiling all of
 * them up front kept ~13 MB of generated code in every API process, most of it for routes a
 * replica may never answer (BENCHMARKS.md, issue 13's memory target).
 */
function lazySerializers(eager: boolean): SerializerSelector.SerializerFactory {
  const build = SerializerSelector();
  return (externalSchemas, options) => {
    const compile = build(externalSchemas, options);
    return (route) => {
      let serialize: SerializerSelector.Serializer | null = eager ? compile(route) : null;
      return (doc: unknown) => {
        serialize ??= compile(route);
        return serialize(doc);
      };
    };
  };
}

/**
 * The API as a Fastify instance built from its context; server.ts only adds a port and signals.
 * Tests build it with injected adapters and call `app.inject`.
 */
export async function buildApp(input: Omit<AppContext, 'apps'> & { apps?: AppService }, logger: FastifyBaseLogger): Promise<FastifyInstance> {
  const context: AppContext = { ...input, apps: input.apps ?? new AppService(input.adapters, input.service, { clock: input.clock, logger }) };
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: LIMITS.bodyBytes,
    requestIdHeader: 'x-request-id',
    // One access-log line per request (below) instead of Fastify's two.
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
    return503OnClosing: true,
    schemaController: { compilersFactory: { buildSerializer: lazySerializers(context.compileSchemasAtStart === true) } },
    trustProxy: true,
    // Errors raised before routing (a URL that does not decode, a malformed header) get the same shape as the rest.
    // …and so do those Node's HTTP parser raises before Fastify sees a request (431, 400, 408).
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, _request, reply) => {
      void (reply as FastifyReply).code(400).send(errorBody('BAD_REQUEST', error.code === 'FST_ERR_BAD_URL' ? 'The URL is not valid (bad percent-encoding)' : error.message));
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Bodies are validated exactly (a number is not a string); query strings and params are text by
  // nature, so there they are converted. Every violation is reported, not just the first.
  const strict = new Ajv({ strict: false, allErrors: true, coerceTypes: false, useDefaults: true, removeAdditional: false });
  const coercing = new Ajv({ strict: false, allErrors: true, coerceTypes: true, useDefaults: true, removeAdditional: false });
  // Compiled on a route's first request, not at start (~3 MB less per API process): a schema Ajv
  // refuses would fail that route's requests (500) instead of the start, so a test builds the app
  // with `compileSchemasAtStart` (apps/api/test/schemas-compile.test.ts) to compile them all.
  app.setValidatorCompiler(({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? strict : coercing;
    let validate: ValidateFunction | null = context.compileSchemasAtStart === true ? ajv.compile(schema) : null;
    const decimal = httpPart === 'body' ? null : decimalIntegers(schema);
    const lazy = (data: unknown): boolean => {
      const notDecimal = decimal?.(data) ?? null;
      if (notDecimal !== null) {
        lazy.errors = notDecimal;
        return false;
      }
      validate ??= ajv.compile(schema);
      const valid = validate(data);
      lazy.errors = validate.errors;
      return valid;
    };
    lazy.errors = null as ValidateFunction['errors'];
    return lazy;
  });

  // JSON only: text/plain is not a way to send a deployment. An empty JSON body reads as no body, so
  // `curl -X POST -H 'content-type: application/json' …/cancel` works.
  app.removeAllContentTypeParsers();
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '' || (typeof body === 'string' && body.trim() === '')) {
      done(null, undefined);
      return;
    }
    void parseJson(request, body as string, done);
  });

  // A POST without a body validates as `{}`: optional-only bodies (cleanup) need none, and required
  // fields are reported by name instead of "body must be object". Only routes with a body schema get
  // the hook (added as each route is declared): the rest, status polls above all, pay nothing for it.
  const emptyBody = (request: FastifyRequest, _reply: FastifyReply, done: () => void) => {
    if (request.body === undefined) request.body = {};
    done();
  };
  app.addHook('onRoute', (route) => {
    if (route.schema?.body === undefined) return;
    route.preValidation = [...[route.preValidation ?? []].flat(), emptyBody] as typeof route.preValidation;
  });

  registerErrorHandling(app);
  app.addHook('onResponse', (request, reply, done) => {
    const line: Record<string, unknown> = { method: request.method, url: request.url, statusCode: reply.statusCode, responseTimeMs: Math.round(reply.elapsedTime * 10) / 10 };
    if (request.accessFields !== null) Object.assign(line, request.accessFields);
    request.log.info(line, 'request completed');
    done();
  });
  app.addSchema(ErrorBody);
  for (const schema of [...webhookEventSchemas(), ...sseEventSchemas()]) app.addSchema(schema);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: `${SERVICE_NAME} API`,
        version: SERVICE_VERSION,
        description:
          'Deploys a project\'s files to Azure Container Apps (or, in local mode, to local processes). ' +
          'Authenticate with `Authorization: Bearer <token>`; a token sees only its organization\'s deployments. ' +
          `Limits: body ${LIMITS.bodyBytes} bytes, ${LIMITS.files} files, ${LIMITS.fileBytes} bytes per file, ${LIMITS.sourceBytes} bytes in all.`,
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
      tags: [
        { name: 'deployments', description: 'Queue, follow, cancel, retry and roll back deployments' },
        { name: 'apps', description: 'Apps (a project in one environment, what has a URL): list, env variables, deletion' },
        { name: 'v1 env', description: 'Env variable endpoints of the earlier DigitalOcean design (seed 004); `uuid` is the appName' },
        { name: 'webhooks', description: 'Signed notifications of deployment events (Standard Webhooks)' },
        { name: 'status', description: 'Statistics, queue metrics, retention' },
        { name: 'health', description: 'Probes' },
        { name: 'service', description: 'Service information' },
      ],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });

  const endpoints: string[] = [];
  app.addHook('onRoute', (route) => {
    const hidden = route.schema?.hide === true;
    if (hidden || route.url.startsWith('/docs') || route.method === 'HEAD') return;
    for (const method of [route.method].flat()) endpoints.push(`${method} ${route.url}`);
  });
  app.decorateRequest('orgId', '');
  app.decorateRequest('caller', null);
  app.decorateRequest('tokenKey', null);
  app.decorateRequest('accessFields', null);

  await app.register(rootRoutes, { context, endpoints: () => [...endpoints, 'GET /docs', 'GET /openapi.json'] });
  await app.register(healthRoutes, { context });
  await app.register(dashboardRoutes);
  await app.register(docsRoutes);

  // Everything below needs a token of the org whose deployments it touches.
  await app.register(async (scope) => {
    // A callback, not an async function: no promise per request (what the hook does is synchronous).
    scope.addHook('onRequest', (request, reply, done) => {
      const header = request.headers.authorization;
      const match = typeof header === 'string' ? /^Bearer ([\x21-\x7e]{1,512})$/.exec(header) : null;
      const identity = match?.[1] === undefined ? null : context.tokens.identify(match[1]);
      if (identity === null) {
        void reply.header('www-authenticate', 'Bearer');
        // Answered here: the chain stops (done is not called).
        void reply.code(401).send(errorBody('UNAUTHORIZED', header === undefined ? 'Authorization: Bearer <token> is required' : 'The token is not valid'));
        return;
      }
      request.orgId = identity.orgId;
      request.caller = { tokenId: identity.tokenId, tokenName: identity.tokenName };
      request.tokenKey = identity.key ?? null;
      done();
    });
    // Per token: its hash (the auth hook's, which runs first), so the limiter's memory never holds a token.
    scope.addHook('onRequest', rateLimitHook(context.rateLimitPerMinute, (request) => request.tokenKey ?? sha256Hex(request.headers.authorization ?? request.ip)));
    await scope.register(deployRoutes, { context });
    await scope.register(statusRoutes, { context });
    await scope.register(eventRoutes, { context });
    await scope.register(webhookRoutes, { context });
    await scope.register(appRoutes, { context });
  });

  return app;
}

/**
 * A query or path integer is written in decimal digits. Ajv's coercion converts a string with
 * `Number()`, which also takes `1.`, `1.0`, `1e0`, `0x1` and `+1`, so `?limit=1.` was answered as
 * `?limit=1` (found by apps/api/test/fuzz.test.ts). Returns a check of the schema's integer
 * properties that gives Ajv-shaped errors for any other form, or null when the schema has none.
 */
function decimalIntegers(schema: unknown): ((data: unknown) => NonNullable<ValidateFunction['errors']> | null) | null {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> } | null)?.properties;
  if (properties === undefined) return null;
  const names = Object.keys(properties).filter((name) => properties[name]?.type === 'integer');
  if (names.length === 0) return null;
  return (data) => {
    if (data === null || typeof data !== 'object') return null;
    const errors = names
      .filter((name) => {
        const value = (data as Record<string, unknown>)[name];
        return typeof value === 'string' && !DECIMAL_INTEGER.test(value);
      })
      .map((name) => ({ instancePath: `/${name}`, schemaPath: `#/properties/${name}/type`, keyword: 'type', params: { type: 'integer' }, message: 'must be integer' }));
    return errors.length === 0 ? null : errors;
  };
}

const DECIMAL_INTEGER = /^\s*-?\d+\s*$/;
