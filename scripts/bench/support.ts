/** Process, HTTP and statistics helpers of `npm run bench`. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { Dirent } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { SERVICE_NODE_FLAGS } from '../node-flags.ts';

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const TOKEN = 'bench-token-0123456789abcdef';
export const HEADERS = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

/** The V8 flags `npm start` and the images run the services with (see scripts/start.ts). */
export { SERVICE_NODE_FLAGS };

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

export interface Service {
  readonly name: string;
  readonly child: ChildProcess;
  /** Last lines of its output, for the error when it dies. */
  readonly output: readonly string[];
  stop(): Promise<void>;
  /** Resident set size in MB, from /proc (Linux); NaN where unavailable. */
  rssMb(): number;
}

/**
 * Starts `node <flags> <entry>` with `env` added. Its output goes to `<logDir>/<name>.log` (a file,
 * not a pipe: reading a busy service's access log would take CPU from the load generator).
 */
export function startService(name: string, entry: string, env: Record<string, string>, nodeFlags: readonly string[], logDir: string): Service {
  const logFile = join(logDir, `${name}-${Date.now()}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [...nodeFlags, entry], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return {
    name,
    child,
    get output() {
      try {
        return readFileSync(logFile, 'utf8').split('\n').slice(-50);
      } catch {
        return [];
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      if ((await Promise.race([exited, sleep(20_000, 'timeout')])) === 'timeout') child.kill('SIGKILL');
    },
    rssMb() {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
        return kb / 1024;
      } catch {
        return Number.NaN;
      }
    },
  };
}

/** Waits until `url` answers `expect` (200) to `init`, or fails with the service's last output. */
export async function waitReady(service: Service, url: string, timeoutMs = 30_000, init: RequestInit = {}, expect = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (service.child.exitCode !== null) break;
    const status = await fetch(url, init).then((response) => response.status, () => 0);
    if (status === expect) return;
    await sleep(50);
  }
  throw new Error(`${service.name} did not become ready at ${url}:\n${service.output.slice(-15).join('\n')}`);
}

/** One GET through the local router with the app's Host header; the status code, 0 when nothing answers. */
export function getViaRouter(url: string): Promise<number> {
  const parsed = new URL(url);
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: Number(parsed.port), path: parsed.pathname, headers: { host: parsed.host } }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

export interface StatusBody {
  deploymentId: string;
  status: string;
  url: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
  source?: { storedBytes?: number; storedFiles?: number };
}

export class ApiClient {
  readonly base: string;
  constructor(base: string) {
    this.base = base;
  }

  async post(body: unknown): Promise<string> {
    const response = await fetch(`${this.base}/deploy`, { method: 'POST', headers: HEADERS, body: JSON.stringify(body) });
    const answer = (await response.json()) as { deploymentId?: string; error?: { message: string } };
    if (response.status !== 202 || answer.deploymentId === undefined) throw new Error(`POST /deploy answered ${response.status}: ${JSON.stringify(answer)}`);
    return answer.deploymentId;
  }

  async status(id: string): Promise<StatusBody> {
    return (await (await fetch(`${this.base}/deploy/${id}/status`, { headers: HEADERS })).json()) as StatusBody;
  }

  /** Polls (every `everyMs`) until the deployment is terminal. */
  async settle(id: string, everyMs = 5, timeoutMs = 300_000): Promise<StatusBody> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const current = await this.status(id);
      if (['completed', 'failed', 'cancelled'].includes(current.status)) return current;
      if (Date.now() > deadline) throw new Error(`deployment ${id} still ${current.status} after ${timeoutMs} ms`);
      await sleep(everyMs);
    }
  }
}

/** Bytes in regular files under a directory; 0 when it does not exist. */
export function duBytes(dir: string): number {
  let total = 0;
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) total += duBytes(full);
    else if (entry.isFile()) total += statSync(full, { throwIfNoEntry: false })?.size ?? 0;
  }
  return total;
}

/**
 * A data dir holding one finished deployment of `examples/static-site.json` (the real API and the
 * instant worker of this checkout, both stopped again): what the A/B tools start their APIs on.
 */
export async function seedDataDir(dir: string, env: Record<string, string>, logDir: string): Promise<{ id: string }> {
  const [apiPort, healthPort] = [await freePort(), await freePort()];
  const api = startService('seed-api', 'apps/api/src/server.ts', { ...env, DATA_DIR: dir, PORT: String(apiPort) }, SERVICE_NODE_FLAGS, logDir);
  const worker = startService('seed-worker', 'scripts/bench/instant-worker.ts', { ...env, DATA_DIR: dir, HEALTH_PORT: String(healthPort) }, SERVICE_NODE_FLAGS, logDir);
  try {
    await waitReady(api, `http://127.0.0.1:${apiPort}/health/ready`, 120_000);
    await waitReady(worker, `http://127.0.0.1:${healthPort}/health/ready`, 120_000);
    const client = new ApiClient(`http://127.0.0.1:${apiPort}`);
    const sample = JSON.parse(readFileSync(join(root, 'examples/static-site.json'), 'utf8')) as unknown;
    const id = await client.post(sample);
    const done = await client.settle(id);
    if (done.status !== 'completed') throw new Error(`the seed deployment ended ${done.status}`);
    return { id };
  } finally {
    await Promise.all([worker.stop(), api.stop()]);
  }
}
