import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { newDeploymentId } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody, TOKENS } from './harness.ts';

/** A pino logger whose lines land in `lines`, parsed. */
function capture(lines: Record<string, unknown>[]) {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return pino({ level: 'info' }, sink);
}

describe('access log', () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it('writes one line per request, labelled with the caller\'s x-request-id, and no Fastify request lines', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    h = await createHarness({ logger: pino({ level: 'info' }, sink) });
    const url = `/deploy/${newDeploymentId()}/status`;
    const response = await h.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${TOKENS.org_456}`, 'x-request-id': 'trace-42' } });
    expect(response.statusCode).toBe(404);
    const ours = lines.filter((line) => line.requestId === 'trace-42');
    expect(ours.map((line) => line.msg)).toEqual(['request completed']);
    expect(ours[0]).toMatchObject({ method: 'GET', url, statusCode: 404 });
    expect(lines.some((line) => line.msg === 'incoming request' || line.reqId !== undefined)).toBe(false);
  });

  it('writes one line for a POST /deploy that queues a deployment: the access line names it and, locally, is its DeploymentQueued event', async () => {
    const lines: Record<string, unknown>[] = [];
    h = await createHarness({ logger: capture(lines) });
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'x-request-id': 'post-1' }, payload: staticBody({ projectId: 'logged' }) });
    expect(response.statusCode).toBe(202);
    const { deploymentId } = response.json<{ deploymentId: string }>();
    // Local telemetry writes events as log lines (README, Telemetry): this one rides on the access line.
    expect(h.adapters.telemetry.eventsAreLogLines).toBe(true);
    const ours = lines.filter((line) => line.requestId === 'post-1');
    expect(ours).toHaveLength(1);
    expect(ours[0]).toMatchObject({
      msg: 'request completed',
      method: 'POST',
      url: '/deploy',
      statusCode: 202,
      telemetry: true,
      event: 'DeploymentQueued',
      deploymentId,
      orgId: 'org_456',
      projectId: 'logged',
      environment: 'development',
    });
    // No second line for the deployment anywhere (no `deployment queued`, no separate event line).
    expect(lines.filter((line) => line.deploymentId === deploymentId)).toHaveLength(1);
    expect(JSON.stringify(lines)).not.toContain(TOKENS.org_456);
  });

  it('sends DeploymentQueued to a telemetry whose events are not log lines (Application Insights) and still names the deployment on the access line', async () => {
    const lines: Record<string, unknown>[] = [];
    h = await createHarness({ logger: capture(lines) });
    const sent: { name: string; properties: Record<string, string> }[] = [];
    const local = h.adapters.telemetry;
    h.adapters.telemetry = {
      start: () => local.start(),
      close: () => local.close(),
      event: (name, properties) => void sent.push({ name, properties }),
      metric: () => undefined,
      currentTraceparent: () => null,
      withOperation: (_name, _traceparent, fn) => fn(),
    };
    const response = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...auth('org_456'), 'x-request-id': 'post-2' }, payload: staticBody({ projectId: 'sent' }) });
    expect(response.statusCode).toBe(202);
    const { deploymentId } = response.json<{ deploymentId: string }>();
    expect(sent).toEqual([{ name: 'DeploymentQueued', properties: { deploymentId, orgId: 'org_456', projectId: 'sent', environment: 'development' } }]);
    const ours = lines.filter((line) => line.requestId === 'post-2');
    expect(ours).toHaveLength(1);
    expect(ours[0]).toMatchObject({ msg: 'request completed', statusCode: 202, deploymentId, orgId: 'org_456', projectId: 'sent', environment: 'development' });
    expect(ours[0]).not.toHaveProperty('event');
    expect(ours[0]).not.toHaveProperty('telemetry');
  });

  it('adds nothing to the access line of a replayed POST /deploy and sends no second DeploymentQueued', async () => {
    const lines: Record<string, unknown>[] = [];
    h = await createHarness({ logger: capture(lines) });
    const headers = { ...auth('org_456'), 'idempotency-key': 'k-1' };
    const first = await h.app.inject({ method: 'POST', url: '/deploy', headers, payload: staticBody({ projectId: 'replayed' }) });
    const again = await h.app.inject({ method: 'POST', url: '/deploy', headers: { ...headers, 'x-request-id': 'post-3' }, payload: staticBody({ projectId: 'replayed' }) });
    expect([first.statusCode, again.statusCode]).toEqual([202, 202]);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(lines.filter((line) => line.event === 'DeploymentQueued')).toHaveLength(1);
    const ours = lines.filter((line) => line.requestId === 'post-3');
    expect(ours).toHaveLength(1);
    expect(ours[0]).not.toHaveProperty('deploymentId');
  });
});
