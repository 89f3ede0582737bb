/**
 * CPU time per request of POST /deploy or GET /deploy/:id/status, this checkout against another
 * (the code before a change: `git worktree add`, or `git archive` plus a copy of node_modules),
 * **both in one process**: each checkout's API app is built from its own sources (its own module
 * graph and node_modules) on its own copy of one seeded data dir, and requests go in through
 * Fastify's `inject` (no sockets: the HTTP layer is the same on both sides and not measured).
 * Waves of 50 concurrent requests (so group commits hold ~50 POSTs each, as under autocannon's 50
 * connections), alternating sides every few waves, `process.cpuUsage()` around each side's waves.
 *
 * Why: on the shared 2-core machine, figures from separate processes (ab.ts) move with what the
 * neighbours do — a starved process pays more CPU per request, and group commits shrink or grow
 * with how much of a core it gets. Here both sides run on the same core in turns a fraction of a
 * second apart, with the same batching. A full GC runs (not measured) before each side's turn, so
 * one side's garbage is not collected in the other's time.
 *
 *   node --expose-gc --max-semi-space-size=4 --import=./scripts/precompiled-loader.mjs scripts/bench/ab-inprocess.ts <other checkout> [status|post|redeploy] [rounds] [--http]
 *
 * `--http`: through sockets instead of `inject` (which costs more than a kept status answer itself,
 * so it dilutes a change to the route several times over): each side listens on loopback, a child
 * process (`load-child.ts`, autocannon, 50 connections) sends each turn's requests to one side at a
 * time, and this process's CPU time over the turn (only the servers run here) is divided by the
 * requests. The HTTP parsing and the socket writes are then measured, as the bench's figure has them.
 *
 * post: project `ab-post` (no app record, no finished deployment: the bench's POST); redeploy: the
 * seeded deployment's own project (an app with a live deployment); status: the seeded deployment,
 * finished more than 10 s before (the kept answer).
 *
 * AB_IDEMPOTENCY=1: each POST with a new Idempotency-Key (the CLI's way), without --http.
 * AB_WAVES=<n>: waves of 50 per turn (default 6 for POST, 20 for status, 60 for status with --http). AB_PROFILE=<waves>: after
 * the rounds (0 rounds: only this), each side alone under V8's CPU profiler and sampling heap
 * profiler for that many waves: CPU µs, bytes allocated and GCs per request, the top functions by
 * self time, by inclusive time (ours and the frameworks'), and by bytes allocated (AB_TOP of each).
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { precompile } from '../precompiled.mjs';
import { HEADERS, quantile, root, seedDataDir, TOKEN } from './support.ts';
// The other checkout's modules have the same shape as ours (the A/B is about small changes).
import type * as AppModule from '../../apps/api/src/app.ts';
import type * as AuthModule from '../../apps/api/src/auth.ts';
import type * as DeploymentsModule from '../../apps/api/src/deployments.ts';
import type * as EnvModule from '../../apps/api/src/env.ts';
import type * as WiringModule from '../../apps/api/src/wiring.ts';
import type * as CoreModule from '../../packages/core/src/index.ts';

const other = resolve(process.argv[2] ?? '');
const route = process.argv[3] ?? 'post';
if (route !== 'status' && route !== 'post' && route !== 'redeploy') throw new Error(`route must be status, post or redeploy, not ${route}`);
const rounds = Number(process.argv[4] ?? 10);
const http = process.argv.includes('--http');
/** AB_IDEMPOTENCY=1: every POST with its own Idempotency-Key, as the CLI sends (through `inject` only). */
const keyed = process.env.AB_IDEMPOTENCY === '1';
const WAVE = 50;
const WAVES_PER_TURN = Number(process.env.AB_WAVES ?? (route === 'status' ? (http ? 60 : 20) : 6));
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

for (const checkout of [root, other]) precompile({ root: checkout });
const work = await mkdtemp(join(tmpdir(), 'zepid-ab-inprocess-'));
const env = { DEPLOY_API_TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000' };
const { id } = await seedDataDir(join(work, 'seed'), env, work);
if (route === 'status') await sleep(10_500);
const sample = JSON.parse(await readFile(join(root, 'examples/static-site.json'), 'utf8')) as Record<string, unknown>;
const body = JSON.stringify(route === 'redeploy' ? sample : { ...sample, projectId: 'ab-post' });

interface Injected { statusCode: number }
interface Side {
  name: string;
  inject: (options: { method: string; url: string; headers: Record<string, string>; payload?: string }) => Promise<Injected>;
  /** With --http: where the side listens. */
  base: string;
  close: () => Promise<void>;
}

/** Builds `checkout`'s API app as its server.ts does, on a copy of the seeded data dir; the access log goes to a file, as the services' does. */
async function build(name: string, checkout: string): Promise<Side> {
  const dataDir = join(work, name);
  await cp(join(work, 'seed'), dataDir, { recursive: true });
  const from = <T>(path: string) => import(pathToFileURL(join(checkout, path)).href) as Promise<T>;
  const [{ buildApp }, { TokenRegistry }, { DeploymentService }, { loadApiEnv }, wiring, core] = await Promise.all([
    from<typeof AppModule>('apps/api/src/app.ts'),
    from<typeof AuthModule>('apps/api/src/auth.ts'),
    from<typeof DeploymentsModule>('apps/api/src/deployments.ts'),
    from<typeof EnvModule>('apps/api/src/env.ts'),
    from<typeof WiringModule>('apps/api/src/wiring.ts'),
    from<typeof CoreModule>('packages/core/src/index.ts'),
  ]);
  const apiEnv = loadApiEnv({ ...env, DATA_DIR: dataDir });
  const logger = pino({ level: 'info', base: { service: 'api' } }, pino.destination({ dest: join(work, `${name}.log`), sync: true }));
  const adapters = await wiring.createApiAdapters(apiEnv, logger);
  await wiring.startAll(adapters);
  const service = new DeploymentService(adapters, { maxActivePerOrg: apiEnv.MAX_ACTIVE_DEPLOYMENTS_PER_ORG, clock: core.systemClock, logger });
  const app = await buildApp(
    {
      adapters,
      service,
      tokens: TokenRegistry.fromSetting(apiEnv.DEPLOY_API_TOKENS ?? ''),
      mode: 'local',
      startedAt: Date.now(),
      estimatedDuration: 'a few seconds',
      retentionDays: apiEnv.RETENTION_DAYS,
      rateLimitPerMinute: apiEnv.RATE_LIMIT_PER_MINUTE,
      workerStaleMs: 30_000,
      clock: core.systemClock,
      streamsPerToken: apiEnv.SSE_MAX_STREAMS_PER_TOKEN,
      maxStreams: apiEnv.SSE_MAX_STREAMS,
      webhookPolicy: core.webhookPolicyOf(apiEnv),
    },
    logger,
  );
  await app.ready();
  const base = http ? await app.listen({ port: 0, host: '127.0.0.1' }) : '';
  return {
    name,
    base,
    inject: (options) => app.inject(options),
    close: async () => {
      await app.close();
      await wiring.closeAll(adapters);
    },
  };
}

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface HeapNode { callFrame: CallFrame; selfSize: number; children: HeapNode[] }

/**
 * AB_PROFILE=<waves>: each side alone for that many waves under V8's CPU profiler and its sampling
 * heap profiler (inspector, this process; nothing of the start-up in it): CPU µs and bytes allocated
 * per request, the top functions by self time and by bytes allocated, and the garbage collections.
 */
async function profile(all: Side[], turn: (side: Side, waves: number) => Promise<number>, waves: number): Promise<void> {
  const { Session } = await import('node:inspector/promises');
  const { constants, PerformanceObserver } = await import('node:perf_hooks');
  const session = new Session();
  session.connect();
  const where = (frame: CallFrame) => `${frame.functionName || '(anon)'} ${frame.url.replace(/^.*?\/(apps|packages|node_modules|scripts)\//, '$1/')}:${frame.lineNumber + 1}`;
  const top = (totals: Map<string, number>, all: number, unit: (value: number) => string) =>
    [...totals].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.AB_TOP ?? 25)).map(([name, value]) => `  ${((100 * value) / all).toFixed(1).padStart(5)} %  ${unit(value).padStart(9)}  ${name}`).join('\n');
  for (const side of all) {
    const requests = waves * WAVE;
    let gcs = 0;
    let gcMs = 0;
    // By kind (perf_hooks' NODE_PERFORMANCE_GC_*): scavenges (minor) apart from mark-compact (major) and the rest.
    let minor = 0;
    let major = 0;
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        gcs += 1;
        gcMs += entry.duration;
        const kind = (entry as { detail?: { kind?: number } | null }).detail?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MINOR) minor += 1;
        else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) major += 1;
      }
    });
    observer.observe({ entryTypes: ['gc'] });
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 500 });
    await session.post('HeapProfiler.enable');
    await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    await session.post('Profiler.start');
    const cpu = await turn(side, waves);
    const { profile: cpuProfile } = (await session.post('Profiler.stop')) as unknown as { profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] } };
    const { profile: heap } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: HeapNode } };
    observer.disconnect();
    const self = new Map<string, number>();
    const byId = new Map(cpuProfile.nodes.map((node) => [node.id, node]));
    cpuProfile.samples.forEach((id, index) => {
      const node = byId.get(id);
      if (node === undefined) return;
      const name = where(node.callFrame);
      self.set(name, (self.get(name) ?? 0) + (cpuProfile.timeDeltas[index] ?? 0));
    });
    // Inclusive time: every function on a sample's stack (once per sample) gets the sample's time.
    const parent = new Map<number, number>();
    for (const node of cpuProfile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
    const inclusive = new Map<string, number>();
    cpuProfile.samples.forEach((id, index) => {
      const seen = new Set<string>();
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const node = byId.get(at);
        if (node !== undefined) seen.add(where(node.callFrame));
      }
      for (const name of seen) inclusive.set(name, (inclusive.get(name) ?? 0) + (cpuProfile.timeDeltas[index] ?? 0));
    });
    const busy = [...self].filter(([name]) => !name.startsWith('(idle)')).reduce((sum, [, value]) => sum + value, 0);
    const allocated = new Map<string, number>();
    let bytes = 0;
    const walk = (node: HeapNode) => {
      const name = where(node.callFrame);
      allocated.set(name, (allocated.get(name) ?? 0) + node.selfSize);
      bytes += node.selfSize;
      for (const child of node.children) walk(child);
    };
    walk(heap.head);
    console.log(`--- ${side.name}: ${requests} requests, ${cpu.toFixed(1)} CPU µs per request, ${(bytes / requests / 1024).toFixed(1)} KB allocated per request (sampled), ${((1000 * gcs) / requests).toFixed(1)} GCs (${((1000 * minor) / requests).toFixed(1)} scavenges, ${((1000 * major) / requests).toFixed(1)} mark-compacts) and ${((1000 * gcMs) / requests).toFixed(1)} ms of GC per 1,000`);
    console.log(`self time (of ${(busy / requests).toFixed(0)} µs busy per request):\n${top(self, busy, (value) => `${(value / requests).toFixed(1)} µs`)}`);
    const ours = new Map([...inclusive].filter(([name]) => /apps\/|packages\/|fastify|pino|light-my-request/.test(name)));
    console.log(`inclusive time, our code and the frameworks':\n${top(ours, busy, (value) => `${(value / requests).toFixed(1)} µs`)}`);
    console.log(`allocated:\n${top(allocated, bytes, (value) => `${(value / requests).toFixed(0)} B`)}`);
  }
  session.disconnect();
}

const request: { method: 'GET' | 'POST'; url: string; headers: Record<string, string>; payload?: string } =
  route === 'status' ? { method: 'GET', url: `/deploy/${id}/status`, headers: HEADERS } : { method: 'POST', url: '/deploy', headers: HEADERS, payload: body };
const sides = [await build('this', root), await build('other', other)];
const loader = http ? fork(join(root, 'scripts/bench/load-child.ts'), [], { execArgv: ['--import=./scripts/precompiled-loader.mjs'], cwd: root }) : null;
/** With --http: `amount` requests sent to `side` by the load process, 50 connections. */
const load = (side: Side, amount: number) =>
  new Promise<void>((resolve, reject) => {
    if (loader === null) throw new Error('no load process');
    loader.once('message', (answer: { requests?: number; non2xx?: number; error?: string }) => {
      if (answer.error !== undefined || (answer.non2xx ?? 0) > 0) reject(new Error(`${side.name}: ${answer.error ?? `${String(answer.non2xx)} answers not 2xx`}`));
      else resolve();
    });
    loader.send({ url: `${side.base}${request.url}`, method: request.method, headers: request.headers, body: request.payload, amount, connections: WAVE });
  });
try {
  /** CPU µs per request over `waves` waves of 50 concurrent requests. */
  const turn = async (side: Side, waves: number): Promise<number> => {
    gc();
    const before = process.cpuUsage();
    if (http) {
      await load(side, waves * WAVE);
      const used = process.cpuUsage(before);
      return (used.user + used.system) / (waves * WAVE);
    }
    for (let wave = 0; wave < waves; wave += 1) {
      const answers = await Promise.all(Array.from({ length: WAVE }, () => side.inject(keyed ? { ...request, headers: { ...request.headers, 'idempotency-key': randomUUID() } } : request)));
      const bad = answers.find((answer) => answer.statusCode >= 300);
      if (bad !== undefined) throw new Error(`${side.name}: ${request.method} ${request.url} answered ${bad.statusCode}`);
    }
    const used = process.cpuUsage(before);
    return (used.user + used.system) / (waves * WAVE);
  };
  // Warm-up: the JIT compiles both sides' hot paths before anything is measured.
  for (const side of sides) await turn(side, WAVES_PER_TURN * 2);
  const results: { this: number; other: number }[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const order = round % 2 === 0 ? sides : [...sides].reverse();
    const measured: Record<string, number> = {};
    for (const side of order) measured[side.name] = await turn(side, WAVES_PER_TURN);
    results.push({ this: measured.this ?? Number.NaN, other: measured.other ?? Number.NaN });
    console.log(`round ${round + 1}: this ${measured.this?.toFixed(1)} µs, other ${measured.other?.toFixed(1)} µs per request (other ÷ this ${((measured.other ?? 0) / (measured.this ?? 1)).toFixed(3)})`);
  }
  if (process.env.AB_PROFILE !== undefined) await profile(sides, turn, Number(process.env.AB_PROFILE) || 40);
  const median = (values: number[]) => quantile(values, 0.5);
  const ratios = results.map((r) => r.other / r.this);
  if (rounds > 0) console.log(
    `${route}: CPU µs per request, median: this ${median(results.map((r) => r.this)).toFixed(1)}, other ${median(results.map((r) => r.other)).toFixed(1)}; ` +
      `other ÷ this per round: median ${median(ratios).toFixed(3)}, range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)} (> 1: this checkout costs less)`,
  );
} finally {
  loader?.send('stop');
  for (const side of sides) await side.close();
  await rm(work, { recursive: true, force: true, maxRetries: 3 });
}
