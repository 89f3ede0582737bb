/**
 * A before/after figure of a change to POST /deploy or GET /deploy/:id/status, measured in one run:
 * the API of this checkout and of another checkout (the code before the change: `git worktree add`
 * or `git archive` plus a copy of node_modules) and the SQLite peer doing the same route, **loaded
 * at the same time** (autocannon, 50 connections each) for several rounds.
 *
 * Two figures per round and service: req/s, and the server's **CPU time per request** (user +
 * system time of the process from /proc over the round ÷ requests served). On a machine shared
 * with other jobs a rate mostly says how much of a core the process got; CPU per request does not
 * count waiting for a core, and loading the sides together means a neighbour's burst lands on all
 * of them at once (rounds one after the other swung ±15 % between sides). Decide with the CPU
 * figure; run an A/A (this checkout as the other) to see the harness's own spread.
 *
 * Each API has its own copy of one data dir holding one finished deployment (real API, instant
 * worker). `status` reads that deployment (past the API's 10 s, so a kept answer can serve it); the
 * peer answers the same bytes. `post` sends `examples/static-site.json` under project `ab-post`, a
 * project with no app record and no finished deployment (as the bench's POST); `redeploy` sends it
 * under the finished deployment's own project (an app with a live deployment, as most deploys are).
 * The peer writes its own database.
 *
 *   node --import=./scripts/precompiled-loader.mjs scripts/bench/ab.ts <other checkout> [status|post|redeploy] [rounds] [seconds]
 *   AB_SOLO=1 node … ab.ts …    each side alone in turn (a change that uses the second core; see `solo`)
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { precompile } from '../precompiled.mjs';
import { PEER_NODE_FLAGS } from './peers/harness.ts';
import { ApiClient, freePort, HEADERS, quantile, root, seedDataDir, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './support.ts';

const other = resolve(process.argv[2] ?? '');
const route = process.argv[3] ?? 'status';
if (route !== 'status' && route !== 'post' && route !== 'redeploy') throw new Error(`route must be status, post or redeploy, not ${route}`);
const rounds = Number(process.argv[4] ?? 5);
const seconds = Number(process.argv[5] ?? 4);
// AB_SOLO=1: each side loaded alone in turn instead of all at once. For a change that moves work to
// another core (such as the writer thread tried on branch s13-writer, BENCHMARKS.md): loaded together, the three services leave no core idle.
const solo = process.env.AB_SOLO === '1';
// Both checkouts run from precompiled sources, as `npm start` runs them.
for (const checkout of [root, other]) precompile({ root: checkout });
const dataDir = await mkdtemp(join(tmpdir(), 'zepid-ab-'));
const sample = JSON.parse(await readFile(join(root, 'examples/static-site.json'), 'utf8')) as Record<string, unknown>;
const postBody = JSON.stringify(route === 'redeploy' ? sample : { ...sample, projectId: 'ab-post' });
const env = { DEPLOY_API_TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000' };

const [apiPort, otherPort, peerPort] = [await freePort(), await freePort(), await freePort()];
const dirs = { this: join(dataDir, 'this'), other: join(dataDir, 'other') };
let api: ReturnType<typeof startService> | null = null;
let otherApi: ReturnType<typeof spawn> | null = null;
let peer: ReturnType<typeof startService> | null = null;
try {
  const { id } = await seedDataDir(dirs.this, env, dataDir);
  // The same state for both APIs: a copy of the data dir, taken with no process holding it.
  await cp(dirs.this, dirs.other, { recursive: true });
  api = startService('api', 'apps/api/src/server.ts', { ...env, DATA_DIR: dirs.this, PORT: String(apiPort) }, SERVICE_NODE_FLAGS, dataDir);
  const client = new ApiClient(`http://127.0.0.1:${apiPort}`);
  // The other checkout's API, started from its own directory with its own loader; its access log
  // goes to a file too, as the others' do (a log written to /dev/null costs less).
  const otherLog = openSync(join(dataDir, 'other-api.log'), 'a');
  otherApi = spawn(process.execPath, [...SERVICE_NODE_FLAGS, 'apps/api/src/server.ts'], { cwd: other, env: { ...process.env, ...env, DATA_DIR: dirs.other, PORT: String(otherPort) }, stdio: ['ignore', otherLog, otherLog] });
  closeSync(otherLog);
  await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`, 120_000);
  for (let i = 0; i < 1200 && (await fetch(`http://127.0.0.1:${otherPort}/health/ready`).then((r) => r.status, () => 0)) !== 200; i += 1) await sleep(100);
  // Past the API's FINAL_LOG_AFTER_MS: a finished deployment's answer can be kept.
  if (route === 'status') await sleep(10_500);
  const answer = await (await fetch(`${client.base}/deploy/${id}/status`, { headers: HEADERS })).text();
  const seed = join(dataDir, 'seed.json');
  await writeFile(seed, JSON.stringify({ id, orgId: 'local', body: JSON.parse(answer) as unknown }));
  peer = startService('sqlite-peer', 'scripts/bench/peers/sqlite-peer.ts', { TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', PORT: String(peerPort), DB: join(dataDir, 'peer.db'), SEED_STATUS: seed }, PEER_NODE_FLAGS, dataDir);
  const path = route === 'status' ? `/deploy/${id}/status` : '/deploy';
  const request = route === 'status' ? { method: 'GET' as const, headers: HEADERS } : { method: 'POST' as const, headers: HEADERS, body: postBody };
  await waitReady(peer, `http://127.0.0.1:${peerPort}/deploy/${id}/status`, 30_000, { headers: HEADERS });

  /** CPU time (user + system) of a process so far, in ms, from /proc/<pid>/stat (clock ticks of 10 ms). */
  const cpuMs = (pid: number, file = `/proc/${pid}/stat`): number => {
    const fields = readFileSync(file, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) * 10;
  };
  /** The same for the process's main thread alone (its task has the process's id): the rest is V8's and libuv's threads, and any thread of ours. */
  const mainCpuMs = (pid: number): number => cpuMs(pid, `/proc/${pid}/task/${pid}/stat`);
  const sides = [
    { name: 'this', port: apiPort, pid: api.child.pid ?? 0 },
    { name: 'other', port: otherPort, pid: otherApi.pid ?? 0 },
    { name: 'peer', port: peerPort, pid: peer.child.pid ?? 0 },
  ];
  const load = async (port: number, pid: number, duration: number) => {
    const [before, mainBefore] = [cpuMs(pid), mainCpuMs(pid)];
    const result = await autocannon({ url: `http://127.0.0.1:${port}${path}`, connections: 50, duration, ...request });
    if (result.non2xx > 0 || result.errors > 0) throw new Error(`port ${port}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    const total = result.requests.total;
    return { rate: result.requests.average, cpuUs: ((cpuMs(pid) - before) * 1000) / total, mainUs: ((mainCpuMs(pid) - mainBefore) * 1000) / total };
  };
  await Promise.all(sides.map((side) => load(side.port, side.pid, 1)));
  const results: Record<string, { rate: number; cpuUs: number; mainUs: number }>[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const measured: Record<string, { rate: number; cpuUs: number; mainUs: number }> = {};
    if (solo) {
      // Each side alone, the order turning each round: as the bench's phase 2 loads ours and the peer.
      for (let turn = 0; turn < sides.length; turn += 1) {
        const side = sides[(round + turn) % sides.length]!;
        measured[side.name] = await load(side.port, side.pid, seconds);
      }
    } else {
      await Promise.all(
        sides.map(async (side) => {
          measured[side.name] = await load(side.port, side.pid, seconds);
        }),
      );
    }
    results.push(measured);
    const line = sides
      .map((side) => `${side.name} ${Math.round(measured[side.name]!.rate)} req/s ${Math.round(measured[side.name]!.cpuUs)} µs (main thread ${Math.round(measured[side.name]!.mainUs)})`)
      .join(', ');
    console.log(`round ${round + 1}: ${line}; this ÷ peer ${(measured.this!.rate / measured.peer!.rate).toFixed(3)}, other ÷ peer ${(measured.other!.rate / measured.peer!.rate).toFixed(3)}`);
  }
  const median = (pick: (r: Record<string, { rate: number; cpuUs: number; mainUs: number }>) => number, digits = 3) => quantile(results.map(pick), 0.5).toFixed(digits);
  console.log(
    `${route}: CPU µs per request, median: this ${median((r) => r.this!.cpuUs, 0)}, other ${median((r) => r.other!.cpuUs, 0)}, peer ${median((r) => r.peer!.cpuUs, 0)}; ` +
      `other ÷ this per round, median ${median((r) => r.other!.cpuUs / r.this!.cpuUs)} (> 1: this checkout costs less); peer ÷ this ${median((r) => r.peer!.cpuUs / r.this!.cpuUs)}, peer ÷ other ${median((r) => r.peer!.cpuUs / r.other!.cpuUs)}`,
  );
  console.log(
    `${route}: main thread's CPU µs per request, median: this ${median((r) => r.this!.mainUs, 0)}, other ${median((r) => r.other!.mainUs, 0)}, peer ${median((r) => r.peer!.mainUs, 0)}; other ÷ this per round, median ${median((r) => r.other!.mainUs / r.this!.mainUs)}`,
  );
  console.log(`${route}: req/s, median of per-round ratios: this ÷ peer ${median((r) => r.this!.rate / r.peer!.rate)}, other ÷ peer ${median((r) => r.other!.rate / r.peer!.rate)}, this ÷ other ${median((r) => r.this!.rate / r.other!.rate)} (status answer ${answer.length} bytes)`);
} finally {
  if (otherApi !== null && otherApi.exitCode === null) {
    const child = otherApi;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGTERM');
    await exited;
  }
  await Promise.all([api?.stop(), peer?.stop()]);
  await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
}
