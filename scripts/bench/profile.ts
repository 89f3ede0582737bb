/**
 * Profiles GET /deploy/:id/status (or POST /deploy) against the SQLite peer's (issue 16): a finished
 * deployment (real API, instant worker), then the API alone and the peer alone, each under
 * autocannon (50 connections) with `--cpu-prof`; prints req/s of both and the top self-time
 * functions of each profile. POST sends `examples/static-site.json` under project `profile-post`.
 *
 *   node --import=./scripts/precompiled-loader.mjs scripts/bench/profile.ts [seconds] [out-dir] [status|post]
 */
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { PEER_NODE_FLAGS } from './peers/harness.ts';
import { ApiClient, freePort, HEADERS, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './support.ts';

const seconds = Number(process.argv[2] ?? 8);
const route = process.argv[4] ?? 'status';
if (route !== 'status' && route !== 'post') throw new Error(`route must be status or post, not ${route}`);
const out = process.argv[3] ?? (await mkdtemp(join(tmpdir(), 'zepid-profile-')));
const dataDir = await mkdtemp(join(tmpdir(), 'zepid-profile-data-'));
const sample = JSON.parse(await readFile('examples/static-site.json', 'utf8')) as Record<string, unknown>;
const env = { DATA_DIR: dataDir, DEPLOY_API_TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000' };

const [apiPort, healthPort] = [await freePort(), await freePort()];
let api = startService('api', 'apps/api/src/server.ts', { ...env, PORT: String(apiPort) }, SERVICE_NODE_FLAGS, dataDir);
const worker = startService('worker', 'scripts/bench/instant-worker.ts', { ...env, HEALTH_PORT: String(healthPort) }, SERVICE_NODE_FLAGS, dataDir);
await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`);
await waitReady(worker, `http://127.0.0.1:${healthPort}/health/ready`);
const client = new ApiClient(`http://127.0.0.1:${apiPort}`);
const id = await client.post(sample);
const done = await client.settle(id);
if (done.status !== 'completed') throw new Error(`probe ended ${done.status}`);
await worker.stop();
// Past FINAL_LOG_AFTER_MS: the answer is kept.
await sleep(10_500);
const answer = await (await fetch(`${client.base}/deploy/${id}/status`, { headers: HEADERS })).text();
await api.stop();

const request = route === 'status' ? { method: 'GET' as const, headers: HEADERS } : { method: 'POST' as const, headers: HEADERS, body: JSON.stringify({ ...sample, projectId: 'profile-post' }) };
const pathOf = (id: string) => (route === 'status' ? `/deploy/${id}/status` : '/deploy');
const load = async (url: string) => {
  await autocannon({ url, connections: 50, duration: 1, ...request });
  const result = await autocannon({ url, connections: 50, duration: seconds, ...request });
  if (result.non2xx > 0) throw new Error(`${url}: ${result.non2xx} non-2xx`);
  return Math.round(result.requests.average);
};

const profDir = (name: string) => join(out, name);
api = startService('api-prof', 'apps/api/src/server.ts', { ...env, PORT: String(apiPort) }, [...SERVICE_NODE_FLAGS, '--cpu-prof', `--cpu-prof-dir=${profDir('ours')}`], dataDir);
await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`);
const ours = await load(`${client.base}${pathOf(id)}`);
await api.stop();

const seed = join(dataDir, 'seed.json');
await writeFile(seed, JSON.stringify({ id, orgId: 'local', body: JSON.parse(answer) as unknown }));
const peerPort = await freePort();
const peerProf = startService(
  'sqlite-peer-prof',
  'scripts/bench/peers/sqlite-peer.ts',
  { TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', PORT: String(peerPort), DB: join(dataDir, 'peer.db'), SEED_STATUS: seed },
  [...PEER_NODE_FLAGS, '--cpu-prof', `--cpu-prof-dir=${profDir('peer')}`],
  dataDir,
);
await waitReady(peerProf, `http://127.0.0.1:${peerPort}/deploy/${id}/status`, 30_000, { headers: HEADERS });
const theirs = await load(`http://127.0.0.1:${peerPort}${pathOf(id)}`);
await peerProf.stop();

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount: number; children?: number[] }
const top = async (dir: string) => {
  const file = (await readdir(dir)).find((name) => name.endsWith('.cpuprofile')) ?? '';
  const profile = JSON.parse(await readFile(join(dir, file), 'utf8')) as { nodes: Node[] };
  const total = profile.nodes.reduce((sum, node) => sum + node.hitCount, 0);
  const byFrame = new Map<string, number>();
  for (const node of profile.nodes) {
    const url = node.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(apps|packages|scripts)\//, '$1/');
    const key = `${node.callFrame.functionName || '(anon)'} ${url}:${node.callFrame.lineNumber}`;
    byFrame.set(key, (byFrame.get(key) ?? 0) + node.hitCount);
  }
  return [...byFrame.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([key, hits]) => `${((100 * hits) / total).toFixed(1).padStart(5)} % ${key}`).join('\n');
};
console.log(`${route} req/s: ours ${ours}, SQLite peer ${theirs}, ratio ${(ours / theirs).toFixed(3)} (answer ${answer.length} bytes)`);
console.log(`--- ours (self time)\n${await top(profDir('ours'))}`);
console.log(`--- peer (self time)\n${await top(profDir('peer'))}`);
console.log(`profiles: ${out}`);
