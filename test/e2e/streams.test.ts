import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SseClient } from '@zepid/testkit';
import type { SseEvent } from '@zepid/testkit';
import { freePort, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'streams-test-token-0123456789';

/**
 * Two API processes and a (slowed) worker on one data dir, as replicas would share a store: a client
 * on each API follows the same deployment. Each gets every log line once, in order, the same lines,
 * and `end` after the deployment completed: events come from the store and the log, and the change
 * signal crosses processes (the worker writes, both APIs wake).
 */
describe('SSE with two API processes on one data dir', () => {
  let dataDir: string;
  const children: ChildProcess[] = [];
  let output = '';
  const apis: string[] = [];

  const start = (entry: string, env: Record<string, string>) => {
    const child = spawn(process.execPath, [entry], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    children.push(child);
  };

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-streams-'));
    const common = { DATA_DIR: dataDir, DEPLOY_API_TOKENS: `org_streams:${TOKEN}`, LOG_LEVEL: 'warn' };
    for (let i = 0; i < 2; i += 1) {
      const port = await freePort();
      apis.push(`http://127.0.0.1:${port}`);
      start('apps/api/src/server.ts', { ...common, PORT: String(port) });
    }
    start('test/e2e/fixtures/slow-worker.ts', { ...common, LOCAL_ROUTER_PORT: String(await freePort()), STEP_DELAY_MS: '500' });
    for (const api of apis) {
      await waitFor('the APIs', async () => (await fetch(`${api}/health/ready`).catch(() => null))?.status === 200).catch((error: unknown) => {
        throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
      });
    }
  }, 60_000);

  afterAll(async () => {
    for (const child of children) child.kill('SIGTERM');
    await waitFor('processes to stop', () => children.every((child) => child.exitCode !== null || child.signalCode !== null), 30_000);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  const logsOf = (events: SseEvent[]) => events.filter((e) => e.event === 'log').map((e) => JSON.parse(e.data) as { seq: number; message: string });

  it('both stream the same deployment: every line once, in order, then end', async () => {
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const body = JSON.parse(await readFile(join(root, 'examples/static-site.json'), 'utf8')) as Record<string, unknown>;
    const response = await fetch(`${apis[0]}/deploy`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ ...body, organizationId: 'org_streams', projectId: 'streams-site' }),
    });
    expect(response.status).toBe(202);
    const { deploymentId } = (await response.json()) as { deploymentId: string };

    const first = await SseClient.open(`${apis[0]}/deploy/${deploymentId}/events`, { authorization: `Bearer ${TOKEN}` });
    // The second joins on the other API once the build is under way.
    const early = await first.until('log', 30_000);
    const second = await SseClient.open(`${apis[1]}/deploy/${deploymentId}/events`, { authorization: `Bearer ${TOKEN}` });
    const [restOfFirst, all2] = await Promise.all([first.until('end', 60_000), second.until('end', 60_000)]).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
    });
    const all1 = [...early, ...restOfFirst];
    for (const events of [all1, all2]) {
      expect(events.at(-1)?.event).toBe('end');
      expect(JSON.parse(events.at(-1)?.data ?? '{}')).toMatchObject({ status: 'completed', reason: 'terminal' });
      const seqs = logsOf(events).map((line) => line.seq);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    }
    // The first saw the deployment advance step by step, live.
    const statuses = all1.filter((e) => e.event === 'status').map((e) => JSON.parse(e.data) as { status: string; currentStep: string | null });
    expect(statuses.length).toBeGreaterThan(3);
    expect(statuses.at(-1)?.status).toBe('completed');
    expect(logsOf(all2)).toEqual(logsOf(all1));
    const stored = (await (await fetch(`${apis[1]}/deploy/${deploymentId}/logs`, { headers })).json()) as { logs: { message: string }[] };
    expect(logsOf(all1).map((line) => line.message)).toEqual(stored.logs.map((line) => line.message));
    await Promise.all([first.closed(), second.closed()]);
  }, 90_000);
});

/**
 * The per-token cap (SSE_MAX_STREAMS_PER_TOKEN) counts a token's streams on every API process: each
 * open stream holds a lease in the shared store. Two API processes on one data dir (no worker: a
 * `GET /events` stream needs none), a cap of 2, leases of 3 s renewed every second.
 */
describe('the per-token stream cap across two API processes', () => {
  let dataDir: string;
  const children: ChildProcess[] = [];
  let output = '';
  const apis: string[] = [];
  const auth = { authorization: `Bearer ${TOKEN}` };

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-stream-cap-'));
    for (let i = 0; i < 2; i += 1) {
      const port = await freePort();
      apis.push(`http://127.0.0.1:${port}`);
      const env = { DATA_DIR: dataDir, DEPLOY_API_TOKENS: `org_streams:${TOKEN}`, LOG_LEVEL: 'warn', PORT: String(port), SSE_MAX_STREAMS_PER_TOKEN: '2', SSE_LEASE_TTL_MS: '3000' };
      const child = spawn(process.execPath, ['apps/api/src/server.ts'], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
      children.push(child);
    }
    for (const api of apis) {
      await waitFor('the APIs', async () => (await fetch(`${api}/health/ready`).catch(() => null))?.status === 200).catch((error: unknown) => {
        throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
      });
    }
  }, 60_000);

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await waitFor('processes to stop', () => children.every((child) => child.exitCode !== null || child.signalCode !== null), 30_000);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  /** Opens streams on `api` until one answers `status` (a place frees asynchronously), at most for `ms`. */
  const openUntil = async (api: string, status: number, ms: number) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const client = await SseClient.open(`${api}/events`, auth);
      if (client.status === status) return client;
      client.close();
      if (Date.now() > deadline) throw new Error(`${api}/events never answered ${status} within ${ms} ms (last: ${client.status})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  it('N streams on A and one more on B is a 429 on B; closing one frees a place; a killed process\'s leases expire', async () => {
    const [a = '', b = ''] = apis;
    const onA = [await SseClient.open(`${a}/events`, auth), await SseClient.open(`${a}/events`, auth)];
    expect(onA.map((client) => client.status)).toEqual([200, 200]);
    const refused = await SseClient.open(`${b}/events`, auth);
    await refused.closed();
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('5');
    expect(JSON.parse(refused.body)).toMatchObject({ success: false, error: 'RATE_LIMITED' });

    // A stream closed on A frees its place for B.
    onA[0]?.close();
    const onB = await openUntil(b, 200, 10_000);
    const full = await SseClient.open(`${a}/events`, auth);
    await full.closed();
    expect(full.status).toBe(429);

    // A dies without closing anything: its lease stops counting once it expires (3 s), and B's,
    // renewed every second, keeps counting past that.
    children[0]?.kill('SIGKILL');
    const second = await openUntil(b, 200, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const third = await SseClient.open(`${b}/events`, auth);
    await third.closed();
    expect(third.status).toBe(429);
    onB.close();
    second.close();
    onA[1]?.close();
  }, 60_000);
});
