import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { WebhookAddressPolicy, WebhookDelivery, WebhookEndpoint, WebhookEventType } from '@zepid/core';
import {
  APP_EVENT_TYPES,
  DEPLOYMENT_EVENT_TYPES,
  DeployError,
  deliveryIdFor,
  newPrefixedId,
  newWebhookSecret,
  parseWebhookUrl,
  resolveWebhookTarget,
  WEBHOOK_EVENT_TYPES,
  webhookSecretKey,
} from '@zepid/core';
import type { AppContext } from '../context.ts';
import { errorResponses } from '../schemas.ts';

const ROTATION_OVERLAP_MS = 86_400_000;
const MAX_WEBHOOKS_PER_ORG = 20;

/** What a webhook may subscribe to: every event but `webhook.test` (sent to the webhook tested, whatever it wants). */
const SUBSCRIBABLE_EVENT_TYPES = [...DEPLOYMENT_EVENT_TYPES, ...APP_EVENT_TYPES] as const;
const EventType = Type.Union(SUBSCRIBABLE_EVENT_TYPES.map((type) => Type.Literal(type)));
const WebhookParams = Type.Object({ id: Type.String({ pattern: '^wh_[a-z2-7]{26}$', description: 'Webhook id, `wh_` + 26 characters.' }) });
const DeliveryParams = Type.Object({
  id: Type.String({ pattern: '^wh_[a-z2-7]{26}$' }),
  deliveryId: Type.String({ pattern: '^msg_[0-9a-f]{32}$', description: 'Delivery id: the `webhook-id` header of its requests.' }),
});

const WebhookView = Type.Object({
  id: Type.String(),
  url: Type.String(),
  events: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'Event types sent; null: every deployment event.' }),
  projectId: Type.Union([Type.String(), Type.Null()], { description: 'Only this project\'s deployments; null: all.' }),
  description: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean(),
  disabledReason: Type.Union([Type.String(), Type.Null()], { description: 'Why the service disabled it (410 Gone, failing for 3 days).' }),
  failingSince: Type.Union([Type.String(), Type.Null()]),
  previousSecretExpiresAt: Type.Union([Type.String(), Type.Null()], { description: 'Until then the previous secret signs too (after a rotation).' }),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
const DeliveryView = Type.Object({
  id: Type.String({ description: 'The `webhook-id` header, the same on every attempt.' }),
  webhookId: Type.String(),
  eventId: Type.String(),
  eventType: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
  attempts: Type.Array(
    Type.Object({
      at: Type.String(),
      statusCode: Type.Union([Type.Integer(), Type.Null()]),
      latencyMs: Type.Integer(),
      error: Type.Union([Type.String(), Type.Null()]),
    }),
  ),
  nextAttemptAt: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

/** The status a deployment event's data carries (the status the change led to); other events: any string. */
const STATUS_OF_EVENT: Partial<Record<WebhookEventType, string>> = {
  'deployment.queued': 'queued',
  'deployment.started': 'in_progress',
  'deployment.succeeded': 'completed',
  'deployment.failed': 'failed',
  'deployment.cancelled': 'cancelled',
  'deployment.superseded': 'superseded',
  'app.rolled_back': 'completed',
  'app.deleted': 'deleted',
  'webhook.test': 'test',
};

const eventData = (type: WebhookEventType) => {
  const status = STATUS_OF_EVENT[type];
  return Type.Object(
    {
      deploymentId: Type.Union([Type.String(), Type.Null()], { description: 'Null in webhook.test, app.deleted and an app.env_changed that started no deployment (status `stored`).' }),
      projectId: Type.Union([Type.String(), Type.Null()]),
      environment: Type.Union([Type.String(), Type.Null()]),
      appName: Type.Union([Type.String(), Type.Null()]),
      status: status === undefined ? Type.String() : Type.Literal(status),
      url: Type.Union([Type.String(), Type.Null()]),
      error: Type.Union([
        Type.Object({ code: Type.String(), message: Type.String(), step: Type.Union([Type.String(), Type.Null()]) }, { additionalProperties: false }),
        Type.Null(),
      ]),
    },
    // No other field, ever: the payload is thin (no env values, no secrets).
    { additionalProperties: false },
  );
};

/** One JSON Schema per event type (the body a receiver gets), for the OpenAPI document's components. */
export function webhookEventSchemas() {
  return WEBHOOK_EVENT_TYPES.map((type) =>
    Type.Object(
      { type: Type.Literal(type), timestamp: Type.String({ format: 'date-time' }), data: eventData(type) },
      {
        additionalProperties: false,
        $id: `WebhookEvent-${type}`,
        description:
          `Body of a \`${type}\` webhook request, signed per Standard Webhooks (headers webhook-id, webhook-timestamp, webhook-signature). ` +
          'Thin: ids, status, url and error; never env values or secrets.',
      },
    ),
  );
}

function view(webhook: WebhookEndpoint) {
  const { etag: _etag, orgId: _orgId, ...fields } = webhook;
  return fields;
}

function deliveryView(delivery: WebhookDelivery) {
  const { etag: _etag, orgId: _orgId, payload: _payload, lockedUntil: _locked, ...fields } = delivery;
  return fields;
}

/** Webhook endpoints of the token's org: register, change, rotate, test, and see deliveries. */
export const webhookRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters } = context;
  const policy: WebhookAddressPolicy = context.webhookPolicy ?? { allowPrivateNetworks: context.mode === 'local', requireHttps: context.mode === 'azure' };
  const security = [{ bearerAuth: [] }];
  const tags = ['webhooks'];
  const now = () => context.clock();

  const load = async (orgId: string, id: string) => {
    const webhook = await adapters.webhooks.getWebhook(orgId, id);
    if (webhook === null) throw new DeployError('NOT_FOUND', `Webhook ${id} not found`);
    return webhook;
  };
  // The same rules the dispatcher applies at every attempt; refusing here tells the user at once.
  const checkUrl = (url: string) => resolveWebhookTarget(parseWebhookUrl(url, policy), policy);
  const update = async (orgId: string, id: string, change: (current: WebhookEndpoint) => WebhookEndpoint) => {
    for (let attempt = 0; ; attempt += 1) {
      const current = await load(orgId, id);
      try {
        return await adapters.webhooks.replaceWebhook({ ...change(current), updatedAt: now().toISOString() });
      } catch (error) {
        if (!(error instanceof DeployError) || error.code !== 'CONCURRENT_UPDATE' || attempt >= 5) throw error;
      }
    }
  };

  app.post(
    '/webhooks',
    {
      bodyLimit: 8192,
      schema: {
        tags,
        summary: 'Register a webhook: 201 with its secret (shown once)',
        description:
          'Deliveries are signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`); verify them ' +
          "with the secret, e.g. the `standardwebhooks` package's `Webhook.verify`. Events: deployment.queued, .started, .succeeded, .failed, " +
          '.cancelled, .superseded; app.rolled_back, app.env_changed, app.deleted; and webhook.test. A webhook receives the events of changes ' +
          'written after it was registered (none timestamped before its createdAt). In Azure mode the URL must be https; link-local and metadata addresses are refused, and loopback and ' +
          'private ones unless WEBHOOK_ALLOW_PRIVATE_NETWORKS.',
        security,
        body: Type.Object(
          {
            url: Type.String({ minLength: 1, maxLength: 2048 }),
            events: Type.Optional(Type.Array(EventType, { minItems: 1, maxItems: SUBSCRIBABLE_EVENT_TYPES.length, uniqueItems: true })),
            projectId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
            description: Type.Optional(Type.String({ maxLength: 256 })),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ ...WebhookView.properties, secret: Type.String({ description: '`whsec_…`: shown only here and by rotate-secret.' }) }), ...errorResponses(400, 401, 409, 413, 415, 429, 503) },
      },
    },
    async (request, reply) => {
      await checkUrl(request.body.url);
      const existing = await adapters.webhooks.listWebhooks(request.orgId);
      if (existing.length >= MAX_WEBHOOKS_PER_ORG) throw new DeployError('CONFLICT', `An organization may have at most ${MAX_WEBHOOKS_PER_ORG} webhooks`);
      const at = now().toISOString();
      const id = newPrefixedId('wh_');
      const secret = newWebhookSecret();
      await adapters.secrets.put(webhookSecretKey(id), { CURRENT: secret });
      const webhook = await adapters.webhooks.createWebhook({
        id,
        orgId: request.orgId,
        url: request.body.url,
        events: (request.body.events as WebhookEventType[] | undefined) ?? null,
        projectId: request.body.projectId ?? null,
        description: request.body.description ?? null,
        enabled: true,
        disabledReason: null,
        failingSince: null,
        previousSecretExpiresAt: null,
        createdAt: at,
        updatedAt: at,
        etag: '',
      });
      return reply.code(201).send({ ...view(webhook), secret });
    },
  );

  app.get(
    '/webhooks',
    { schema: { tags, summary: "Your organization's webhooks", security, response: { 200: Type.Object({ webhooks: Type.Array(WebhookView) }), ...errorResponses(401, 503) } } },
    async (request) => ({ webhooks: (await adapters.webhooks.listWebhooks(request.orgId)).map(view) }),
  );

  app.get(
    '/webhooks/:id',
    { schema: { tags, summary: 'One webhook (never its secret)', security, params: WebhookParams, response: { 200: WebhookView, ...errorResponses(400, 401, 404, 503) } } },
    async (request) => view(await load(request.orgId, request.params.id)),
  );

  app.patch(
    '/webhooks/:id',
    {
      bodyLimit: 8192,
      schema: {
        tags,
        summary: 'Change a webhook; `enabled: true` re-enables one the service disabled',
        security,
        params: WebhookParams,
        body: Type.Object(
          {
            url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
            events: Type.Optional(Type.Union([Type.Array(EventType, { minItems: 1, uniqueItems: true }), Type.Null()])),
            projectId: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()])),
            description: Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Null()])),
            enabled: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 200: WebhookView, ...errorResponses(400, 401, 404, 415, 503) },
      },
    },
    async (request) => {
      const body = request.body;
      if (body.url !== undefined) await checkUrl(body.url);
      const saved = await update(request.orgId, request.params.id, (current) => ({
        ...current,
        ...(body.url === undefined ? {} : { url: body.url }),
        ...(body.events === undefined ? {} : { events: body.events }),
        ...(body.projectId === undefined ? {} : { projectId: body.projectId }),
        ...(body.description === undefined ? {} : { description: body.description }),
        ...(body.enabled === undefined ? {} : { enabled: body.enabled, disabledReason: null, failingSince: body.enabled ? null : current.failingSince }),
      }));
      return view(saved);
    },
  );

  app.delete(
    '/webhooks/:id',
    { schema: { tags, summary: 'Delete a webhook, its deliveries and its secret', security, params: WebhookParams, response: { 204: Type.Null(), ...errorResponses(400, 401, 404, 503) } } },
    async (request, reply) => {
      await load(request.orgId, request.params.id);
      await adapters.webhooks.deleteWebhook(request.orgId, request.params.id);
      await adapters.secrets.delete(webhookSecretKey(request.params.id));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/webhooks/:id/rotate-secret',
    {
      bodyLimit: 1024,
      schema: {
        tags,
        summary: 'A new secret (shown once); the previous one keeps signing for 24 h',
        description: 'Until `previousSecretExpiresAt` every delivery carries two signatures (`v1,… v1,…`), one per secret, so receivers can switch without losing any.',
        security,
        params: WebhookParams,
        response: { 200: Type.Object({ id: Type.String(), secret: Type.String(), previousSecretExpiresAt: Type.String() }), ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request) => {
      const webhook = await load(request.orgId, request.params.id);
      const key = webhookSecretKey(webhook.id);
      const old = await adapters.secrets.get(key);
      const secret = newWebhookSecret();
      await adapters.secrets.put(key, { CURRENT: secret, ...(old.CURRENT === undefined ? {} : { PREVIOUS: old.CURRENT }) });
      const expires = new Date(now().getTime() + ROTATION_OVERLAP_MS).toISOString();
      await update(request.orgId, webhook.id, (current) => ({ ...current, previousSecretExpiresAt: expires }));
      return { id: webhook.id, secret, previousSecretExpiresAt: expires };
    },
  );

  app.post(
    '/webhooks/:id/test',
    {
      bodyLimit: 1024,
      schema: {
        tags,
        summary: 'Send a webhook.test event now (202 with the delivery id; see its deliveries for the outcome)',
        security,
        params: WebhookParams,
        response: { 202: Type.Object({ success: Type.Literal(true), deliveryId: Type.String() }), ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const webhook = await load(request.orgId, request.params.id);
      if (!webhook.enabled) throw new DeployError('INVALID_STATE', `Webhook ${webhook.id} is disabled; enable it first (PATCH enabled: true)`);
      const at = now().toISOString();
      const eventId = newPrefixedId('evt_');
      const id = deliveryIdFor(eventId, webhook.id);
      const payload = JSON.stringify({
        type: 'webhook.test',
        timestamp: at,
        data: { deploymentId: null, projectId: webhook.projectId, environment: null, appName: null, status: 'test', url: null, error: null },
      });
      await adapters.webhooks.createDelivery({
        id,
        orgId: request.orgId,
        webhookId: webhook.id,
        eventId,
        eventType: 'webhook.test',
        payload,
        status: 'pending',
        attempts: [],
        nextAttemptAt: at,
        lockedUntil: null,
        createdAt: at,
        updatedAt: at,
        etag: '',
      });
      adapters.changes.ring();
      return reply.code(202).send({ success: true as const, deliveryId: id });
    },
  );

  app.get(
    '/webhooks/:id/deliveries',
    {
      schema: {
        tags,
        summary: 'Recent deliveries of a webhook, newest first: attempts with status code, latency and error',
        security,
        params: WebhookParams,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })) }),
        response: { 200: Type.Object({ deliveries: Type.Array(DeliveryView) }), ...errorResponses(400, 401, 404, 503) },
      },
    },
    async (request) => {
      await load(request.orgId, request.params.id);
      return { deliveries: (await adapters.webhooks.listDeliveries(request.orgId, request.params.id, request.query.limit ?? 20)).map(deliveryView) };
    },
  );

  app.post(
    '/webhooks/:id/deliveries/:deliveryId/retry',
    {
      bodyLimit: 1024,
      schema: {
        tags,
        summary: 'Send a delivery again now (same webhook-id and body)',
        security,
        params: DeliveryParams,
        response: { 202: Type.Object({ success: Type.Literal(true), deliveryId: Type.String() }), ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const webhook = await load(request.orgId, request.params.id);
      if (!webhook.enabled) throw new DeployError('INVALID_STATE', `Webhook ${webhook.id} is disabled; enable it first (PATCH enabled: true)`);
      for (let attempt = 0; ; attempt += 1) {
        const delivery = await adapters.webhooks.getDelivery(request.orgId, request.params.deliveryId);
        if (delivery === null || delivery.webhookId !== webhook.id) throw new DeployError('NOT_FOUND', `Delivery ${request.params.deliveryId} not found`);
        if (delivery.status === 'pending' && delivery.lockedUntil !== null && Date.parse(delivery.lockedUntil) > now().getTime()) {
          throw new DeployError('INVALID_STATE', 'The delivery is being sent right now');
        }
        try {
          await adapters.webhooks.replaceDelivery({ ...delivery, status: 'pending', nextAttemptAt: now().toISOString(), lockedUntil: null, updatedAt: now().toISOString() });
          break;
        } catch (error) {
          if (!(error instanceof DeployError) || error.code !== 'CONCURRENT_UPDATE' || attempt >= 5) throw error;
        }
      }
      adapters.changes.ring();
      return reply.code(202).send({ success: true as const, deliveryId: request.params.deliveryId });
    },
  );
};
