import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentEvent, Resolver } from '@zepid/core';
import { nextRetryDelayMs, updateDeployment, WEBHOOK_DISABLE_AFTER_MS, WEBHOOK_RETRY_SCHEDULE_MS } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import type { Harness } from '../apps/api/test/harness.ts';
import { auth, createHarness, staticBody } from '../apps/api/test/harness.ts';
import { WebhookDispatcher } from '../apps/worker/src/webhooks/dispatcher.ts';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver on loopback: answers each request with the next scripted status (then 200). */
class Receiver {
  readonly received: Received[] = [];
  script: number[] = [];
  retryAfter: string | null = null;
  private readonly server: Server;

  constructor() {
    this.server = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        this.received.push({ headers: request.headers, body });
        const status = this.script.shift() ?? 200;
        response.writeHead(status, this.retryAfter === null ? {} : { 'retry-after': this.retryAfter }).end();
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const silent = pino({ level: 'silent' });

describe('webhooks (Standard Webhooks), API + the worker\'s dispatcher on one data dir', () => {
  let h: Harness;
  let receiver: Receiver;
  let url: string;
  let dispatcher: WebhookDispatcher;
  const resolver: Resolver = async (host) => {
    // A host whose DNS answer changed to the metadata address after registration (rebinding).
    if (host === 'rebind.test') return [{ address: '169.254.169.254', family: 4 }];
    throw new Error(`no such host ${host}`);
  };
  /** What the dispatcher sent to telemetry (Application Insights in Azure). */
  const telemetry: { name: string; properties: Record<string, string> }[] = [];
  const dispatcherOn = (adapters: Harness['adapters'], options: { claimMs?: number } = {}) =>
    new WebhookDispatcher({
      telemetry: { event: (name, properties) => telemetry.push({ name, properties: properties }) },
      store: adapters.store,
      webhooks: adapters.webhooks,
      secrets: adapters.secrets,
      changes: adapters.changes,
      logger: silent,
      policy: { allowPrivateNetworks: true, requireHttps: false },
      retryScheduleMs: [20, 20, 20],
      resolve: resolver,
      ...options,
    });

  beforeAll(async () => {
    h = await createHarness();
    receiver = new Receiver();
    url = await receiver.listen();
    dispatcher = dispatcherOn(h.adapters);
  });
  afterEach(async () => {
    // Each test starts with no webhook registered and nothing left to send.
    for (const webhook of await h.adapters.webhooks.listWebhooks('org_456')) await h.adapters.webhooks.deleteWebhook('org_456', webhook.id);
    await dispatcher.runOnce();
    receiver.received.length = 0;
    receiver.script = [];
    receiver.retryAfter = null;
    telemetry.length = 0;
  });
  afterAll(async () => {
    await receiver.close();
    await h.close();
  });

  const register = async (body: Record<string, unknown> = {}) => {
    const response = await h.app.inject({ method: 'POST', url: '/webhooks', headers: auth('org_456'), payload: { url, ...body } });
    expect(response.statusCode, response.body).toBe(201);
    return response.json<{ id: string; secret: string }>();
  };
  const deploy = async (body: Record<string, unknown> = {}) => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody(body) });
    expect(response.statusCode).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  const change = (id: string, ...events: DeploymentEvent[]) => updateDeployment(h.adapters.store, { orgId: 'org_456', deploymentId: id }, () => events);
  /** Runs the dispatcher until it has nothing due (bounded), as its loop would. */
  const drain = async (d: WebhookDispatcher = dispatcher) => {
    for (let pass = 0; pass < 50; pass += 1) {
      const sent = await d.runOnce();
      const due = await h.adapters.webhooks.listDueDeliveries(new Date(Date.now() + 1000), 1);
      if (sent === 0 && due.length === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };
  const verify = (secret: string, message: Received) =>
    new Webhook(secret).verify(message.body, {
      'webhook-id': String(message.headers['webhook-id']),
      'webhook-timestamp': String(message.headers['webhook-timestamp']),
      'webhook-signature': String(message.headers['webhook-signature']),
    });

  it('delivers each status change, signed: the receiver verifies every delivery with Webhook.verify; no env values in payloads', async () => {
    const { id: webhookId, secret } = await register();
    expect(secret).toMatch(/^whsec_/);
    const deploymentId = await deploy({ envVariables: { API_KEY: 'secret-value-123' } });
    await change(deploymentId, { type: 'attempt_started' });
    await change(deploymentId, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'npm run build exited 1', step: 'build' } });
    await drain();
    expect(receiver.received.map((m) => (JSON.parse(m.body) as { type: string }).type)).toEqual(['deployment.queued', 'deployment.started', 'deployment.failed']);
    for (const message of receiver.received) {
      expect(verify(secret, message)).toMatchObject({ data: { deploymentId, projectId: 'site' } });
      expect(message.body).not.toContain('secret-value-123');
      expect(message.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/=]+$/);
    }
    expect(JSON.parse(receiver.received[2]?.body ?? '{}')).toMatchObject({
      type: 'deployment.failed',
      data: { deploymentId, status: 'failed', error: { code: 'BUILD_FAILED', step: 'build' } },
    });
    // A wrong secret does not verify.
    expect(() => verify(`whsec_${Buffer.from('x'.repeat(32)).toString('base64')}`, receiver.received[0] as Received)).toThrow();
    // The secret is nowhere in the API's answers after creation.
    const listed = await h.app.inject({ url: `/webhooks/${webhookId}`, headers: auth('org_456') });
    expect(listed.body).not.toContain(secret.slice(6));
  });

  it('retries a receiver answering 500 twice: the same webhook-id three times, then delivered; deliveries list the attempts', async () => {
    const { id: webhookId, secret } = await register({ events: ['deployment.queued'] });
    receiver.script = [500, 500];
    await deploy();
    await drain();
    expect(receiver.received).toHaveLength(3);
    const ids = receiver.received.map((m) => m.headers['webhook-id']);
    expect(new Set(ids).size).toBe(1);
    for (const message of receiver.received) verify(secret, message);
    const deliveries = (await h.app.inject({ url: `/webhooks/${webhookId}/deliveries`, headers: auth('org_456') })).json<{
      deliveries: { id: string; status: string; attempts: { statusCode: number | null; latencyMs: number }[] }[];
    }>().deliveries;
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]?.id).toBe(ids[0]);
    expect(deliveries[0]?.status).toBe('delivered');
    expect(deliveries[0]?.attempts.map((a) => a.statusCode)).toEqual([500, 500, 200]);
    // Each failed attempt is one WebhookDeliveryFailed event: ids, type, status, class, attempt; never the URL or the payload.
    const deploymentId = (JSON.parse(receiver.received[0]?.body ?? '{}') as { data: { deploymentId: string } }).data.deploymentId;
    expect(telemetry).toEqual([1, 2].map((attempt) => ({
      name: 'WebhookDeliveryFailed',
      properties: {
        deploymentId, orgId: 'org_456', projectId: 'site', environment: 'development',
        webhookId, eventType: 'deployment.queued', statusCode: '500', errorClass: 'HTTP_500', attempt: String(attempt), final: 'false',
      },
    })));
    expect(JSON.stringify(telemetry)).not.toContain(new URL(url).port);

    // A manual retry sends the same delivery again, same id.
    const retry = await h.app.inject({ method: 'POST', url: `/webhooks/${webhookId}/deliveries/${deliveries[0]?.id ?? ''}/retry`, headers: auth('org_456') });
    expect(retry.statusCode).toBe(202);
    await drain();
    expect(receiver.received.at(-1)?.headers['webhook-id']).toBe(ids[0]);
  });

  it('disables the webhook on 410 Gone and says so; no later event is sent to it', async () => {
    const { id: webhookId } = await register();
    receiver.script = [410];
    const deploymentId = await deploy();
    await drain();
    expect(receiver.received).toHaveLength(1);
    const shown = (await h.app.inject({ url: `/webhooks/${webhookId}`, headers: auth('org_456') })).json<{ enabled: boolean; disabledReason: string }>();
    expect(shown).toMatchObject({ enabled: false, disabledReason: 'the endpoint answered 410 Gone' });
    expect(telemetry.map((event) => [event.name, event.properties.errorClass ?? event.properties.reason, event.properties.final])).toEqual([
      ['WebhookDeliveryFailed', 'HTTP_410', 'true'],
      ['WebhookDisabled', 'GONE_410', undefined],
    ]);
    expect(telemetry[1]?.properties).toMatchObject({ webhookId, deploymentId, orgId: 'org_456', environment: 'development' });
    await change(deploymentId, { type: 'attempt_started' });
    await drain();
    expect(receiver.received).toHaveLength(1);
    // Re-enabled by its owner, it receives again.
    const enabled = await h.app.inject({ method: 'PATCH', url: `/webhooks/${webhookId}`, headers: auth('org_456'), payload: { enabled: true } });
    expect(enabled.json()).toMatchObject({ enabled: true, disabledReason: null });
    await h.app.inject({ method: 'POST', url: `/webhooks/${webhookId}/test`, headers: auth('org_456') });
    await drain();
    expect((JSON.parse(receiver.received.at(-1)?.body ?? '{}') as { type: string }).type).toBe('webhook.test');
  });

  it('disables a webhook whose every attempt failed for 3 days, and says so', async () => {
    const { id } = await register();
    const stored = await h.adapters.webhooks.getWebhook('org_456', id);
    if (stored === null) throw new Error('webhook not stored');
    await h.adapters.webhooks.replaceWebhook({ ...stored, failingSince: new Date(Date.now() - WEBHOOK_DISABLE_AFTER_MS - 1000).toISOString() });
    receiver.script = [503];
    await h.app.inject({ method: 'POST', url: `/webhooks/${id}/test`, headers: auth('org_456') });
    await drain();
    expect(receiver.received).toHaveLength(1);
    const shown = (await h.app.inject({ url: `/webhooks/${id}`, headers: auth('org_456') })).json<{ enabled: boolean; disabledReason: string }>();
    expect(shown.enabled).toBe(false);
    expect(shown.disabledReason).toMatch(/^every attempt failed since .* \(3 days\)$/);
    expect(telemetry.map((event) => [event.name, event.properties.errorClass ?? event.properties.reason])).toEqual([
      ['WebhookDeliveryFailed', 'HTTP_503'],
      ['WebhookDisabled', 'FAILING_3_DAYS'],
    ]);
    // A test delivery belongs to no deployment: empty deployment dimensions.
    expect(telemetry[1]?.properties).toMatchObject({ webhookId: id, deploymentId: '', environment: '', orgId: 'org_456' });
  });

  it('sends a webhook only the events of changes written after it was registered; an org without one keeps none (issue 16)', async () => {
    const events = ['deployment.queued', 'deployment.started'];
    const pendingOf = async (id: string) => (await h.adapters.store.listOutbox(100, 'org_456')).filter((entry) => entry.deploymentId === id);
    // No webhook yet: the deployment's queued event is not kept (the local store checks in the write's transaction).
    const before = await deploy();
    expect(await pendingOf(before)).toEqual([]);
    const { id: first } = await register({ events });
    const between = await deploy();
    expect((await pendingOf(between)).map((entry) => entry.event.type)).toEqual(['deployment.queued']);
    // A second webhook registered while that event is still pending (a later millisecond): it does not get it.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const { id: second } = await register({ events });
    await change(between, { type: 'attempt_started' });
    await change(before, { type: 'attempt_started' });
    await drain();
    const sent = async (webhookId: string) =>
      (await h.adapters.webhooks.listDeliveries('org_456', webhookId, 100))
        .map((delivery) => `${(JSON.parse(delivery.payload) as { data: { deploymentId: string } }).data.deploymentId === before ? 'before' : 'between'}:${delivery.eventType}`)
        .sort();
    expect(await sent(first)).toEqual(['before:deployment.started', 'between:deployment.queued', 'between:deployment.started']);
    expect(await sent(second)).toEqual(['before:deployment.started', 'between:deployment.started']);
    expect(receiver.received).toHaveLength(5);
  });

  it('a worker killed after the status write, after the fan-out, or mid-send still delivers once restarted', async () => {
    const { secret } = await register({ events: ['deployment.started'] });
    // 1. Killed right after the status write: the event is in the record's outbox, written with it.
    const first = await deploy();
    const other = createLocalAdapters(h.dataDir, silent);
    await Promise.all([other.store.start(), other.webhooks.start()]);
    await updateDeployment(other.store, { orgId: 'org_456', deploymentId: first }, () => [{ type: 'attempt_started' }]);
    expect(receiver.received).toHaveLength(0);
    // 2. Killed after the fan-out, before sending: the delivery is pending in the store.
    const second = await deploy();
    await change(second, { type: 'attempt_started' });
    await dispatcherOn(h.adapters).fanOut();
    expect(receiver.received).toHaveLength(0);
    // 3. Killed mid-send: the delivery was claimed and never settled; the claim expires.
    const third = await deploy();
    await change(third, { type: 'attempt_started' });
    const dying = dispatcherOn(h.adapters, { claimMs: 100 });
    await dying.fanOut();
    const [claimable] = (await h.adapters.webhooks.listDueDeliveries(new Date(), 50)).filter((d) => (JSON.parse(d.payload) as { data: { deploymentId: string } }).data.deploymentId === third);
    if (claimable === undefined) throw new Error('no delivery for the third deployment');
    await h.adapters.webhooks.replaceDelivery({ ...claimable, lockedUntil: new Date(Date.now() + 100).toISOString() });
    await other.store.close();

    // The restarted worker: a new dispatcher.
    await new Promise((resolve) => setTimeout(resolve, 150));
    await drain(dispatcherOn(h.adapters));
    const delivered = receiver.received.map((m) => (verify(secret, m) as { data: { deploymentId: string } }).data.deploymentId);
    expect(delivered.sort()).toEqual([first, second, third].sort());
  });

  it('a fan-out reads only events not yet fanned out: deployments still in flight are not read again, nor written (issue 16)', async () => {
    const { id: webhookId } = await register({ events: ['deployment.started', 'deployment.failed'] });
    await dispatcher.fanOut();
    const ids: string[] = [];
    for (let i = 0; i < 30; i += 1) ids.push(await deploy());
    for (const id of ids) await change(id, { type: 'attempt_started' });
    // Every call the dispatcher makes through the store port, and how many events and records came back.
    const seen = { calls: [] as string[], items: 0 };
    const counting = new Proxy(h.adapters.store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== 'function') return value;
        return async (...args: unknown[]) => {
          seen.calls.push(String(property));
          const result: unknown = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          if (Array.isArray(result)) seen.items += result.length;
          return result;
        };
      },
    });
    const counted = dispatcherOn({ ...h.adapters, store: counting });
    // 30 deployments in flight: their 60 events (queued, started) are read once and fanned out.
    expect(await counted.fanOut()).toBe(60);
    expect(new Set(seen.calls)).toEqual(new Set(['listOutbox', 'removeOutbox']));
    expect(await h.adapters.webhooks.listDeliveries('org_456', webhookId, 100)).toHaveLength(30);
    // Still in flight, more writes without events: the next passes read nothing, and no record.
    seen.calls.length = 0;
    seen.items = 0;
    expect(await counted.fanOut()).toBe(0);
    for (const id of ids) await change(id, { type: 'step_started', step: 'validate' });
    expect(await counted.fanOut()).toBe(0);
    expect(seen).toEqual({ calls: ['listOutbox', 'listOutbox'], items: 0 });
    // One more status change: that one event is read, nothing else.
    const [first] = ids;
    if (first === undefined) throw new Error('no deployment');
    await change(first, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'test', step: 'build' } });
    expect(await counted.fanOut()).toBe(1);
    expect(seen.items).toBe(1);
    // The dispatcher never wrote a deployment record (it cannot race the workflow's conditional writes).
    expect(seen.calls.filter((call) => call !== 'listOutbox' && call !== 'removeOutbox')).toEqual([]);
    expect(await h.adapters.webhooks.listDeliveries('org_456', webhookId, 100)).toHaveLength(31);
  });

  it('refuses metadata and link-local addresses, at registration and at every attempt (after DNS resolution)', async () => {
    for (const target of ['http://169.254.169.254/latest/meta-data', 'http://[fd00:ec2::254]/', 'http://[::ffff:169.254.169.254]/', 'ftp://example.com/']) {
      const response = await h.app.inject({ method: 'POST', url: '/webhooks', headers: auth('org_456'), payload: { url: target } });
      expect(response.statusCode, target).toBe(400);
      expect(response.json()).toMatchObject({ success: false, error: 'VALIDATION_ERROR', details: [{ field: 'url' }] });
    }
    // A host that resolved elsewhere at registration and now resolves to the metadata address.
    const { id } = await register();
    const stored = await h.adapters.webhooks.getWebhook('org_456', id);
    if (stored === null) throw new Error('webhook not stored');
    await h.adapters.webhooks.replaceWebhook({ ...stored, url: `http://rebind.test:${new URL(url).port}/hook` });
    await h.app.inject({ method: 'POST', url: `/webhooks/${id}/test`, headers: auth('org_456') });
    await dispatcher.runOnce();
    expect(receiver.received).toHaveLength(0);
    const [delivery] = (await h.app.inject({ url: `/webhooks/${id}/deliveries`, headers: auth('org_456') })).json<{
      deliveries: { attempts: { statusCode: number | null; error: string | null }[] }[];
    }>().deliveries;
    expect(delivery?.attempts[0]).toMatchObject({ statusCode: null, error: expect.stringContaining('169.254.169.254 is a link-local, metadata or reserved address') as unknown });
  });

  it('refuses loopback and plain http under the Azure rules', async () => {
    const azure = await createHarness({ webhookPolicy: { allowPrivateNetworks: false, requireHttps: true } });
    try {
      const http = await azure.app.inject({ method: 'POST', url: '/webhooks', headers: auth('org_456'), payload: { url } });
      expect(http.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'url', message: 'must be https in Azure mode' }] });
      const loopback = await azure.app.inject({ method: 'POST', url: '/webhooks', headers: auth('org_456'), payload: { url: 'https://127.0.0.1/hook' } });
      expect(loopback.json()).toMatchObject({ error: 'VALIDATION_ERROR', message: expect.stringContaining('loopback or private') as unknown });
    } finally {
      await azure.close();
    }
  });

  it('rotates the secret: both secrets sign for 24 h; CRUD answers 404 for another org', async () => {
    const { id, secret: before } = await register();
    const rotated = (await h.app.inject({ method: 'POST', url: `/webhooks/${id}/rotate-secret`, headers: auth('org_456') })).json<{ secret: string; previousSecretExpiresAt: string }>();
    expect(rotated.secret).not.toBe(before);
    expect(Date.parse(rotated.previousSecretExpiresAt) - Date.now()).toBeGreaterThan(23 * 3600_000);
    await h.app.inject({ method: 'POST', url: `/webhooks/${id}/test`, headers: auth('org_456') });
    await drain();
    const [message] = receiver.received;
    if (message === undefined) throw new Error('nothing received');
    expect(String(message.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(verify(rotated.secret, message)).toMatchObject({ type: 'webhook.test' });
    expect(verify(before, message)).toMatchObject({ type: 'webhook.test' });

    for (const [method, path] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', '/test'], ['POST', '/rotate-secret'], ['GET', '/deliveries']] as const) {
      const response = await h.app.inject({ method, url: `/webhooks/${id}${path}`, headers: auth('org_other'), ...(method === 'PATCH' ? { payload: { enabled: false } } : {}) });
      expect(response.statusCode, `${method} ${path}`).toBe(404);
    }
    expect((await h.app.inject({ method: 'DELETE', url: `/webhooks/${id}`, headers: auth('org_456') })).statusCode).toBe(204);
    expect((await h.app.inject({ url: `/webhooks/${id}`, headers: auth('org_456') })).statusCode).toBe(404);
  });
});

describe('webhook retry schedule', () => {
  it('follows 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h with ±10 % jitter, then gives up; a longer Retry-After wins', () => {
    expect(WEBHOOK_RETRY_SCHEDULE_MS).toEqual([5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
    WEBHOOK_RETRY_SCHEDULE_MS.forEach((base, index) => {
      expect(nextRetryDelayMs(index + 1, null, () => 0)).toBe(Math.round(base * 0.9));
      expect(nextRetryDelayMs(index + 1, null, () => 1)).toBe(Math.round(base * 1.1));
    });
    expect(nextRetryDelayMs(8, null)).toBeNull();
    expect(nextRetryDelayMs(1, 120_000, () => 0.5)).toBe(120_000);
    expect(nextRetryDelayMs(2, 1000, () => 0.5)).toBe(300_000);
  });
});
