/**
 * `npm run bench`: the speed and memory figures of issue 6, measured in one run on this machine.
 * These machines are shared and noisy: compare ratios within a run, not absolute numbers across runs.
 *
 *   npm run bench                      full run (~3.5 minutes), table on stdout, JSON in bench-results.json
 *   npm run bench -- --smoke           tiny counts (~40 s): proves the bench still runs (npm test does this)
 *   npm run bench -- --out <file>      where the JSON goes
 *
 * Phases, each on fresh processes started the way `npm start` starts them (same Node, same flags,
 * sources precompiled first):
 *   1. real API + real worker (embedded defaults): idle RSS; static sample POST → URL answering;
 *      first deploy vs redeploy of unchanged source (static and Node samples), bytes stored again.
 *      Then a static file through the local router against Debian's nginx serving the same files.
 *   2. HTTP load (autocannon, 50 connections, 3 rounds of 5 s per route) on the API of phase 1, worker stopped,
 *      each round ours back to back with its peers (scripts/bench/peers/: Fastify + SQLite WAL/NORMAL,
 *      Fastify + BullMQ on a local Redis with AOF everysec) and a bare Fastify route (information only);
 *      then the database file reads and writes per POST, ours and the SQLite peer's, counted by strace.
 *   3. real API + the real worker with an instant builder and runtime (scripts/bench/instant-worker.ts):
 *      queue pickup over 1,000 paced deployments; deployments completed per second at concurrency 5
 *      and 50 with the store writes they took; RSS of both with 50 deployments in flight.
 *   4. each queue alone: publish → a waiting receiver has the job, embedded (two processes) and the
 *      Service Bus adapter over the AMQP protocol fake (scripts/bench/queue-pickup.ts).
 *   5. (full run; BENCH_PHASES=buildcache) the dependency cache: a real create-vite react-ts app with one
 *      source file changed, POST → URL, on a worker with the cache against one with it off
 *      (LOCAL_BUILD_CACHE_MAX_MB=0), alternating; BENCH_PHASES=buildcache-next does the same for Next.js.
 *   6. live streams and webhooks (scripts/bench/streams.ts, also `npm run bench:streams`): a log line
 *      written → SSE client, alone and with 1,000 idle streams open; the API's RSS with them; a status
 *      written → the signed webhook at a receiver, through the real worker's dispatcher.
 * BENCHMARKS.md explains each figure, its target and what limits it.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { measureEmbeddedQueuePickup, measureServiceBusQueuePickup } from './bench/queue-pickup.ts';
import { measureStreams, STREAM_SIZES } from './bench/streams.ts';
import type { Service } from './bench/support.ts';
import { precompile } from './precompiled.mjs';
import { ApiClient, duBytes, freePort, getViaRouter, HEADERS, quantile, root, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './bench/support.ts';
import { countDatabaseIo, startBullmqPeer, startNginx, startRedis, startSqlitePeer, straceUsable } from './bench/peers/harness.ts';

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const outIndex = args.indexOf('--out');
const outFile = outIndex >= 0 && args[outIndex + 1] !== undefined ? args[outIndex + 1]! : join(root, 'bench-results.json');

const SIZES = smoke
  ? { staticRuns: 2, redeployRuns: 1, httpSeconds: 1, httpRounds: 1, ioPosts: 100, queueJobs: 20, pickup: 20, pickupEveryMs: 10, throughput: 40, inFlight: 10, inFlightBuildMs: 1500 }
  : { staticRuns: 15, redeployRuns: 3, httpSeconds: 5, httpRounds: 3, ioPosts: 2000, queueJobs: 1000, pickup: 1000, pickupEveryMs: 10, throughput: 2000, inFlight: 50, inFlightBuildMs: 3000 };
// For profiling one phase: BENCH_SIZES='{"throughput":1000}' and BENCH_PHASES=instant (or real,http; static: phase 1 and the nginx comparison only).
Object.assign(SIZES, JSON.parse(process.env.BENCH_SIZES ?? '{}') as Partial<typeof SIZES>);
// buildcache (real Vite builds, templates from the npm registry) runs in the full bench only; buildcache-next on demand.
const PHASES = new Set((process.env.BENCH_PHASES ?? (smoke ? 'real,http,instant,queue,streams' : 'real,http,instant,queue,buildcache,streams')).split(','));

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
async function deployToUrl(services: Services, body: unknown): Promise<{ ms: number; storedBytes: number | null; id: string; url: string }> {
  const started = performance.now();
  const id = await services.client.post(body);
  const done = await services.client.settle(id);
  if (done.status !== 'completed' || done.url === null) throw new Error(`deployment ${id} ended ${done.status}: ${done.error ?? ''}`);
  while ((await getViaRouter(done.url)) !== 200) await sleep(2);
  return { ms: performance.now() - started, storedBytes: done.source?.storedBytes ?? null, id, url: done.url };
}

async function phaseRealServices(): Promise<{ services: Services; probeId: string; probeUrl: string }> {
  progress('phase 1: real API and worker');
  const services = await startServices({ worker: 'real' });
  await sleep(1000);
  const [apiIdle, workerIdle] = await Promise.all([peakRss(services.api, 1000), peakRss(services.worker, 1000)]);
  figure('rss_api_idle', 'RSS, API idle', round(apiIdle), 'MB', { op: '<=', limit: 120 });
  figure('rss_worker_idle', 'RSS, worker idle', round(workerIdle), 'MB', { op: '<=', limit: 200 });

  const toUrl: number[] = [];
  let probeId = '';
  let probeUrl = '';
  for (let run = 0; run <= SIZES.staticRuns; run += 1) {
    const { ms, id, url } = await deployToUrl(services, variant(samples, 'bench-static', `run ${run} ${Date.now()}`));
    probeId = id;
    probeUrl = url;
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
  return { services, probeId, probeUrl };
}

interface Load {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
}

async function load(url: string, method: 'GET' | 'POST', body?: string, headers: Record<string, string> = HEADERS): Promise<Load> {
  const result = await autocannon({ url, method, body, headers, connections: 50, duration: SIZES.httpSeconds });
  return { requestsPerSecond: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx, errors: result.errors };
}

/** The median of per-round ratios: each round runs ours and its peer back to back, so a neighbour's burst lands on both. */
const medianRatio = (ratios: number[]) => round(quantile(ratios, 0.5), 3);

/** Peers whose program is not installed are skipped with this notice (and .ci/run installs them). */
const skipped = (what: string, program: string) => {
  const notice = `${what} skipped: ${program} is not installed (apt-get install ${program})`;
  progress(notice);
  ((raw.skipped ??= []) as string[]).push(notice);
};

/**
 * The local router serving the deployed static sample against Debian's nginx serving the same files
 * (examples/static-site: the sample has no build step, so its built site is its source), both with
 * keep-alive, same file, rounds alternating. The bodies are compared first: same bytes or no figure.
 */
async function phaseStatic(services: Services, url: string): Promise<void> {
  progress('phase 1b: a static file through the local router against nginx');
  const dir = await mkdtemp(join(tmpdir(), 'zepid-bench-nginx-'));
  const nginx = await startNginx(join(root, 'examples', 'static-site'), dir);
  try {
    if (nginx === null) return skipped('static site ÷ nginx', 'nginx');
    const app = new URL(url).hostname.replace(/\.localhost$/, '');
    // The path form of the router (/apps/<app>/…): no Host header games for the load generator.
    const ours = `http://127.0.0.1:${services.routerPort}/apps/${app}/index.html`;
    const peer = `http://127.0.0.1:${nginx.port}/index.html`;
    const [ourBody, peerBody] = await Promise.all([ours, peer].map(async (target) => {
      const response = await fetch(target);
      if (response.status !== 200) throw new Error(`${target} answered ${response.status}`);
      return response.text();
    }));
    if (ourBody !== peerBody) throw new Error(`the router and nginx serve different index.html (${ourBody?.length} vs ${peerBody?.length} bytes)`);
    const rounds: { router: Load; nginx: Load }[] = [];
    for (let i = 0; i < SIZES.httpRounds; i += 1) rounds.push({ router: await load(ours, 'GET', undefined, {}), nginx: await load(peer, 'GET', undefined, {}) });
    for (const r of rounds) if (r.router.non2xx + r.router.errors + r.nginx.non2xx + r.nginx.errors > 0) throw new Error(`static under load: ${JSON.stringify(r)}`);
    const ratios = rounds.map((r) => r.router.requestsPerSecond / r.nginx.requestsPerSecond);
    raw.staticVsNginx = { file: 'index.html', bytes: ourBody?.length, rounds, ratios };
    figure('static_nginx_ratio', 'static file through the local router req/s ÷ nginx, same file, keep-alive (median round)', medianRatio(ratios), 'ratio', { op: '>=', limit: 0.5 });
    figure('static_router_rps', 'static file through the local router req/s (median round)', Math.round(quantile(rounds.map((r) => r.router.requestsPerSecond), 0.5)), 'req/s');
    figure('static_nginx_rps', 'nginx, same file req/s (median round)', Math.round(quantile(rounds.map((r) => r.nginx.requestsPerSecond), 0.5)), 'req/s');
  } finally {
    await nginx?.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

async function phaseHttp(services: Services, probeId: string): Promise<void> {
  progress('phase 2: HTTP load against the peers (SQLite, BullMQ) and a bare Fastify route');
  await services.worker.stop();
  const postBody = JSON.stringify(variant(samples, 'bench-http', null));
  const accepted = await fetch(`${services.client.base}/deploy`, { method: 'POST', headers: HEADERS, body: postBody });
  const postResponseBytes = (await accepted.arrayBuffer()).byteLength;
  const statusBody = await (await fetch(`${services.client.base}/deploy/${probeId}/status`, { headers: HEADERS })).text();
  const statusResponseBytes = Buffer.byteLength(statusBody);
  const peerDir = await mkdtemp(join(tmpdir(), 'zepid-bench-peers-'));
  const peerEnv = { TOKENS: `local:${TOKEN}`, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info' };
  // The SQLite peer answers status with our own answer for the same deployment: same bytes on the wire.
  const seed = join(peerDir, 'seed-status.json');
  await writeFile(seed, JSON.stringify({ id: probeId, orgId: 'local', body: JSON.parse(statusBody) as unknown }));
  const barePort = await freePort();
  const stops: (() => Promise<void>)[] = [];
  try {
    const bare = startService('bare', 'scripts/bench/bare-server.ts', {
      PORT: String(barePort),
      POST_RESPONSE_BYTES: String(postResponseBytes),
      GET_RESPONSE_BYTES: String(statusResponseBytes),
    }, SERVICE_NODE_FLAGS, services.dataDir);
    stops.push(() => bare.stop());
    const sqlite = await startSqlitePeer(peerDir, { ...peerEnv, SEED_STATUS: seed });
    stops.push(() => sqlite.service.stop());
    const redis = await startRedis(peerDir);
    const bullmq = redis === null ? null : await startBullmqPeer(peerDir, redis.port, peerEnv);
    if (redis === null) skipped('POST ÷ BullMQ peer', 'redis-server');
    if (bullmq !== null) stops.push(() => bullmq.service.stop());
    if (redis !== null) stops.push(() => redis.stop());
    await waitReady(bare, `http://127.0.0.1:${barePort}/bare`);
    const peerGet = `http://127.0.0.1:${sqlite.port}/deploy/${probeId}/status`;
    await waitReady(sqlite.service, peerGet, 30_000, { headers: HEADERS });
    if (bullmq !== null) await waitReady(bullmq.service, `http://127.0.0.1:${bullmq.port}/deploy`, 30_000, { method: 'POST', headers: HEADERS, body: postBody }, 202);
    const peerStatus = await (await fetch(peerGet, { headers: HEADERS })).text();
    if (Buffer.byteLength(peerStatus) !== statusResponseBytes) throw new Error(`the SQLite peer's status answer has ${Buffer.byteLength(peerStatus)} bytes, ours ${statusResponseBytes}`);

    // Rounds, ours back to back with its peers and yardstick, and the median of the per-round ratios.
    type Round = Record<'status' | 'sqliteGet' | 'bareGet' | 'post' | 'sqlitePost' | 'barePost', Load> & { bullmqPost: Load | null };
    const rounds: Round[] = [];
    for (let i = 0; i < SIZES.httpRounds; i += 1) {
      rounds.push({
        status: await load(`${services.client.base}/deploy/${probeId}/status`, 'GET'),
        sqliteGet: await load(peerGet, 'GET'),
        bareGet: await load(`http://127.0.0.1:${barePort}/bare`, 'GET'),
        post: await load(`${services.client.base}/deploy`, 'POST', postBody),
        sqlitePost: await load(`http://127.0.0.1:${sqlite.port}/deploy`, 'POST', postBody),
        bullmqPost: bullmq === null ? null : await load(`http://127.0.0.1:${bullmq.port}/deploy`, 'POST', postBody),
        barePost: await load(`http://127.0.0.1:${barePort}/bare`, 'POST', postBody),
      });
    }
    for (const r of rounds) {
      for (const [name, result] of Object.entries(r)) {
        if (result !== null && (result.non2xx > 0 || result.errors > 0)) throw new Error(`${name} under load: ${result.non2xx} non-2xx answers, ${result.errors} errors`);
      }
    }
    const rps = (pick: (r: Round) => Load | null) => Math.round(quantile(rounds.map((r) => pick(r)?.requestsPerSecond ?? Number.NaN), 0.5));
    const ratios = (ours: (r: Round) => Load, peer: (r: Round) => Load | null) => rounds.map((r) => ours(r).requestsPerSecond / (peer(r)?.requestsPerSecond ?? Number.NaN));
    const postSqlite = ratios((r) => r.post, (r) => r.sqlitePost);
    const statusSqlite = ratios((r) => r.status, (r) => r.sqliteGet);
    const postBullmq = bullmq === null ? null : ratios((r) => r.post, (r) => r.bullmqPost);
    const postBare = ratios((r) => r.post, (r) => r.barePost);
    const statusBare = ratios((r) => r.status, (r) => r.bareGet);
    raw.http = { postResponseBytes, statusResponseBytes, requestBytes: postBody.length, rounds, ratios: { postSqlite, statusSqlite, postBullmq, postBare, statusBare }, secondsEach: SIZES.httpSeconds, connections: 50 };

    figure('post_sqlite_ratio', 'POST /deploy req/s ÷ SQLite peer (WAL, NORMAL), same body (median round)', medianRatio(postSqlite), 'ratio', { op: '>=', limit: 1 });
    if (postBullmq !== null) figure('post_bullmq_ratio', 'POST /deploy req/s ÷ BullMQ peer (Redis AOF everysec), same body (median round)', medianRatio(postBullmq), 'ratio', { op: '>=', limit: 0.5 });
    figure('status_sqlite_ratio', 'GET /deploy/:id/status req/s ÷ SQLite point-read peer, same answer (median round)', medianRatio(statusSqlite), 'ratio', { op: '>=', limit: 1.2 });
    figure('post_rps', 'POST /deploy req/s (median round)', rps((r) => r.post), 'req/s');
    figure('sqlite_post_rps', 'SQLite peer POST req/s (median round)', rps((r) => r.sqlitePost), 'req/s');
    if (bullmq !== null) figure('bullmq_post_rps', 'BullMQ peer POST req/s (median round)', rps((r) => r.bullmqPost), 'req/s');
    figure('status_rps', 'GET status req/s (median round)', rps((r) => r.status), 'req/s');
    figure('sqlite_status_rps', 'SQLite peer status req/s (median round)', rps((r) => r.sqliteGet), 'req/s');
    // The bare routes are information, not targets: no durable service can approach them (issue 16).
    figure('post_rps_ratio', 'POST /deploy req/s ÷ bare POST route, same body and answer size (median round; information)', medianRatio(postBare), 'ratio');
    figure('status_rps_ratio', 'GET /deploy/:id/status req/s ÷ bare GET route, same answer size (median round; information)', medianRatio(statusBare), 'ratio');
    figure('bare_post_rps', 'bare POST route req/s (median round)', rps((r) => r.barePost), 'req/s');
    figure('bare_get_rps', 'bare GET route req/s (median round)', rps((r) => r.bareGet), 'req/s');
    const median = (pick: (r: Round) => Load) => [...rounds].map(pick).sort((a, b) => a.requestsPerSecond - b.requestsPerSecond)[Math.floor(rounds.length / 2)]!;
    figure('post_latency_p50', 'POST /deploy latency under load, p50', median((r) => r.post).p50, 'ms');
    figure('post_latency_p99', 'POST /deploy latency under load, p99', median((r) => r.post).p99, 'ms');
    figure('status_latency_p50', 'GET status latency under load, p50', median((r) => r.status).p50, 'ms');
    figure('status_latency_p99', 'GET status latency under load, p99', median((r) => r.status).p99, 'ms');

    // Database file I/O per POST, ours and the SQLite peer's, counted by strace over the same number
    // of POSTs at the same concurrency (strace slows both alike; the counts, not the times, are the figure).
    const posts = SIZES.ioPosts;
    const io: Record<string, { writes: number; reads: number } | null> = {};
    for (const [name, pid, db, url] of !straceUsable() ? [] : [
      ['ours', services.api.child.pid, join(services.dataDir, 'zepid.db'), `${services.client.base}/deploy`],
      ['sqlite', sqlite.service.child.pid, sqlite.db, `http://127.0.0.1:${sqlite.port}/deploy`],
    ] as const) {
      io[name] = pid === undefined ? null : await countDatabaseIo(pid, db, peerDir, async () => {
        const result = await autocannon({ url, method: 'POST', body: postBody, headers: HEADERS, connections: 50, amount: posts });
        if (result.non2xx > 0 || result.errors > 0) throw new Error(`${name} under strace: ${result.non2xx} non-2xx, ${result.errors} errors`);
      });
    }
    raw.databaseIo = { posts, connections: 50, ...io };
    if (io.ours === null || io.ours === undefined || io.sqlite === null || io.sqlite === undefined) {
      progress('database writes per POST skipped: strace is not installed or cannot attach (apt-get install strace)');
      ((raw.skipped ??= []) as string[]).push('database writes per POST: strace unavailable');
    } else {
      const per = (n: number) => round(n / posts, 2);
      figure('db_writes_ratio', 'database file writes per POST ÷ SQLite peer\'s (strace)', round(io.ours.writes / io.sqlite.writes, 2), 'ratio', { op: '<=', limit: 1.5 });
      figure('db_writes_per_post', 'database file writes per POST (strace)', per(io.ours.writes), '');
      figure('sqlite_db_writes_per_post', 'SQLite peer: database file writes per POST (strace)', per(io.sqlite.writes), '');
      figure('db_reads_per_post', 'database file reads per POST (strace)', per(io.ours.reads), '');
      figure('sqlite_db_reads_per_post', 'SQLite peer: database file reads per POST (strace)', per(io.sqlite.reads), '');
    }
  } finally {
    for (const stop of stops.reverse()) await stop();
    await rm(peerDir, { recursive: true, force: true, maxRetries: 3 });
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
    const statsFile = join(tmpdir(), `zepid-bench-pickup-${process.pid}.json`);
    const services = await startServices({ worker: 'instant', workerEnv: { BENCH_STATS_FILE: statsFile } });
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
      // Where the pickup goes: 202 → the worker's first write of the attempt (queue wake-up, receive,
      // read) and → validate starting (the workflow's writes before it).
      const between = (from: (r: Doc) => string | null, to: (r: Doc) => string | null) => {
        const ms = records.map((record) => Date.parse(to(record) ?? '') - Date.parse(from(record) ?? '')).filter(Number.isFinite);
        return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99) };
      };
      const parts = {
        toAttemptStarted: between((r) => r.createdAt, (r) => r.attemptStartedAt),
        attemptToValidate: between((r) => r.attemptStartedAt, (r) => r.steps.validate.startedAt),
      };
      progress(`pickup parts (p50/p99 ms): 202 → attempt started ${parts.toAttemptStarted.p50}/${parts.toAttemptStarted.p99}; → validate started ${parts.attemptToValidate.p50}/${parts.attemptToValidate.p99}`);
      // The worker's event-loop delay over the phase: how long a ready callback (a doorbell ring, a
      // received job) waited for the loop; SQLite's busy handler sleeping in it showed here (BENCHMARKS.md).
      await services.worker.stop();
      const stats = JSON.parse(await readFile(statsFile, 'utf8')) as Record<string, number>;
      await rm(statsFile, { force: true });
      raw.pickupMs = { count: pickup.length, max: Math.max(...pickup), arrivalsPerSecond: 1000 / SIZES.pickupEveryMs, parts, workerLoopDelayMs: { p99: stats.loopDelayP99Ms, max: stats.loopDelayMaxMs } };
      figure('pickup_p50', `202 → worker starts validate, ${SIZES.pickup} deployments at ${1000 / SIZES.pickupEveryMs}/s, p50`, quantile(pickup, 0.5), 'ms', { op: '<=', limit: 20 });
      figure('pickup_p99', `202 → worker starts validate, p99`, quantile(pickup, 0.99), 'ms', { op: '<=', limit: 100 });
      figure('pickup_worker_loop_delay_p99', 'worker event-loop delay during the pickup run, p99', round(stats.loopDelayP99Ms ?? Number.NaN, 1), 'ms');
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
      // The worker's CPU (user + system) per deployment: what it costs, less bent by a busy machine than the rate.
      figure(`worker_cpu_c${concurrency}`, `worker CPU per deployment (user + system), concurrency ${concurrency}`, round(((stats.cpuUserMs ?? 0) + (stats.cpuSystemMs ?? 0)) / records.length, 2), 'ms');
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
/**
 * The dependency cache: the same app redeployed with one source file changed, POST → URL answers, on
 * two workers side by side (each with its own API and data dir), one with the cache and one with it
 * off; a warm-up deployment on each first (it fills the npm cache of both, and the dependency cache of
 * the one that has it), then alternating rounds. The figure is the median of per-round ratios.
 */
async function phaseBuildCache(kind: 'vite' | 'next'): Promise<void> {
  progress(`phase 5: dependency cache, ${kind} app with one source file changed, cached vs uncached`);
  const { execFileSync } = await import('node:child_process');
  const templates = await import('../test/e2e/templates.ts');
  const work = await mkdtemp(join(tmpdir(), 'zepid-bench-cache-'));
  const box = { dir: work, env: { ...(process.env as Record<string, string>), npm_config_cache: join(root, '.cache', 'npm'), npm_config_update_notifier: 'false' } };
  const app = kind === 'vite' ? await templates.viteReactTs(box) : await templates.nextApp(box);
  execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund'], { cwd: app, env: box.env, stdio: 'ignore', timeout: 300_000 });
  const edited = kind === 'vite' ? join(app, 'src', 'App.tsx') : join(app, 'app', 'page.js');
  const original = await readFile(edited, 'utf8');
  const cached = await startServices({ worker: 'real' });
  const uncached = await startServices({ worker: 'real', workerEnv: { LOCAL_BUILD_CACHE_MAX_MB: '0' } });
  try {
    const deploy = async (services: Services, marker: string) => {
      // A source change the build sees (Vite's <h1>), or a comment line (Next's page): either way a new source, so no build reuse.
      await writeFile(edited, kind === 'vite' ? original.replace('</h1>', ` ${marker}</h1>`) : `${original}\n// ${marker}\n`);
      const body = { projectId: `bench-cache-${kind}`, organizationId: 'local', userId: 'bench', files: await templates.filesOf(app) };
      const result = await deployToUrl(services, body);
      const logs = (await (await fetch(`${services.client.base}/deploy/${result.id}/logs`, { headers: HEADERS })).json()) as { logs: { message: string }[] };
      // Where the time went: each step's duration (the build step holds the restore or install and the build).
      const status = (await (await fetch(`${services.client.base}/deploy/${result.id}/status`, { headers: HEADERS })).json()) as { steps: Record<string, { startedAt: string | null; finishedAt: string | null }> };
      const steps = Object.fromEntries(
        Object.entries(status.steps).map(([step, state]) => [step, state.startedAt === null || state.finishedAt === null ? null : Date.parse(state.finishedAt) - Date.parse(state.startedAt)]),
      );
      return { ms: result.ms, steps, restored: logs.logs.some((line) => line.message.startsWith('dependencies restored from the cache')) };
    };
    const warm = { cached: await deploy(cached, 'warm-up'), uncached: await deploy(uncached, 'warm-up') };
    const rounds: { cachedMs: number; uncachedMs: number; cachedSteps: Record<string, number | null>; uncachedSteps: Record<string, number | null> }[] = [];
    const roundCount = kind === 'vite' ? 3 : 2;
    for (let run = 0; run < roundCount; run += 1) {
      const on = await deploy(cached, `round ${run} ${Date.now()}`);
      const off = await deploy(uncached, `round ${run} ${Date.now()}`);
      if (!on.restored || off.restored) throw new Error(`dependency cache bench: round ${run} restored=${on.restored} with the cache, ${off.restored} without`);
      rounds.push({ cachedMs: round(on.ms), uncachedMs: round(off.ms), cachedSteps: on.steps, uncachedSteps: off.steps });
    }
    raw[`build_cache_${kind}`] = { warmUpMs: { cached: round(warm.cached.ms), uncached: round(warm.uncached.ms) }, rounds };
    const ratios = rounds.map((pair) => pair.cachedMs / pair.uncachedMs);
    figure(`build_cache_ratio_${kind}`, `${kind} app, one source file changed, POST → URL: dependencies cached ÷ not (median)`, medianRatio(ratios), 'ratio', { op: '<=', limit: kind === 'vite' ? 0.4 : 0.5 });
    figure(`build_cache_${kind}_cached_ms`, `${kind} app, one source file changed, POST → URL with the cache (median)`, round(quantile(rounds.map((pair) => pair.cachedMs), 0.5)), 'ms');
    figure(`build_cache_${kind}_uncached_ms`, `${kind} app, one source file changed, POST → URL without it (median)`, round(quantile(rounds.map((pair) => pair.uncachedMs), 0.5)), 'ms');
  } finally {
    await Promise.all([stopServices(cached), stopServices(uncached)]);
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  }
}

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

/** Live streams and webhooks (scripts/bench/streams.ts): its own API and worker on a new data dir. */
async function phaseStreams(): Promise<void> {
  const sizes = smoke ? STREAM_SIZES.smoke : STREAM_SIZES.full;
  progress(`phase 5: live streams and webhooks: ${sizes.writes} log lines to an SSE client, ${sizes.idle} idle streams, ${sizes.webhooks} webhook deliveries`);
  const got = await measureStreams(sizes, (message) => progress(`streams: ${message}`));
  raw.streams = { sizes, figures: got };
  const value = (id: string) => {
    const found = got[id];
    if (found === undefined) throw new Error(`the streams bench reported no ${id}`);
    return found;
  };
  figure('sse_latency_p50', 'log line written (worker\'s adapters) → SSE client has the event, p50', value('sse_latency_p50'), 'ms', { op: '<=', limit: 50 });
  figure('sse_latency_p99', 'log line written → SSE client has it, p99', value('sse_latency_p99'), 'ms');
  figure('sse_latency_busy_p50', `the same with ${sizes.idle} idle streams open on the API, p50`, value('sse_latency_busy_p50'), 'ms');
  figure('sse_latency_busy_p99', `the same with ${sizes.idle} idle streams open, p99`, value('sse_latency_busy_p99'), 'ms');
  figure('rss_api_streams_0', 'API RSS before the idle streams', value('rss_api_streams_0'), 'MB');
  figure('rss_api_streams_open', `API RSS with ${sizes.idle} idle SSE streams`, value('rss_api_streams_open'), 'MB', { op: '<=', limit: 120 });
  figure('rss_api_per_stream_kb', 'API RSS per idle SSE stream', value('rss_api_per_stream_kb'), 'KB');
  figure('webhook_latency_p50', 'status written → signed webhook request at the receiver (real worker\'s dispatcher), p50', value('webhook_latency_p50'), 'ms');
  figure('webhook_latency_p99', 'status written → webhook request at the receiver, p99', value('webhook_latency_p99'), 'ms');
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
  if (PHASES.has('real') || PHASES.has('http') || PHASES.has('static')) {
    const real = await phaseRealServices();
    services = real.services;
    if (PHASES.has('http') || PHASES.has('static')) await phaseStatic(real.services, real.probeUrl);
    if (PHASES.has('http')) await phaseHttp(real.services, real.probeId);
    await stopServices(real.services);
    services = null;
  }
  if (PHASES.has('instant')) await phaseInstantWorker();
  if (PHASES.has('queue')) await phaseQueues();
  if (PHASES.has('buildcache')) await phaseBuildCache('vite');
  if (PHASES.has('buildcache-next')) await phaseBuildCache('next');
  if (PHASES.has('streams')) await phaseStreams();
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
