import type { ChildProcess } from 'node:child_process';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The clone's root, where `npm start` runs. */
export const root = fileURLToPath(new URL('../..', import.meta.url));

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Service {
  process: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
}

/** Starts `npm start` (API + worker) as a user would, in its own process group. */
export function startService(cwd: string, env: Record<string, string>): Service {
  const child = spawn('npm', ['start', '--silent'], { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    process: child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }, 20_000);
      await exited;
      // npm exits before its children: wait until the whole group (API, worker, apps) is gone.
      await waitFor('the service\'s processes to exit', () => !groupAlive(child.pid ?? -1), 30_000);
      clearTimeout(timer);
    },
  };
}

export interface LocalServiceOptions {
  /** The data dir to use (created if missing); without it, a new one is made with `mkdtemp(tmpdir()/<dataDirPrefix>)`. */
  dataDir?: string;
  /** The prefix of the temporary data dir made when `dataDir` is not given (default `zepid-e2e-`). */
  dataDirPrefix?: string;
  /**
   * Variables for `npm start`, over the defaults (free PORT and LOCAL_ROUTER_PORT, DATA_DIR,
   * LOG_LEVEL=warn, DEPLOY_API_TOKENS='' so the dev token is printed).
   */
  env?: Record<string, string>;
  /** A directory put first on the service's PATH: the Node the worker runs builds and apps with. */
  nodeDir?: string;
  /**
   * Seed the builds' npm cache (`<dataDir>/cache/npm`) from this npm cache with hard links (cacache
   * files are content-addressed and never change), so builds fetch little from the registry.
   */
  seedNpmCache?: string;
  /** Wait for the printed dev token; default: when DEPLOY_API_TOKENS is empty (the service prints one then). */
  devToken?: boolean;
  /** How long to wait for the dev token and for the worker's heartbeat, each (default 30 s). */
  timeoutMs?: number;
}

export interface LocalService {
  service: Service;
  /** `http://127.0.0.1:<PORT>` */
  api: string;
  apiPort: number;
  routerPort: number;
  /** The dev token the service printed; '' when it was not waited for. */
  token: string;
  dataDir: string;
  /** Everything given to `npm start` over process.env: pass it to `startService(root, env)` to restart the same service. */
  env: Record<string, string>;
}

/**
 * Starts `npm start` on free ports as a user would, waits for the printed dev token (when there is
 * one) and for a worker heartbeat (GET /health/detailed answering 200). If it does not come up in
 * time, the service is stopped, a data dir made here is removed, and the error carries its output.
 */
export async function startLocalService(options: LocalServiceOptions = {}): Promise<LocalService> {
  const madeDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), options.dataDirPrefix ?? 'zepid-e2e-')));
  if (!madeDataDir) await mkdir(dataDir, { recursive: true });
  if (options.seedNpmCache !== undefined) {
    await mkdir(join(dataDir, 'cache', 'npm'), { recursive: true });
    if (existsSync(options.seedNpmCache)) execFileSync('cp', ['-al', `${options.seedNpmCache}/.`, join(dataDir, 'cache', 'npm')]);
  }
  const [apiPort, routerPort] = [await freePort(), await freePort()];
  const api = `http://127.0.0.1:${apiPort}`;
  const env: Record<string, string> = {
    ...(options.nodeDir === undefined ? {} : { PATH: `${options.nodeDir}:${process.env.PATH ?? ''}` }),
    DATA_DIR: dataDir,
    PORT: String(apiPort),
    LOCAL_ROUTER_PORT: String(routerPort),
    LOG_LEVEL: 'warn',
    DEPLOY_API_TOKENS: '',
    // The tests poll every 50 ms (waitFor), several deployments at once: at the default 600 requests a
    // minute per token a poll gets 429 until the minute ends (the frameworks e2e lost up to 60 s per
    // deployment to it). The limit itself is tested in apps/api/test/api.test.ts.
    RATE_LIMIT_PER_MINUTE: '100000',
    ...options.env,
  };
  const timeoutMs = options.timeoutMs ?? 30_000;
  const service = startService(root, env);
  let token = '';
  try {
    if (options.devToken ?? env.DEPLOY_API_TOKENS === '') {
      await waitFor('the dev token to be printed', () => /export TOKEN=(\S+)/.test(service.output()), timeoutMs);
      token = /export TOKEN=(\S+)/.exec(service.output())?.[1] ?? '';
    }
    await waitFor('a worker heartbeat', async () => (await fetch(`${api}/health/detailed`).catch(() => null))?.status === 200, timeoutMs);
  } catch (error) {
    await service.stop();
    if (madeDataDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    throw new Error(`npm start did not come up: ${(error as Error).message}; its output:\n${service.output().slice(-4000)}`, { cause: error });
  }
  return { service, api, apiPort, routerPort, token, dataDir, env };
}

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * GET a URL of the local router. `http://<app>.localhost:<port>/` is resolved by curl and browsers;
 * Node's resolver may not know *.localhost, so connect to 127.0.0.1 and send the Host header.
 */
export function getApp(url: string): Promise<{ status: number; body: string }> {
  const parsed = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      // 15 s: the frameworks e2e builds in lanes beside the app asked, and on two cores a server-rendered
      // page took over 5 s to answer while Create React App and Nuxt built (SvelteKit, twice in four runs).
      // A fresh connection each time (agent: false): with the global keep-alive agent, a request sent on
      // a socket the router was closing as idle failed with "socket hang up" (frameworks e2e, under load).
      { host: '127.0.0.1', port: Number(parsed.port), path: parsed.pathname + parsed.search, headers: { host: parsed.host }, timeout: 15_000, agent: false },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
