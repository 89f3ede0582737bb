/**
 * `npm run bench`: the speed and memory figures of issue 6, measured in one run on this machine.
 * These machines are shared and noisy: compare ratios within a run, not absolute numbers across runs.
 *
 *   npm run bench                      full run (~2.5 minutes), table on stdout, JSON in bench-results.json
 *   npm run bench -- --smoke           tiny counts (~40 s): proves the bench still runs (npm test does this)
 *   npm run bench -- --out <file>      where the JSON goes
 *
 * Phases, each on fresh processes started the way `npm start` starts them (same Node, same flags,
 * sources precompiled first):
 *   1. real API + real worker (embedded defaults): idle RSS; static sample POST → URL answering;
 *      first deploy vs redeploy of unchanged source (static and Node samples), bytes stored again.
 *   2. HTTP load (autocannon, 50 connections, 3 rounds of 5 s per route) on the API of phase 1, worker stopped,
 *      against a bare Fastify server answering JSON of the same size, in the same run.
 *   3. real API + the real worker with an instant builder and runtime (scripts/bench/instant-worker.ts):
 *      queue pickup over 1,000 paced deployments; deployments completed per second at concurrency 5
 *      and 50 with the store writes they took; RSS of both with 50 deployments in flight.
 *   4. each queue alone: publish → a waiting receiver has the job, embedded (two processes) and the
 *      Service Bus adapter over the AMQP protocol fake (scripts/bench/queue-pickup.ts).
 * BENCHMARKS.md explains each figure, its target and what limits it.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { measureEmbeddedQueuePickup, measureServiceBusQueuePickup } from './bench/queue-pickup.ts';
import type { Service } from './bench/support.ts';
import { precompile } from './precompiled.mjs';
import { ApiClient, duBytes, freePort, getViaRouter, HEADERS, quantile, root, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './bench/support.ts';

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const outIndex = args.indexOf('--out');
const outFile = outIndex >= 0 && args[outIndex + 1] !== undefined ? args[outIndex + 1]! : join(root, 'bench-results.json');

const SIZES = smoke
  ? { staticRuns: 2, redeployRuns: 1, httpSeconds: 1, httpRounds: 1, queueJobs: 20, pickup: 20, pickupEveryMs: 10, throughput: 40, inFlight: 10, inFlightBuildMs: 1500 }
  : { staticRuns: 15, redeployRuns: 3, httpSeconds: 5, httpRounds: 3, queueJobs: 1000, pickup: 1000, pickupEveryMs: 10, throughput: 2000, inFlight: 50, inFlightBuildMs: 3000 };
// For profiling one phase: BENCH_SIZES='{"throughput":1000}' and BENCH_PHASES=instant (or real,http).
Object.assign(SIZES, JSON.parse(process.env.BENCH_SIZES ?? '{}') as Partial<typeof SIZES>);
const PHASES = new Set((process.env.BENCH_PHASES ?? 'real,http,instant,queue').split(','));

interface Figure {
  id: string;
  label: string;
  value: number;
  unit: string;
  /** Human form of the target, e.g. "≥ 0.50"; null when the issue asks only for a report. */
  target: string | null;
  met: boolean | null;
}

const figures: Figure[] = [];
const raw: Record<string, unknown> = {};
const figure = (id: string, label: string, value: number, unit: string, target?: { op: '<=' | '>=' | '==' ; limit: number }) => {
  const met = target === undefined ? null : target.op === '<=' ? value <= target.limit : target.op === '>=' ? value >= target.limit : value === target.limit;
  figures.push({ id, label, value, unit, target: target === undefined ? null : `${target.op === '<=' ? '≤' : target.op === '>=' ? '≥' : '='} ${target.limit}${unit === 'ratio' || unit === '' ? '' : ` ${unit}`}`, met });
};
const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);
const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

const samples = JSON.parse(await readFile(join(root, 'examples', 'static-site.json'), 'utf8')) as { files: { path: string; content: string }[]; [key: string]: unknown };
const nodeSample = JSON.parse(await readFile(join(root, 'examples', 'node-server.json'), 'utf8')) as typeof samples;
/** The sample with one file changed, so it is a new source (no reuse) for a new or the same project. */
function variant(sample: typeof samples, projectId: string, marker: string | null) {
  if (marker === null) return { ...sample, projectId };
  return { ...sample, projectId, files: [...sample.files, { path: 'bench-marker.txt', content: marker }] };
}

interface Services {
  api: Service;
  worker: Service;
  client: ApiClient;
  dataDir: string;
  routerPort: number;
}

async function startServices(options: { worker: 'real' | 'instant'; workerEnv?: Record<string, string> }): Promise<Services> {
  const dataDir = await mkdtemp(join(tmpdir(), 'zepid-bench-'));
  const [apiPort, routerPort, healthPort] = [await freePort(), await freePort(), await freePort()];
  const common = {
    DATA_DIR: dataDir,
    DEPLOY_API_TOKENS: `local:${TOKEN}`,
    // The default level: the API writes its access log, as it does for users (to a file here).
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
    LOCAL_ROUTER_PORT: String(routerPort),
  };
  const api = startService('api', 'apps/api/src/server.ts', { ...common, PORT: String(apiPort), MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000' }, SERVICE_NODE_FLAGS, dataDir);
  const worker = startService(
    'worker',
    options.worker === 'real' ? 'apps/worker/src/main.ts' : 'scripts/bench/instant-worker.ts',
    { ...common, HEALTH_PORT: String(healthPort), ...options.workerEnv },
    SERVICE_NODE_FLAGS,
    dataDir,
  );
  await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`);
  await waitReady(worker, `http://127.0.0.1:${healthPort}/health/ready`);
  return { api, worker, client: new ApiClient(`http://127.0.0.1:${apiPort}`), dataDir, routerPort };
}

async function stopServices(services: Services): Promise<void> {
  await Promise.all([services.api.stop(), services.worker.stop()]);
  await rm(services.dataDir, { recursive: true, force: true, maxRetries: 3 });
}

/** Highest RSS of a service over `ms`, sampled every 100 ms. */
async function peakRss(service: Service, ms: number): Promise<number> {
  let peak = 0;
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) peak = Math.max(peak, service.rssMb());
  return peak;
}

/** POST → completed → the URL answers 200 through the router; wall time seen by a client. */
async function deployToUrl(services: Services, body: unknown): Promise<{ ms: number; storedBytes: number | null; id: string }> {
  const started = performance.now();
  const id = await services.client.post(body);
  const done = await services.client.settle(id);
  if (done.status !== 'completed' || done.url === null) throw new Error(`deployment ${id} ended ${done.status}: ${done.error ?? ''}`);
  while ((await getViaRouter(done.url)) !== 200) await sleep(2);
  return { ms: performance.now() - started, storedBytes: done.source?.storedBytes ?? null, id };
}

async function phaseRealServices(): Promise<{ services: Services; probeId: string }> {
  progress('phase 1: real API and worker');
  const services = await startServices({ worker: 'real' });
  await sleep(1000);
  const [apiIdle, workerIdle] = await Promise.all([peakRss(services.api, 1000), peakRss(services.worker, 1000)]);
  figure('rss_api_idle', 'RSS, API idle', round(apiIdle), 'MB', { op: '<=', limit: 120 });
  figure('rss_worker_idle', 'RSS, worker idle', round(workerIdle), 'MB', { op: '<=', limit: 200 });

  const toUrl: number[] = [];
  let probeId = '';
  for (let run = 0; run <= SIZES.staticRuns; run += 1) {
    const { ms, id } = await deployToUrl(services, variant(samples, 'bench-static', `run ${run} ${Date.now()}`));
    probeId = id;
    if (run > 0) toUrl.push(ms); // run 0 warms up
  }
  raw.staticToUrlMs = toUrl.map((ms) => round(ms));
  figure('static_to_url_p50', 'static sample: POST → URL answers, p50', round(quantile(toUrl, 0.5)), 'ms', { op: '<=', limit: 2000 });
  figure('static_to_url_p95', 'static sample: POST → URL answers, p95', round(quantile(toUrl, 0.95)), 'ms');

  for (const [name, sample] of [
    ['static', samples],
    ['node', nodeSample],
  ] as const) {
    const ratios: number[] = [];
    const restored: number[] = [];
    const pairs: { firstMs: number; redeployMs: number; redeployStoredBytes: number | null; objectBytesDelta: number }[] = [];
    for (let run = 0; run < SIZES.redeployRuns; run += 1) {
      const body = variant(sample, `bench-redeploy-${name}-${run}`, `redeploy ${name} ${run} ${Date.now()}`);
      const first = await deployToUrl(services, body);
      // The stored files themselves, on disk: nothing may be added by an unchanged redeploy.
      const before = duBytes(join(services.dataDir, 'artifacts', 'objects'));
      const again = await deployToUrl(services, body);
      const after = duBytes(join(services.dataDir, 'artifacts', 'objects'));
      ratios.push(again.ms / first.ms);
      restored.push(again.storedBytes ?? Number.NaN);
      pairs.push({ firstMs: round(first.ms), redeployMs: round(again.ms), redeployStoredBytes: again.storedBytes, objectBytesDelta: after - before });
    }
    raw[`redeploy_${name}`] = pairs;
    figure(`redeploy_ratio_${name}`, `${name} sample: redeploy of unchanged source ÷ first deploy (median)`, round(quantile(ratios, 0.5), 3), 'ratio', { op: '<=', limit: 0.1 });
    figure(`redeploy_stored_bytes_${name}`, `${name} sample: source bytes stored again by the redeploy (max)`, Math.max(...restored), 'bytes', { op: '==', limit: 0 });
  }
  return { services, probeId };
}

interface Load {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
}

async function load(url: string, method: 'GET' | 'POST', body?: string): Promise<Load> {
  const result = await autocannon({ url, method, body, headers: HEADERS, connections: 50, duration: SIZES.httpSeconds });
  return { requestsPerSecond: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx, errors: result.errors };
}

async function phaseHttp(services: Services, probeId: string): Promise<void> {
  progress('phase 2: HTTP load against a bare Fastify route');
  await services.worker.stop();
  const postBody = JSON.stringify(variant(samples, 'bench-http', null));
  const accepted = await fetch(`${services.client.base}/deploy`, { method: 'POST', headers: HEADERS, body: postBody });
  const postResponseBytes = (await accepted.arrayBuffer()).byteLength;
  const statusResponseBytes = (await (await fetch(`${services.client.base}/deploy/${probeId}/status`, { headers: HEADERS })).arrayBuffer()).byteLength;
  const barePort = await freePort();
  const bare = startService('bare', 'scripts/bench/bare-server.ts', {
    PORT: String(barePort),
    POST_RESPONSE_BYTES: String(postResponseBytes),
    GET_RESPONSE_BYTES: String(statusResponseBytes),
  }, SERVICE_NODE_FLAGS, services.dataDir);
  try {
    for (let i = 0; i < 200 && (await fetch(`http://127.0.0.1:${barePort}/bare`).then((r) => r.status, () => 0)) !== 200; i += 1) await sleep(50);
    // Rounds, each route alternating with its yardstick, and the median round's figures: on a shared
    // machine a neighbour's burst then lands on both sides of a ratio instead of on one.
    const rounds: Record<'bareGet' | 'status' | 'barePost' | 'post', Load>[] = [];
    for (let round = 0; round < SIZES.httpRounds; round += 1) {
      rounds.push({
        bareGet: await load(`http://127.0.0.1:${barePort}/bare`, 'GET'),
        status: await load(`${services.client.base}/deploy/${probeId}/status`, 'GET'),
        barePost: await load(`http://127.0.0.1:${barePort}/bare`, 'POST', postBody),
        post: await load(`${services.client.base}/deploy`, 'POST', postBody),
      });
    }
    const median = (pick: (round: (typeof rounds)[number]) => Load, by: (load: Load) => number) =>
      [...rounds].map(pick).sort((a, b) => by(a) - by(b))[Math.floor(rounds.length / 2)]!;
    const bareGet = median((round) => round.bareGet, (l) => l.requestsPerSecond);
    const status = median((round) => round.status, (l) => l.requestsPerSecond);
    const barePost = median((round) => round.barePost, (l) => l.requestsPerSecond);
    const post = median((round) => round.post, (l) => l.requestsPerSecond);
    const statusRatios = rounds.map((round) => round.status.requestsPerSecond / round.bareGet.requestsPerSecond);
    const postRatios = rounds.map((round) => round.post.requestsPerSecond / round.barePost.requestsPerSecond);
    raw.http = { postResponseBytes, statusResponseBytes, requestBytes: postBody.length, rounds, statusRatios, postRatios, secondsEach: SIZES.httpSeconds, connections: 50 };
    for (const round of rounds) {
      for (const [name, result] of Object.entries({ status: round.status, post: round.post })) {
        if (result.non2xx > 0 || result.errors > 0) throw new Error(`${name} under load: ${result.non2xx} non-2xx answers, ${result.errors} errors`);
      }
    }
    figure('post_rps_ratio', 'POST /deploy req/s ÷ bare POST route, same body and answer size (median round)', round(quantile(postRatios, 0.5), 3), 'ratio', { op: '>=', limit: 0.5 });
    figure('status_rps_ratio', 'GET /deploy/:id/status req/s ÷ bare GET route, same answer size (median round)', round(quantile(statusRatios, 0.5), 3), 'ratio', { op: '>=', limit: 0.8 });
    figure('post_rps', 'POST /deploy req/s (median round)', Math.round(post.requestsPerSecond), 'req/s');
    figure('bare_post_rps', 'bare POST route req/s (median round)', Math.round(barePost.requestsPerSecond), 'req/s');
    figure('status_rps', 'GET status req/s (median round)', Math.round(status.requestsPerSecond), 'req/s');
    figure('bare_get_rps', 'bare GET route req/s (median round)', Math.round(bareGet.requestsPerSecond), 'req/s');
    figure('post_latency_p50', 'POST /deploy latency under load, p50', post.p50, 'ms');
    figure('post_latency_p99', 'POST /deploy latency under load, p99', post.p99, 'ms');
    figure('status_latency_p50', 'GET status latency under load, p50', status.p50, 'ms');
    figure('status_latency_p99', 'GET status latency under load, p99', status.p99, 'ms');
  } finally {
    await bare.stop();
  }
}

interface Row {
  doc: string;
}
interface Doc {
  status: string;
  createdAt: string;
  attemptStartedAt: string | null;
  finishedAt: string | null;
  steps: { validate: { startedAt: string | null } };
}

/** Records straight from the embedded database (read-only), without loading the API. */
function readRecords(dataDir: string): Doc[] {
  const db = new DatabaseSync(join(dataDir, 'zepid.db'), { readOnly: true });
  try {
    return (db.prepare('SELECT doc FROM deployments').all() as unknown as Row[]).map((row) => JSON.parse(row.doc) as Doc);
  } finally {
    db.close();
  }
}

async function waitAllTerminal(dataDir: string, count: number, timeoutMs: number): Promise<Doc[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = readRecords(dataDir);
    const done = records.filter((record) => ['completed', 'failed', 'cancelled'].includes(record.status));
    if (done.length >= count) return records;
    if (Date.now() > deadline) throw new Error(`${done.length} of ${count} deployments finished within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** POSTs `count` deployments, `parallel` at a time, one project each unless `projects` is given. */
async function postMany(client: ApiClient, count: number, parallel: number, prefix: string, projects = count): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let i = next++; i < count; i = next++) await client.post(variant(samples, `${prefix}-${i % projects}`, `${prefix} ${i}`));
    }),
  );
}

async function phaseInstantWorker(): Promise<void> {
  progress(`phase 3a: queue pickup over ${SIZES.pickup} paced deployments`);
  {
    const services = await startServices({ worker: 'instant' });
    try {
      const started = performance.now();
      const posts: Promise<string>[] = [];
      for (let i = 0; i < SIZES.pickup; i += 1) {
        const due = started + i * SIZES.pickupEveryMs;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        posts.push(services.client.post(variant(samples, `pickup-${i % 100}`, `pickup ${i}`)));
      }
      await Promise.all(posts);
      const records = await waitAllTerminal(services.dataDir, SIZES.pickup, 120_000);
      const pickup = records.map((record) => Date.parse(record.steps.validate.startedAt ?? '') - Date.parse(record.createdAt));
      if (pickup.some((ms) => !Number.isFinite(ms))) throw new Error('a deployment never started validate');
      raw.pickupMs = { count: pickup.length, max: Math.max(...pickup), arrivalsPerSecond: 1000 / SIZES.pickupEveryMs };
      figure('pickup_p50', `202 → worker starts validate, ${SIZES.pickup} deployments at ${1000 / SIZES.pickupEveryMs}/s, p50`, quantile(pickup, 0.5), 'ms', { op: '<=', limit: 20 });
      figure('pickup_p99', `202 → worker starts validate, p99`, quantile(pickup, 0.99), 'ms', { op: '<=', limit: 100 });
    } finally {
      await stopServices(services);
    }
  }

  for (const concurrency of [5, 50]) {
    progress(`phase 3b: ${SIZES.throughput} deployments, one worker, concurrency ${concurrency}`);
    const services = await startServices({ worker: 'instant', workerEnv: { MAX_CONCURRENT_DEPLOYMENTS: String(concurrency) } });
    try {
      // Queue them all first with the worker stopped, then measure the worker alone.
      await services.worker.stop();
      await postMany(services.client, SIZES.throughput, 16, `tp${concurrency}`);
      const statsFile = join(services.dataDir, 'worker-stats.json');
      const healthPort = await freePort();
      const worker = startService(
        'worker',
        'scripts/bench/instant-worker.ts',
        { DATA_DIR: services.dataDir, LOG_LEVEL: 'info', LOCAL_ROUTER_PORT: String(services.routerPort), HEALTH_PORT: String(healthPort), MAX_CONCURRENT_DEPLOYMENTS: String(concurrency), BENCH_STATS_FILE: statsFile },
        SERVICE_NODE_FLAGS,
        services.dataDir,
      );
      services.worker = worker;
      const records = await waitAllTerminal(services.dataDir, SIZES.throughput, 300_000);
      await worker.stop();
      const failed = records.filter((record) => record.status !== 'completed').length;
      if (failed > 0) throw new Error(`${failed} deployments did not complete`);
      const first = Math.min(...records.map((record) => Date.parse(record.attemptStartedAt ?? '')));
      const last = Math.max(...records.map((record) => Date.parse(record.finishedAt ?? '')));
      const perSecond = records.length / ((last - first) / 1000);
      const stats = JSON.parse(await readFile(statsFile, 'utf8')) as Record<string, number>;
      raw[`throughput_c${concurrency}`] = { deployments: records.length, seconds: (last - first) / 1000, workerCalls: stats };
      figure(`throughput_c${concurrency}`, `deployments completed per second, one worker, instant builder, concurrency ${concurrency}`, Math.round(perSecond), '/s', { op: '>=', limit: 200 });
      if (concurrency === 5) {
        // One write by the API (record and job in one transaction), the rest by the worker.
        figure('store_writes_per_deployment', 'store writes per deployment (API create + worker replaces)', round(1 + (stats.storeReplaces ?? 0) / records.length, 2), '');
        figure('queue_ops_per_deployment', 'queue writes per deployment (receive, settle, renew)', round(((stats.queueReceives ?? 0) + (stats.queueSettles ?? 0) + (stats.queueRenewals ?? 0)) / records.length, 2), '');
      }
    } finally {
      await stopServices(services);
    }
  }

  progress(`phase 3c: RSS with ${SIZES.inFlight} deployments in flight`);
  {
    const services = await startServices({
      worker: 'instant',
      workerEnv: { MAX_CONCURRENT_DEPLOYMENTS: String(SIZES.inFlight), BENCH_BUILD_DELAY_MS: String(SIZES.inFlightBuildMs) },
    });
    try {
      const ids = await Promise.all(Array.from({ length: SIZES.inFlight }, (_, i) => services.client.post(variant(samples, `inflight-${i}`, `inflight ${i}`))));
      let apiPeak = 0;
      let workerPeak = 0;
      let maxInFlight = 0;
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
        // Clients follow their deployments meanwhile, as they would.
        const statuses = await Promise.all(ids.map((id) => services.client.status(id)));
        maxInFlight = Math.max(maxInFlight, statuses.filter((status) => status.status === 'in_progress').length);
        apiPeak = Math.max(apiPeak, services.api.rssMb());
        workerPeak = Math.max(workerPeak, services.worker.rssMb());
        if (statuses.every((status) => status.status === 'completed')) break;
        await sleep(100);
      }
      raw.inFlight = { deployments: SIZES.inFlight, maxInProgressSeen: maxInFlight, buildMs: SIZES.inFlightBuildMs };
      figure('rss_api_inflight', `RSS, API with ${SIZES.inFlight} deployments in flight (peak)`, round(apiPeak), 'MB', { op: '<=', limit: 120 });
      figure('rss_worker_inflight', `RSS, worker with ${SIZES.inFlight} deployments in flight (peak)`, round(workerPeak), 'MB', { op: '<=', limit: 200 });
    } finally {
      await stopServices(services);
    }
  }
}

/** Publish → a waiting receiver has the job, on each queue alone (scripts/bench/queue-pickup.ts). */
async function phaseQueues(): Promise<void> {
  progress(`phase 4: queue pickup, ${SIZES.queueJobs} jobs one at a time, embedded and Service Bus (protocol fake)`);
  const embedded = await measureEmbeddedQueuePickup({ jobs: SIZES.queueJobs });
  const serviceBus = await measureServiceBusQueuePickup({ jobs: SIZES.queueJobs });
  raw.queuePickup = { embedded, serviceBus };
  const ms = (value: number) => round(value, 2);
  figure('queue_pickup_embedded_p50', 'embedded queue, publish (other process) → waiting receiver has it, p50', ms(embedded.p50Ms), 'ms');
  figure('queue_pickup_embedded_p99', 'embedded queue, publish → receiver, p99', ms(embedded.p99Ms), 'ms');
  figure('queue_pickup_servicebus_p50', 'Service Bus adapter over the AMQP fake, publish → receiver, p50', ms(serviceBus.p50Ms), 'ms');
  figure('queue_pickup_servicebus_p99', 'Service Bus adapter over the AMQP fake, publish → receiver, p99', ms(serviceBus.p99Ms), 'ms');
}

function table(): string {
  const rows = figures.map((f) => [f.label, `${f.value}${f.unit === 'ratio' || f.unit === '' ? '' : ` ${f.unit}`}`, f.target ?? 'report', f.met === null ? '' : f.met ? 'yes' : 'NO']);
  const header = ['figure', 'value', 'target', 'met'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

const startedAt = new Date();
// As `npm start` does before starting the services (scripts/precompiled.mjs).
const precompiled = precompile({ root });
progress(`precompiled ${precompiled.compiled} modules (${precompiled.reused} unchanged)`);
let services: Services | null = null;
try {
  if (PHASES.has('real') || PHASES.has('http')) {
    const real = await phaseRealServices();
    services = real.services;
    if (PHASES.has('http')) await phaseHttp(real.services, real.probeId);
    await stopServices(real.services);
    services = null;
  }
  if (PHASES.has('instant')) await phaseInstantWorker();
  if (PHASES.has('queue')) await phaseQueues();
} finally {
  if (services !== null) await stopServices(services);
}

const cpu = cpus();
const result = {
  startedAt: startedAt.toISOString(),
  seconds: round((Date.now() - startedAt.getTime()) / 1000),
  smoke,
  machine: { cpus: cpu.length, model: cpu[0]?.model ?? 'unknown', memoryGiB: round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform} ${process.arch}`, serviceNodeFlags: SERVICE_NODE_FLAGS },
  figures,
  raw,
};
await writeFile(outFile, `${JSON.stringify(result, null, 2)}\n`);
console.log(`Zepid Deploy bench${smoke ? ' (smoke: tiny counts, figures not meaningful)' : ''}: ${result.machine.cpus} × ${result.machine.model}, node ${process.version}, ${result.seconds} s`);
console.log(table());
console.log(`JSON: ${outFile}`);
