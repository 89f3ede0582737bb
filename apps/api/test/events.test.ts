import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentEvent, DeploymentRecord, StepName } from '@zepid/core';
import { updateDeployment } from '@zepid/core';
import { SseClient } from '@zepid/testkit';
import type { SseEvent } from '@zepid/testkit';
import { pino } from 'pino';
import { createLocalAdapters } from '@zepid/local';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody, TOKENS } from './harness.ts';

const STREAMS_PER_TOKEN = 3;

describe('event streams (SSE)', () => {
  let h: Harness;
  let base: string;
  beforeAll(async () => {
    h = await createHarness({ streamsPerToken: STREAMS_PER_TOKEN });
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await h.close();
  });

  const deploy = async (org: keyof typeof TOKENS = 'org_456') => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth(org), payload: staticBody({ organizationId: org }) });
    expect(response.statusCode).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  /** What the worker does: a state-machine change, written conditionally. */
  const change = (id: string, ...events: DeploymentEvent[]): Promise<DeploymentRecord> =>
    updateDeployment(h.adapters.store, { orgId: 'org_456', deploymentId: id }, () => events);
  const log = (id: string, step: StepName | null, ...messages: string[]) =>
    h.adapters.artifacts.appendLog(id, messages.map((message) => `${JSON.stringify({ timestamp: new Date().toISOString(), step, level: 'info', message })}\n`).join(''));
  const open = (path: string, headers: Record<string, string> = {}) => SseClient.open(`${base}${path}`, { authorization: `Bearer ${TOKENS.org_456}`, ...headers });
  const messages = (events: SseEvent[]) => events.filter((e) => e.event === 'log').map((e) => (JSON.parse(e.data) as { message: string }).message);

  /** A deployment in its build step with three lines logged. */
  const midBuild = async () => {
    const id = await deploy();
    await change(id, { type: 'attempt_started' }, { type: 'step_started', step: 'validate' });
    await log(id, 'validate', 'one', 'two', 'three');
    return id;
  };

  it('a subscriber joining mid-build gets the status and the log so far, then each new line once, then end', async () => {
    const id = await midBuild();
    const client = await open(`/deploy/${id}/events`);
    expect(client.status).toBe(200);
    expect(client.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(client.headers['cache-control']).toContain('no-cache');
    expect(client.headers['x-accel-buffering']).toBe('no');

    const first = await client.next();
    expect(first?.event).toBe('status');
    expect(JSON.parse(first?.data ?? '{}')).toMatchObject({ deploymentId: id, status: 'in_progress', currentStep: 'validate' });
    expect(JSON.parse(first?.data ?? '{}')).not.toHaveProperty('logs');
    const soFar = [await client.next(), await client.next(), await client.next()];
    expect(soFar.map((e) => [e?.event, e?.id])).toEqual([['log', '1'], ['log', '2'], ['log', '3']]);
    expect(JSON.parse(soFar[2]?.data ?? '{}')).toMatchObject({ seq: 3, step: 'validate', level: 'info', message: 'three' });

    await log(id, 'validate', 'four');
    expect(await client.next()).toMatchObject({ event: 'log', id: '4' });
    await log(id, 'validate', 'five');
    expect(await client.next()).toMatchObject({ event: 'log', id: '5' });
    await change(id, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'npm run build exited 1', step: 'validate' } });
    // The worker's last lines land just after the terminal status: they still come before `end`.
    await log(id, null, 'six');
    const rest = await client.until('end');
    expect(rest.at(-1)?.event).toBe('end');
    expect(JSON.parse(rest.at(-1)?.data ?? '{}')).toEqual({ deploymentId: id, status: 'failed', reason: 'terminal' });
    expect(rest.filter((e) => e.event === 'status').map((e) => (JSON.parse(e.data) as { status: string }).status)).toEqual(['failed']);
    expect(messages(rest)).toEqual(['six']);
    await client.closed();
  });

  it('resumes after Last-Event-ID (or ?after=) with nothing lost or repeated', async () => {
    const id = await midBuild();
    await log(id, 'validate', 'four', 'five');
    await change(id, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'x', step: 'validate' } });
    const resumed = await open(`/deploy/${id}/events`, { 'last-event-id': '3' });
    const events = await resumed.until('end');
    expect(events.map((e) => e.event)).toEqual(['status', 'log', 'log', 'end']);
    expect(events.filter((e) => e.event === 'log').map((e) => e.id)).toEqual(['4', '5']);
    expect(messages(events)).toEqual(['four', 'five']);
    const after = await open(`/deploy/${id}/events?after=4`);
    expect(messages(await after.until('end'))).toEqual(['five']);
    const all = await open(`/deploy/${id}/events`);
    expect(messages(await all.until('end'))).toEqual(['one', 'two', 'three', 'four', 'five']);
  });

  it('refuses a bad Last-Event-ID, another org\'s deployment, and more open streams than the cap', async () => {
    const id = await midBuild();
    const bad = await open(`/deploy/${id}/events`, { 'last-event-id': 'abc' });
    await bad.closed();
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({ success: false, error: 'VALIDATION_ERROR', details: [{ field: 'last-event-id' }] });

    const foreign = await SseClient.open(`${base}/deploy/${id}/events`, { authorization: `Bearer ${TOKENS.org_other}` });
    await foreign.closed();
    expect(foreign.status).toBe(404);
    expect(JSON.parse(foreign.body)).toMatchObject({ success: false, error: 'NOT_FOUND' });

    const held = await Promise.all(Array.from({ length: STREAMS_PER_TOKEN }, () => open(`/deploy/${id}/events`)));
    expect(held.map((c) => c.status)).toEqual(held.map(() => 200));
    const refused = await open(`/deploy/${id}/events`);
    await refused.closed();
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body)).toMatchObject({ success: false, error: 'RATE_LIMITED' });
    // Another token is not affected; a closed stream frees its place.
    const other = await SseClient.open(`${base}/events`, { authorization: `Bearer ${TOKENS.org_other}` });
    expect(other.status).toBe(200);
    other.close();
    held[0]?.close();
    const again = await waitForStatus(() => open(`/deploy/${id}/events`), 200);
    again.close();
    for (const client of held) client.close();
  });

  it('ends the stream when the deployment is no longer visible (removed)', async () => {
    const id = await midBuild();
    const client = await open(`/deploy/${id}/events`);
    await client.until('log');
    await h.adapters.store.delete({ orgId: 'org_456', deploymentId: id });
    const rest = await client.until('end');
    expect(JSON.parse(rest.at(-1)?.data ?? '{}')).toEqual({ deploymentId: id, status: null, reason: 'gone' });
    await client.closed();
  });

  it('GET /events streams the org\'s deployment changes as summaries, each followed by its app, and no other org\'s', async () => {
    const client = await open('/events');
    expect(client.status).toBe(200);
    // The snapshot of the newest deployments comes first; skip it.
    const snapshotDone = await deploy();
    for (;;) {
      const event = await client.next();
      if (event === null) throw new Error('stream ended');
      if ((JSON.parse(event.data) as { deploymentId: string }).deploymentId === snapshotDone) break;
    }
    await deploy('org_other');
    const id = await deploy();
    // (the app event of the snapshot's last change may come first)
    let queued = await client.next();
    while (queued?.event === 'app') queued = await client.next();
    expect(queued?.event).toBe('deployment');
    expect(JSON.parse(queued?.data ?? '{}')).toMatchObject({ deploymentId: id, status: 'queued', projectId: 'site' });
    // Each change is followed by its app as GET /apps lists it (issue 12).
    const app = await client.next();
    expect(app?.event).toBe('app');
    expect(JSON.parse(app?.data ?? '{}')).toMatchObject({ projectId: 'site', environment: 'development', status: 'deploying' });
    await change(id, { type: 'attempt_started' });
    expect(JSON.parse((await client.next())?.data ?? '{}')).toMatchObject({ deploymentId: id, status: 'in_progress' });
    client.close();
  });
});

describe('event streams: the replica\'s cap and the shared heartbeat', () => {
  let h: Harness;
  let base: string;
  beforeAll(async () => {
    h = await createHarness({ streamsPerToken: 10, maxStreams: 2, sseHeartbeatMs: 300 });
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 503 SERVER_BUSY with Retry-After beyond SSE_MAX_STREAMS, whatever the token; idle streams get comment lines', async () => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody() });
    const id = response.json<{ deploymentId: string }>().deploymentId;
    const open = (org: keyof typeof TOKENS) => SseClient.open(`${base}/deploy/${id}/events`, { authorization: `Bearer ${TOKENS[org]}` });
    const held = [await open('org_456'), await SseClient.open(`${base}/events`, { authorization: `Bearer ${TOKENS.org_other}` })];
    expect(held.map((c) => c.status)).toEqual([200, 200]);
    const refused = await open('org_456');
    await refused.closed();
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('5');
    expect(JSON.parse(refused.body)).toMatchObject({ success: false, error: 'SERVER_BUSY', message: expect.stringContaining('SSE_MAX_STREAMS') as unknown });

    // Idle (nothing changes): each stream gets a comment line every heartbeat interval, from the one shared timer.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const client of held) expect(client.comments).toBeGreaterThanOrEqual(2);
    held[0]?.close();
    const again = await waitForStatus(() => open('org_456'), 200);
    again.close();
    held[1]?.close();
  });
});

/**
 * GET /events is woken by the change signal, not by a timer: the watches' resync is pinned at 10 min
 * here, so an event that arrives at all came through the signal. The write is made through a second
 * set of local adapters on the same data dir (its own doorbell, as another process's would be), so
 * the API hears of it only through the change file it watches.
 */
describe('GET /events is event-driven', () => {
  let h: Harness;
  let base: string;
  let other: ReturnType<typeof createLocalAdapters>;
  beforeAll(async () => {
    h = await createHarness({ streamResyncMs: 600_000 });
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
    other = createLocalAdapters(h.dataDir, pino({ level: 'silent' }));
    await other.store.start();
  });
  afterAll(async () => {
    await other.store.close();
    await other.changes.close();
    await h.close();
  });

  it('a change written elsewhere reaches every /events stream of the org through the change file, long before any resync', async () => {
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody() });
    const id = response.json<{ deploymentId: string }>().deploymentId;
    const clients = await Promise.all([0, 1].map(() => SseClient.open(`${base}/events`, { authorization: `Bearer ${TOKENS.org_456}` })));
    for (const client of clients) {
      // The snapshot: the one deployment, queued.
      expect(JSON.parse((await client.next())?.data ?? '{}')).toMatchObject({ deploymentId: id, status: 'queued' });
    }
    await updateDeployment(other.store, { orgId: 'org_456', deploymentId: id }, () => [{ type: 'attempt_started' }]);
    for (const client of clients) {
      // Given up on after 5 s (the old timer's interval), against a resync of 10 min: only the doorbell can bring it.
      const event = await client.next(5000);
      expect(event?.event).toBe('deployment');
      expect(JSON.parse(event?.data ?? '{}')).toMatchObject({ deploymentId: id, status: 'in_progress' });
      expect((await client.next())?.event).toBe('app');
    }
    for (const client of clients) client.close();
  });
});

async function waitForStatus(openOne: () => Promise<SseClient>, status: number): Promise<SseClient> {
  for (let i = 0; i < 50; i += 1) {
    const client = await openOne();
    if (client.status === status) return client;
    client.close();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`never answered ${status}`);
}
