/**
 * Live streams and webhooks, measured locally (issue 13): a phase of `npm run bench` (scripts/bench.ts
 * calls `measureStreams`), and on its own:
 *
 *   npm run bench:streams                 full run (~1 minute): 300 writes, 1,000 idle streams, 50 webhook deliveries
 *   npm run bench:streams -- --smoke      tiny counts (~15 s)
 *
 * The API and the worker run as `npm start` runs them (same flags, precompiled sources) on one data
 * dir; this process plays a worker's writes (the same adapters the worker uses: a store replace or a
 * log append, each ringing the change file) and is the SSE client and the webhook receiver.
 * Figures:
 *   - sse_latency_p50/p99: a log line appended → the SSE client has its event (target p50 ≤ 50 ms);
 *   - sse_latency_busy_p50/p99: the same with 1,000 idle streams open on the same API process;
 *   - rss_api_streams_0 / _open and per stream: the API's RSS before and with 1,000 idle streams;
 *   - webhook_latency_p50/p99: a status write → the receiver has the signed request (the real worker's dispatcher).
 * No figure is asserted here; `npm run bench` compares them with their targets, BENCHMARKS.md records them.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { makeRecord, SseClient } from '@zepid/testkit';
import { deliveryIdFor, updateDeployment } from '@zepid/core';
import type { DeploymentRecord, DeploymentStore } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import { precompile } from '../precompiled.mjs';
import { freePort, HEADERS, quantile, root, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './support.ts';

export const STREAM_SIZES = { full: { writes: 300, idle: 1000, webhooks: 50 }, smoke: { writes: 30, idle: 50, webhooks: 10 } } as const;
export type StreamSizes = { writes: number; idle: number; webhooks: number };

/**
 * Starts the API and the worker on a new data dir, measures, stops them. Figures (ms, MB, KB):
 * sse_latency_p50/p99, rss_api_streams_0, rss_api_streams_open (with `idle` streams), rss_api_per_stream_kb,
 * sse_latency_busy_p50/p99, webhook_latency_p50/p99.
 */
export async function measureStreams(SIZES: StreamSizes, progress: (message: string) => void): Promise<Record<string, number>> {
  const round = (value: number) => Math.round(value * 10) / 10;
  const figures: Record<string, number> = {};
  const dataDir = await mkdtemp(join(tmpdir(), 'zepid-bench-streams-'));
  const logDir = await mkdtemp(join(tmpdir(), 'zepid-bench-streams-logs-'));
  const apiPort = await freePort();
  const api = `http://127.0.0.1:${apiPort}`;
  const env = { DATA_DIR: dataDir, DEPLOY_API_TOKENS: `org_bench:${TOKEN}`, LOG_LEVEL: 'warn', SSE_MAX_STREAMS_PER_TOKEN: '5000', SSE_MAX_STREAMS: '5000', RATE_LIMIT_PER_MINUTE: '1000000' };
  const apiService = startService('api', 'apps/api/src/server.ts', { ...env, PORT: String(apiPort) }, SERVICE_NODE_FLAGS, logDir);
  const workerService = startService('worker', 'apps/worker/src/main.ts', { ...env, LOCAL_ROUTER_PORT: String(await freePort()), HEALTH_PORT: String(await freePort()) }, SERVICE_NODE_FLAGS, logDir);
  const adapters = createLocalAdapters(dataDir, pino({ level: 'silent' }));
  const receiver = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const id = String(request.headers['webhook-id']);
      arrivals.set(id, performance.now());
      received.get(id)?.(performance.now());
      response.writeHead(204).end();
    });
  });
  const received = new Map<string, (at: number) => void>();
  const arrivals = new Map<string, number>();

  try {
    await waitReady(apiService, `${api}/health/ready`);
    await Promise.all([adapters.store.start(), adapters.artifacts.start(), adapters.webhooks.start()]);
    const newDeployment = async () => {
      // Written straight to the store (no job): only this process changes it, as a worker would.
      const record = await adapters.store.create(makeRecord({ orgId: 'org_bench' }), { maxActivePerOrg: 1_000_000 });
      return updateDeployment(adapters.store, { orgId: 'org_bench', deploymentId: record.id }, () => [{ type: 'attempt_started' }]);
    };
    const line = (message: string) => `${JSON.stringify({ timestamp: new Date().toISOString(), step: 'build', level: 'info', message })}\n`;

    /** Appends `count` lines one by one and times each until the client has its event. */
    const measureWrites = async (count: number): Promise<number[]> => {
      const followed = await newDeployment();
      const client = await SseClient.open(`${api}/deploy/${followed.id}/events`, { authorization: `Bearer ${TOKEN}` });
      await client.until('status');
      const latencies: number[] = [];
      for (let i = 1; i <= count; i += 1) {
        const started = performance.now();
        await adapters.artifacts.appendLog(followed.id, line(`line ${i}`));
        const event = await client.next(10_000);
        if (event?.event !== 'log' || event.id !== String(i)) throw new Error(`expected log ${i}, got ${JSON.stringify(event)}`);
        latencies.push(event.receivedAt - started);
        await sleep(10);
      }
      client.close();
      return latencies;
    };

    progress(`SSE latency, ${SIZES.writes} log lines, one stream`);
    const quiet = await measureWrites(SIZES.writes);
    figures.sse_latency_p50 = round(quantile(quiet, 0.5));
    figures.sse_latency_p99 = round(quantile(quiet, 0.99));

    const rssBefore = apiService.rssMb();
    figures.rss_api_streams_0 = round(rssBefore);
    progress(`${SIZES.idle} idle streams`);
    const idleOn = await newDeployment();
    const idle: SseClient[] = [];
    for (let i = 0; i < SIZES.idle; i += 1) {
      const client = await SseClient.open(`${api}/deploy/${idleOn.id}/events`, { authorization: `Bearer ${TOKEN}` });
      if (client.status !== 200) throw new Error(`stream ${i} answered ${client.status}`);
      idle.push(client);
    }
    // Idle: the API settles (V8 finishes what the 1,000 requests left) before the reading.
    await sleep(5000);
    const rssWith = apiService.rssMb();
    figures.rss_api_streams_open = round(rssWith);
    figures.rss_api_per_stream_kb = round(((rssWith - rssBefore) * 1024) / SIZES.idle);

    progress(`SSE latency with ${SIZES.idle} idle streams open (every write wakes them all)`);
    const busy = await measureWrites(Math.min(SIZES.writes, 100));
    figures.sse_latency_busy_p50 = round(quantile(busy, 0.5));
    figures.sse_latency_busy_p99 = round(quantile(busy, 0.99));
    for (const client of idle) client.close();

    progress(`webhook latency, ${SIZES.webhooks} status changes`);
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    const registered = await fetch(`${api}/webhooks`, { method: 'POST', headers: HEADERS, body: JSON.stringify({ url: hookUrl, events: ['deployment.failed'] }) });
    if (registered.status !== 201) throw new Error(`POST /webhooks answered ${registered.status}: ${await registered.text()}`);
    const { id: webhookId } = (await registered.json()) as { id: string };
    const webhookLatencies: number[] = [];
    for (let i = 0; i < SIZES.webhooks; i += 1) {
      const record = await newDeployment();
      const started = performance.now();
      // The event the write carries (the store returns the record without it: it went to the outbox).
      let written: DeploymentRecord | undefined;
      const capturing: DeploymentStore = Object.create(adapters.store) as DeploymentStore;
      capturing.replace = (next) => {
        written = next;
        return adapters.store.replace(next);
      };
      await updateDeployment(capturing, { orgId: 'org_bench', deploymentId: record.id }, () => [
        { type: 'failed', error: { code: 'BUILD_FAILED', message: 'bench', step: 'build' } },
      ]);
      const event = written?.outbox?.at(-1);
      if (event === undefined) throw new Error('no outbox event');
      const deliveryId = deliveryIdFor(event.id, webhookId);
      const at = await new Promise<number>((resolve, reject) => {
        const early = arrivals.get(deliveryId);
        if (early !== undefined) {
          resolve(early);
          return;
        }
        const timer = setTimeout(() => reject(new Error('no delivery within 10 s')), 10_000);
        received.set(deliveryId, (when) => {
          clearTimeout(timer);
          resolve(when);
        });
      });
      webhookLatencies.push(at - started);
    }
    figures.webhook_latency_p50 = round(quantile(webhookLatencies, 0.5));
    figures.webhook_latency_p99 = round(quantile(webhookLatencies, 0.99));

    return figures;
  } finally {
    receiver.close();
    await Promise.all([adapters.store.close(), adapters.artifacts.close(), adapters.webhooks.close(), adapters.changes.close()]);
    await Promise.all([apiService.stop(), workerService.stop()]);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    await rm(logDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const smoke = process.argv.includes('--smoke');
  const sizes = smoke ? STREAM_SIZES.smoke : STREAM_SIZES.full;
  precompile({ root });
  const figures = await measureStreams(sizes, (message) => process.stderr.write(`bench:streams: ${message}\n`));
  process.stdout.write(`\n| figure | value |\n|---|---|\n${Object.entries(figures).map(([id, value]) => `| ${id} | ${value} |`).join('\n')}\n`);
  await writeFile(join(root, 'bench-streams-results.json'), `${JSON.stringify({ at: new Date().toISOString(), smoke, sizes, figures }, null, 2)}\n`);
}
