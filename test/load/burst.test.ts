import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildJob, WorkerAdapters } from '@zepid/core';
import { systemClock } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../apps/api/src/app.ts';
import { TokenRegistry } from '../../apps/api/src/auth.ts';
import { DeploymentService } from '../../apps/api/src/deployments.ts';
import { Consumer } from '../../apps/worker/src/consumer.ts';
import { steps } from '../../apps/worker/src/steps/index.ts';
import { Workflow } from '../../apps/worker/src/workflow.ts';
import { FakeBuilder, FakeRuntime } from '../../apps/worker/test/fakes.ts';

const TOTAL = 5000;
const PROJECTS = 100;
const CONCURRENCY = 5;
const TOKEN = 'load-test-token-0123456789';

const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))] ?? NaN;

/**
 * A burst of 5,000 POST /deploy over loopback into the real API (SQLite store and queue), with the
 * real consumer and workflow behind it and an instant builder and runtime: every deployment
 * completes exactly once, no project ever has two running at once, the worker never exceeds its
 * concurrency, and GET status keeps answering during the burst (its p99 is reported).
 */
describe('load: a burst of 5,000 deployments', () => {
  let dataDir: string;
  let app: FastifyInstance;
  let adapters: WorkerAdapters;
  let consumer: Consumer;
  let url: string;
  const builder = new FakeBuilder();
  const runtime = new FakeRuntime();
  const builds = new Map<string, number>();
  const runningPerProject = new Map<string, number>();
  let running = 0;
  let maxRunning = 0;
  let overlap = false;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-load-'));
    const logger = pino({ level: 'silent' });
    const base = createLocalAdapters(dataDir, logger);
    const build = builder.build.bind(builder);
    // Watches every build: exactly once per deployment, one per project at a time, at most CONCURRENCY.
    builder.build = async (job: BuildJob) => {
      builds.set(job.deploymentId, (builds.get(job.deploymentId) ?? 0) + 1);
      const mine = (runningPerProject.get(job.projectId) ?? 0) + 1;
      runningPerProject.set(job.projectId, mine);
      if (mine > 1) overlap = true;
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      try {
        await new Promise((resolve) => setImmediate(resolve));
        return await build(job);
      } finally {
        running -= 1;
        runningPerProject.set(job.projectId, (runningPerProject.get(job.projectId) ?? 1) - 1);
      }
    };
    adapters = { ...base, builder, runtime };
    for (const adapter of [base.store, base.queue, base.artifacts, base.secrets]) await adapter.start();
    const service = new DeploymentService(base, { maxActivePerOrg: TOTAL + 1, clock: systemClock, logger });
    app = await buildApp(
      {
        adapters: base,
        service,
        tokens: TokenRegistry.fromSetting(`org_load:${TOKEN}`),
        mode: 'local',
        startedAt: Date.now(),
        estimatedDuration: 'instant',
        retentionDays: 7,
        rateLimitPerMinute: 1_000_000,
        workerStaleMs: 30_000,
        clock: systemClock,
      },
      logger,
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const workflow = new Workflow({ adapters, steps, settings: { deploymentTimeoutMs: 300_000 }, logger, clock: systemClock });
    consumer = new Consumer({ queue: base.queue, store: base.store, workflow, telemetry: base.telemetry, logger, concurrency: CONCURRENCY, shutdownGraceMs: 1000 });
  }, 60_000);

  afterAll(async () => {
    await consumer.stop();
    await app.close();
    for (const adapter of [adapters.secrets, adapters.artifacts, adapters.queue, adapters.store]) await adapter.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('accepts all, completes all exactly once, serialises per project, and keeps status answering', async () => {
    consumer.start();
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const probe = (await (await fetch(`${url}/deploy`, { method: 'POST', headers, body: JSON.stringify({ projectId: 'probe', organizationId: 'org_load', userId: 'u', files: [{ path: 'index.html', content: 'p' }] }) })).json()) as { deploymentId: string };

    const accepted: string[] = [];
    const statuses = new Map<number, number>();
    let sent = 0;
    const burst = autocannon({
      url,
      connections: 50,
      amount: TOTAL,
      timeout: 60,
      requests: [
        {
          method: 'POST',
          path: '/deploy',
          headers,
          setupRequest: (request) => {
            const n = sent++;
            return { ...request, body: JSON.stringify({ projectId: `project-${n % PROJECTS}`, organizationId: 'org_load', userId: 'u', files: [{ path: 'index.html', content: `<p>${n}</p>` }] }) };
          },
          onResponse: (status, body) => {
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            if (status === 202) accepted.push((JSON.parse(body) as { deploymentId: string }).deploymentId);
          },
        },
      ],
    });

    // GET status while the burst runs.
    const latencies: number[] = [];
    let bursting = true;
    const probing = (async () => {
      while (bursting) {
        const started = performance.now();
        const response = await fetch(`${url}/deploy/${probe.deploymentId}/status`, { headers });
        await response.arrayBuffer();
        expect(response.status).toBe(200);
        latencies.push(performance.now() - started);
      }
    })();
    const result = await burst;
    bursting = false;
    await probing;

    expect(Object.fromEntries(statuses)).toEqual({ 202: TOTAL });
    expect(result.errors).toBe(0);
    expect(new Set(accepted).size).toBe(TOTAL);

    // Every deployment reaches completed, exactly once.
    const deadline = Date.now() + 240_000;
    let counts = await adapters.store.countByStatus('org_load');
    while (counts.completed < TOTAL + 1 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      counts = await adapters.store.countByStatus('org_load');
    }
    expect(counts).toEqual({ queued: 0, in_progress: 0, completed: TOTAL + 1, failed: 0, cancelled: 0, superseded: 0 });
    expect(accepted.every((id) => builds.get(id) === 1)).toBe(true);
    expect(overlap).toBe(false);
    expect(maxRunning).toBeLessThanOrEqual(CONCURRENCY);
    // Jobs are settled just after their records' last write.
    let queue = await adapters.queue.counts();
    for (let waited = 0; queue.active > 0 && waited < 10_000; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      queue = await adapters.queue.counts();
    }
    expect(queue).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });

    console.log(
      `load: ${TOTAL} POST /deploy in ${(result.duration).toFixed(1)} s (${Math.round(result.requests.average)} req/s, p99 ${result.latency.p99} ms); ` +
        `GET status during the burst: ${latencies.length} requests, p50 ${quantile(latencies, 0.5).toFixed(1)} ms, p99 ${quantile(latencies, 0.99).toFixed(1)} ms; ` +
        `max concurrent builds ${maxRunning}`,
    );
  }, 360_000);
});
