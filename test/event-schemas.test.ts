import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Ajv2020Module from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppJobMessage, DeploymentEvent } from '@zepid/core';
import { STEPS, updateDeployment, WEBHOOK_EVENT_TYPES } from '@zepid/core';
import { SseClient } from '@zepid/testkit';
import type { SseEvent } from '@zepid/testkit';
import type { Harness } from '../apps/api/test/harness.ts';
import { auth, createHarness, staticBody, TOKENS } from '../apps/api/test/harness.ts';
import { AppDeletion } from '../apps/worker/src/app-deletion.ts';
import { WebhookDispatcher } from '../apps/worker/src/webhooks/dispatcher.ts';
import { FakeBuilder, FakeRuntime } from '../apps/worker/test/fakes.ts';

const Ajv2020 = Ajv2020Module.default;
const addFormats = addFormatsModule.default;

/**
 * The OpenAPI document's component schemas against what the service really sends: every SSE event's
 * `data` (status, log, end of GET /deploy/:id/events; deployment of GET /events) and every webhook
 * body a receiver gets, one of each event type, produced by the API, the state machine and the
 * worker's dispatcher. Validated with Ajv's JSON Schema 2020-12 (the dialect of OpenAPI 3.1).
 */
describe('OpenAPI component schemas match the events and webhook payloads sent', () => {
  let h: Harness;
  let base: string;
  let receiver: Server;
  let hookUrl: string;
  const bodies: string[] = [];
  let validate: (name: string, value: unknown) => string[];

  beforeAll(async () => {
    h = await createHarness();
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
    const spec = (await h.app.inject('/openapi.json')).json<{ components: { schemas: Record<string, unknown> } }>();
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema({ $id: 'openapi.json', components: spec.components });
    validate = (name, value) => {
      const check = ajv.getSchema(`openapi.json#/components/schemas/${name}`);
      if (check === undefined) return [`no component schema ${name}`];
      return check(value) ? [] : (check.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''} ${JSON.stringify(e.params)}`);
    };
    receiver = createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        bodies.push(body);
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  });
  afterAll(async () => {
    await new Promise((resolve) => receiver.close(resolve));
    await h.close();
  });

  const deploy = async () => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ envVariables: { API_KEY: 'secret-value-123' } }) });
    expect(response.statusCode).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  const change = (id: string, ...events: DeploymentEvent[]) => updateDeployment(h.adapters.store, { orgId: 'org_456', deploymentId: id }, () => events);
  const expectValid = (name: string, data: string) => expect(validate(name, JSON.parse(data)), `${name}: ${data.slice(0, 300)}`).toEqual([]);

  it('every SSE event validates against its component (SseStatusEvent, SseLogEvent, SseEndEvent, SseDeploymentEvent, SseAppEvent)', async () => {
    const org = await SseClient.open(`${base}/events`, { authorization: `Bearer ${TOKENS.org_456}` });
    const id = await deploy();
    const stream = await SseClient.open(`${base}/deploy/${id}/events`, { authorization: `Bearer ${TOKENS.org_456}` });
    await change(id, { type: 'attempt_started' }, { type: 'step_started', step: 'validate' });
    await h.adapters.artifacts.appendLog(id, `${JSON.stringify({ timestamp: new Date().toISOString(), step: 'validate', level: 'warn', message: 'a line' })}\n`);
    await change(id, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'npm run build exited 1', step: 'validate' } });
    const events: SseEvent[] = await stream.until('end', 10_000);
    expect(new Set(events.map((e) => e.event))).toEqual(new Set(['status', 'log', 'end']));
    for (const event of events) {
      const name = { status: 'SseStatusEvent', log: 'SseLogEvent', end: 'SseEndEvent' }[event.event];
      if (name === undefined) throw new Error(`unexpected event ${event.event}`);
      expectValid(name, event.data);
    }
    // A stream of a deployment that goes away ends with reason gone.
    const other = await deploy();
    const gone = await SseClient.open(`${base}/deploy/${other}/events`, { authorization: `Bearer ${TOKENS.org_456}` });
    await gone.until('status');
    await h.adapters.store.delete({ orgId: 'org_456', deploymentId: other });
    const end = (await gone.until('end', 10_000)).at(-1);
    expect(JSON.parse(end?.data ?? '{}')).toMatchObject({ reason: 'gone' });
    expectValid('SseEndEvent', end?.data ?? '');

    const orgEvents: SseEvent[] = [];
    while (!orgEvents.some((e) => (JSON.parse(e.data) as { status: string; deploymentId: string }).deploymentId === id && (JSON.parse(e.data) as { status: string }).status === 'failed')) {
      const next = await org.next(10_000);
      if (next === null) throw new Error('org stream ended');
      orgEvents.push(next);
    }
    org.close();
    // `deployment` events, and `app` events (the app after each change: issue 12).
    expect(orgEvents.some((event) => event.event === 'deployment')).toBe(true);
    for (const event of orgEvents) {
      const name = { deployment: 'SseDeploymentEvent', app: 'SseAppEvent' }[event.event];
      if (name === undefined) throw new Error(`unexpected event ${event.event} on /events`);
      expectValid(name, event.data);
    }
    // The schemas are not vacuous: a status event with a field too many, or a log event without seq, fails.
    expect(validate('SseStatusEvent', { ...(JSON.parse(events[0]?.data ?? '{}') as object), logs: [] })).not.toEqual([]);
    expect(validate('SseLogEvent', { timestamp: 't', step: null, level: 'info', message: 'm' })).not.toEqual([]);
  });

  it('every webhook body, one of each event type, validates against WebhookEvent-<type>', async () => {
    const registered = await h.app.inject({ method: 'POST', url: '/webhooks', headers: auth('org_456'), payload: { url: hookUrl } });
    expect(registered.statusCode).toBe(201);
    const { id: webhookId } = registered.json<{ id: string }>();
    const [succeeded, failed, cancelled, superseded] = [await deploy(), await deploy(), await deploy(), await deploy()];
    await change(succeeded, { type: 'attempt_started' });
    await change(succeeded, ...STEPS.flatMap((step): DeploymentEvent[] => [{ type: 'step_started', step }, { type: 'step_completed', step, output: {} }]));
    await change(succeeded, { type: 'completed', result: { image: 'img@sha256:1', revision: 'r1', url: 'http://site.localhost:3011' } });
    await change(failed, { type: 'attempt_started' }, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'exit 1', step: 'build' } });
    await change(cancelled, { type: 'cancel_requested' }); // a queued deployment is cancelled at once
    await change(superseded, { type: 'attempt_started' }, { type: 'superseded', error: { code: 'SUPERSEDED', message: `${succeeded} is live`, step: 'deploy' } });
    expect((await h.app.inject({ method: 'POST', url: `/webhooks/${webhookId}/test`, headers: auth('org_456') })).statusCode).toBe(202);
    // App events (issue 12): a rollback of the succeeded deployment that completes (app.rolled_back, with
    // its deployment.succeeded, in the same write), an env change stored without a restart
    // (app.env_changed, sent by the API), and the delete job's app.deleted.
    const rollback = await h.app.inject({ method: 'POST', url: `/deploy/${succeeded}/rollback`, headers: auth('org_456') });
    expect(rollback.statusCode, rollback.body).toBe(202);
    const rolledBack = rollback.json<{ deploymentId: string }>().deploymentId;
    await change(rolledBack, { type: 'attempt_started' });
    await change(rolledBack, ...STEPS.flatMap((step): DeploymentEvent[] => [{ type: 'step_started', step }, { type: 'step_completed', step, output: {} }]));
    await change(rolledBack, { type: 'completed', result: { image: 'img@sha256:1', revision: 'r2', url: 'http://site.localhost:3011' } });
    const projectId = (await h.adapters.store.get({ orgId: 'org_456', deploymentId: succeeded }))?.projectId ?? '';
    const env = await h.app.inject({ method: 'PUT', url: `/projects/${projectId}/env/OTHER`, headers: auth('org_456'), payload: { value: 'secret-value-123', apply: 'none' } });
    expect(env.statusCode, env.body).toBe(200);
    const deleted = await h.app.inject({ method: 'DELETE', url: `/projects/${projectId}`, headers: auth('org_456') });
    expect(deleted.statusCode, deleted.body).toBe(202);
    // The worker's delete job, with stand-ins for the builder and runtime (nothing was built or started here).
    let job = await h.adapters.queue.receive({ waitMs: 0 });
    while (job !== null && (job.body as { kind?: string }).kind !== 'delete-app') {
      await h.adapters.queue.complete(job);
      job = await h.adapters.queue.receive({ waitMs: 0 });
    }
    if (job === null) throw new Error('no delete-app job on the queue');
    const deletion = new AppDeletion({ adapters: { ...h.adapters, builder: new FakeBuilder(), runtime: new FakeRuntime() }, logger: pino({ level: 'silent' }), clock: () => new Date(), objectUploadWindowMs: 10 });
    expect(await deletion.run(job.body as AppJobMessage, job.messageId, new AbortController().signal)).toEqual({ action: 'complete' });

    const dispatcher = new WebhookDispatcher({
      store: h.adapters.store,
      webhooks: h.adapters.webhooks,
      secrets: h.adapters.secrets,
      changes: h.adapters.changes,
      logger: pino({ level: 'silent' }),
      policy: { allowPrivateNetworks: true, requireHttps: false },
    });
    for (let pass = 0; pass < 20 && new Set(bodies.map((b) => (JSON.parse(b) as { type: string }).type)).size < WEBHOOK_EVENT_TYPES.length; pass += 1) {
      await dispatcher.runOnce();
    }
    const types = new Set<string>();
    for (const body of bodies) {
      const { type } = JSON.parse(body) as { type: string };
      types.add(type);
      expectValid(`WebhookEvent-${type}`, body);
      expect(body).not.toContain('secret-value-123');
    }
    expect([...types].sort()).toEqual([...WEBHOOK_EVENT_TYPES].sort());
    // A payload with a field no schema allows (an env value, say) does not validate; nor does a wrong status.
    const sample = JSON.parse(bodies[0] ?? '{}') as { type: string; data: object };
    expect(validate(`WebhookEvent-${sample.type}`, { ...sample, data: { ...sample.data, env: { API_KEY: 'x' } } })).not.toEqual([]);
    expect(validate('WebhookEvent-deployment.succeeded', { ...sample, type: 'deployment.succeeded', data: { ...sample.data, status: 'failed' } })).not.toEqual([]);
  });
});
