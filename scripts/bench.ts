/**
 * `npm run bench`: speed figures of local mode, measured in one run on this machine (noisy, shared
 * machines: compare ratios within a run, not numbers across runs). Starts the real API and worker
 * on a temp data dir, then measures:
 *   - POST /deploy of the static sample → its URL answering (wall time seen by a client)
 *   - queue pickup: record created → attempt started (server timestamps)
 *   - GET /deploy/:id/status latency idle, and during a burst of POSTs, with their ratio
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const BURST = Number(process.env.BENCH_BURST ?? 200);
const TOKEN = 'bench-token-0123456789abcdef';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
};
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

function getViaRouter(url: string): Promise<number> {
  const parsed = new URL(url);
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: Number(parsed.port), path: '/', headers: { host: parsed.host } }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function main(): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'zepid-bench-'));
  const [apiPort, routerPort] = [await freePort(), await freePort()];
  const api = `http://127.0.0.1:${apiPort}`;
  const service = spawn(process.execPath, ['scripts/start.ts'], {
    cwd: root,
    detached: true,
    stdio: 'ignore',
    env: {
      ...process.env,
      DATA_DIR: dataDir,
      PORT: String(apiPort),
      LOCAL_ROUTER_PORT: String(routerPort),
      DEPLOY_API_TOKENS: `local:${TOKEN}`,
      MAX_ACTIVE_DEPLOYMENTS_PER_ORG: String(BURST + 10),
      RATE_LIMIT_PER_MINUTE: '1000000',
      LOG_LEVEL: 'warn',
    },
  });
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  try {
    for (let i = 0; i < 200 && (await fetch(`${api}/health/ready`).catch(() => null))?.status !== 200; i += 1) await sleep(50);
    const sample = JSON.parse(await readFile(join(root, 'examples', 'static-site.json'), 'utf8')) as { files: { path: string; content: string }[] };
    const post = async (projectId: string, marker: string) => {
      const body = { ...sample, projectId, files: sample.files.map((f) => (f.path === 'index.html' ? { ...f, content: `${f.content}<!-- ${marker} -->` } : f)) };
      const response = await fetch(`${api}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) });
      return ((await response.json()) as { deploymentId: string }).deploymentId;
    };
    const status = async (id: string) =>
      (await (await fetch(`${api}/deploy/${id}/status`, { headers })).json()) as { status: string; url: string | null; createdAt: string; startedAt: string | null };

    const toUrl: number[] = [];
    const pickup: number[] = [];
    for (let run = 0; run <= RUNS; run += 1) {
      const started = performance.now();
      const id = await post('bench-static', `run ${run}`);
      let current = await status(id);
      while (current.status !== 'completed' && current.status !== 'failed') {
        await sleep(5);
        current = await status(id);
      }
      if (current.status !== 'completed' || current.url === null) throw new Error(`deployment ${id} ended ${current.status}`);
      while ((await getViaRouter(current.url)) !== 200) await sleep(5);
      if (run === 0) continue; // warm-up
      toUrl.push(performance.now() - started);
      if (current.startedAt !== null) pickup.push(Date.parse(current.startedAt) - Date.parse(current.createdAt));
    }

    const probeId = await post('bench-probe', 'probe');
    const statusLatency = async (count: number) => {
      const latencies: number[] = [];
      for (let i = 0; i < count; i += 1) {
        const started = performance.now();
        await status(probeId);
        latencies.push(performance.now() - started);
      }
      return latencies;
    };
    const idle = await statusLatency(300);
    const burst = Promise.all(Array.from({ length: BURST }, (_, i) => post(`bench-burst-${i % 50}`, `burst ${i}`)));
    const loaded = await statusLatency(300);
    await burst;

    console.log(`Zepid Deploy local-mode bench (${RUNS} runs, burst of ${BURST} POSTs), node ${process.version}`);
    console.log(`POST /deploy → static site URL answers  p50 ${fmt(quantile(toUrl, 0.5))}  p95 ${fmt(quantile(toUrl, 0.95))}`);
    console.log(`queue pickup (created → attempt started) p50 ${fmt(quantile(pickup, 0.5))}  p95 ${fmt(quantile(pickup, 0.95))}`);
    console.log(`GET status idle                          p50 ${fmt(quantile(idle, 0.5))}  p99 ${fmt(quantile(idle, 0.99))}`);
    console.log(`GET status during POST burst             p50 ${fmt(quantile(loaded, 0.5))}  p99 ${fmt(quantile(loaded, 0.99))}`);
    console.log(`ratio loaded/idle                        p50 ${(quantile(loaded, 0.5) / quantile(idle, 0.5)).toFixed(2)}x  p99 ${(quantile(loaded, 0.99) / quantile(idle, 0.99)).toFixed(2)}x`);
  } finally {
    if (service.pid !== undefined) process.kill(-service.pid, 'SIGTERM');
    await sleep(3000);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

await main();
