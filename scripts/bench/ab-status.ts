/**
 * GET /deploy/:id/status of two checkouts of the API side by side with the SQLite peer's status
 * read, alternating rounds (autocannon, 50 connections): the before/after figure of a change to the
 * GET path, measured in one run. Both APIs read the same data dir (a finished deployment made by the
 * instant worker); the peer answers the same bytes.
 *
 *   node --import=./scripts/precompiled-loader.mjs scripts/bench/ab-status.ts <other checkout> [rounds] [seconds]
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { PEER_NODE_FLAGS } from './peers/harness.ts';
import { ApiClient, freePort, HEADERS, quantile, root, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './support.ts';

const other = resolve(process.argv[2] ?? '');
const rounds = Number(process.argv[3] ?? 3);
const seconds = Number(process.argv[4] ?? 5);
const dataDir = await mkdtemp(join(tmpdir(), 'zepid-ab-'));
const sample = JSON.parse(await readFile(join(root, 'examples/static-site.json'), 'utf8')) as Record<string, unknown>;
const env = { DATA_DIR: dataDir, DEPLOY_API_TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000' };

const [apiPort, otherPort, healthPort, peerPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
const api = startService('api', 'apps/api/src/server.ts', { ...env, PORT: String(apiPort) }, SERVICE_NODE_FLAGS, dataDir);
const worker = startService('worker', 'scripts/bench/instant-worker.ts', { ...env, HEALTH_PORT: String(healthPort) }, SERVICE_NODE_FLAGS, dataDir);
await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`);
await waitReady(worker, `http://127.0.0.1:${healthPort}/health/ready`);
const client = new ApiClient(`http://127.0.0.1:${apiPort}`);
const id = await client.post(sample);
if ((await client.settle(id)).status !== 'completed') throw new Error('probe did not complete');
await worker.stop();
await sleep(10_500);
const answer = await (await fetch(`${client.base}/deploy/${id}/status`, { headers: HEADERS })).text();
// The other checkout's API, started from its own directory with its own loader.
const { spawn } = await import('node:child_process');
// Its access log goes to a file too, as the others' do: a log written to /dev/null costs less.
const otherLog = openSync(join(dataDir, 'other-api.log'), 'a');
const otherApi = spawn(process.execPath, [...SERVICE_NODE_FLAGS, 'apps/api/src/server.ts'], { cwd: other, env: { ...process.env, ...env, PORT: String(otherPort) }, stdio: ['ignore', otherLog, otherLog] });
closeSync(otherLog);
const seed = join(dataDir, 'seed.json');
await writeFile(seed, JSON.stringify({ id, orgId: 'local', body: JSON.parse(answer) as unknown }));
const peer = startService('sqlite-peer', 'scripts/bench/peers/sqlite-peer.ts', { TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', PORT: String(peerPort), DB: join(dataDir, 'peer.db'), SEED_STATUS: seed }, PEER_NODE_FLAGS, dataDir);
const path = `/deploy/${id}/status`;
await waitReady(peer, `http://127.0.0.1:${peerPort}${path}`, 30_000, { headers: HEADERS });
for (let i = 0; i < 200 && (await fetch(`http://127.0.0.1:${otherPort}${path}`, { headers: HEADERS }).then((r) => r.status, () => 0)) !== 200; i += 1) await sleep(100);

/** CPU time (user + system) of a process so far, in ms, from /proc/<pid>/stat (clock ticks of 10 ms). */
const cpuMs = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const pids = new Map<number, number>([
  [apiPort, api.child.pid ?? 0],
  [otherPort, otherApi.pid ?? 0],
  [peerPort, peer.child.pid ?? 0],
]);
/** Requests per second, and the server's CPU time per request in µs: the second depends far less on what else the machine runs. */
const load = async (port: number) => {
  const pid = pids.get(port) ?? 0;
  const before = cpuMs(pid);
  const result = await autocannon({ url: `http://127.0.0.1:${port}${path}`, connections: 50, duration: seconds, headers: HEADERS });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`port ${port}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return { rate: result.requests.average, cpuUs: ((cpuMs(pid) - before) * 1000) / result.requests.total };
};
try {
  for (const port of [apiPort, otherPort, peerPort]) await autocannon({ url: `http://127.0.0.1:${port}${path}`, connections: 50, duration: 1, headers: HEADERS });
  const rows: { ours: number; other: number; peer: number }[] = [];
  const cpu: { ours: number; other: number; peer: number }[] = [];
  for (let round = 0; round < rounds; round += 1) {
    // The order turns each round: a neighbour's burst does not always land on the same side.
    const order = [apiPort, otherPort, peerPort].map((_, i, ports) => ports[(i + round) % ports.length] as number);
    const rates = new Map<number, { rate: number; cpuUs: number }>();
    for (const port of order) rates.set(port, await load(port));
    rows.push({ ours: rates.get(apiPort)?.rate ?? 0, other: rates.get(otherPort)?.rate ?? 0, peer: rates.get(peerPort)?.rate ?? 0 });
    cpu.push({ ours: rates.get(apiPort)?.cpuUs ?? 0, other: rates.get(otherPort)?.cpuUs ?? 0, peer: rates.get(peerPort)?.cpuUs ?? 0 });
    const last = rows.at(-1)!;
    const used = cpu.at(-1)!;
    console.log(
      `round ${round + 1}: this ${Math.round(last.ours)}, other ${Math.round(last.other)}, peer ${Math.round(last.peer)} req/s; this ÷ peer ${(last.ours / last.peer).toFixed(3)}, other ÷ peer ${(last.other / last.peer).toFixed(3)}; CPU per request this ${Math.round(used.ours)}, other ${Math.round(used.other)}, peer ${Math.round(used.peer)} µs`,
    );
  }
  const median = (values: number[]) => quantile(values, 0.5).toFixed(3);
  console.log(
    `CPU per request, median: this ${median(cpu.map((c) => c.ours))}, other ${median(cpu.map((c) => c.other))}, peer ${median(cpu.map((c) => c.peer))} µs; peer ÷ this (CPU-time equivalent of the req/s ratio) ${median(cpu.map((c) => c.peer / c.ours))}, peer ÷ other ${median(cpu.map((c) => c.peer / c.other))}`,
  );
  console.log(`median of per-round ratios: this ÷ peer ${median(rows.map((r) => r.ours / r.peer))}, other ÷ peer ${median(rows.map((r) => r.other / r.peer))}, this ÷ other ${median(rows.map((r) => r.ours / r.other))} (answer ${answer.length} bytes)`);
} finally {
  otherApi.kill('SIGTERM');
  await Promise.all([api.stop(), peer.stop()]);
}
