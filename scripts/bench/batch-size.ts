/**
 * How many POST /deploy share each group commit (SqliteDatabase.batch) under the bench's load:
 * the real API (as `npm start` runs it, worker stopped) with `count-batches.mjs` preloaded, autocannon
 * with 50 connections posting `examples/static-site.json`; prints the commits, the POSTs per commit
 * (mean, median, by size) and req/s; then, where strace can attach, the database file reads and writes
 * per POST over 2,000 more POSTs (as `npm run bench` counts them).
 *
 *   node --import=./scripts/precompiled-loader.mjs scripts/bench/batch-size.ts [seconds] [connections]
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { countDatabaseIo } from './peers/harness.ts';
import { freePort, HEADERS, SERVICE_NODE_FLAGS, startService, TOKEN, waitReady } from './support.ts';

const seconds = Number(process.argv[2] ?? 8);
const connections = Number(process.argv[3] ?? 50);
const dir = await mkdtemp(join(tmpdir(), 'zepid-batch-size-'));
const counts = join(dir, 'batch-counts.json');
const port = await freePort();
const env = { DATA_DIR: dir, PORT: String(port), DEPLOY_API_TOKENS: `local:${TOKEN}`, LOG_LEVEL: 'info', MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '1000000', RATE_LIMIT_PER_MINUTE: '1000000', BATCH_COUNTS_FILE: counts };
const api = startService('api-batches', 'apps/api/src/server.ts', env, [...SERVICE_NODE_FLAGS, '--import=./scripts/bench/count-batches.mjs'], dir);
try {
  await waitReady(api, `http://127.0.0.1:${port}/health/ready`, 120_000);
  const sample = JSON.parse(await readFile('examples/static-site.json', 'utf8')) as Record<string, unknown>;
  const options = { url: `http://127.0.0.1:${port}/deploy`, method: 'POST' as const, headers: HEADERS, body: JSON.stringify({ ...sample, projectId: 'batch-size' }), connections };
  await autocannon({ ...options, duration: 1 });
  const result = await autocannon({ ...options, duration: seconds });
  if (result.non2xx > 0) throw new Error(`${result.non2xx} answers were not 2xx`);
  const posts = 2000;
  const io = api.child.pid === undefined ? null : await countDatabaseIo(api.child.pid, join(dir, 'zepid.db'), dir, async () => {
    const traced = await autocannon({ ...options, amount: posts });
    if (traced.non2xx > 0 || traced.errors > 0) throw new Error(`under strace: ${traced.non2xx} non-2xx, ${traced.errors} errors`);
  });
  await api.stop();
  console.log(io === null ? 'database I/O not counted: strace is missing or cannot attach' : `database file writes / reads per POST (strace, ${posts} POSTs): ${(io.writes / posts).toFixed(2)} / ${(io.reads / posts).toFixed(2)}`);
  const sizes = Object.entries(JSON.parse(await readFile(counts, 'utf8')) as Record<string, number>).map(([size, n]) => [Number(size), n] as const);
  const commits = sizes.reduce((sum, [, n]) => sum + n, 0);
  const calls = sizes.reduce((sum, [size, n]) => sum + size * n, 0);
  const sorted = sizes.sort((a, b) => a[0] - b[0]);
  let seen = 0;
  const median = sorted.find(([, n]) => (seen += n) >= commits / 2)?.[0];
  console.log(`${connections} connections, ${seconds} s: ${Math.round(result.requests.average)} req/s; ${commits} group commits carried ${calls} calls (the warm-up included): mean ${(calls / commits).toFixed(1)}, median ${median} per commit`);
  console.log(`calls per commit: ${sorted.map(([size, n]) => `${size}×${n}`).join(', ')}`);
} finally {
  await api.stop();
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
