import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { readdir, readFile, readlink, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STEPS } from '@zepid/core';
import { freePort, getApp, processAlive, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'crash-test-token-0123456789';

interface Status {
  status: string;
  currentStep: string | null;
  url: string | null;
  steps: Record<string, { status: string }>;
  logs: string[];
}

/** Processes whose working directory is under `dir`, by their /proc entries. */
async function processesIn(dir: string): Promise<{ pid: number; cwd: string }[]> {
  const found: { pid: number; cwd: string }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => '');
    if (cwd.startsWith(dir)) found.push({ pid: Number(entry), cwd });
  }
  return found;
}

/**
 * Worker crash at every step: one deployment is SIGKILLed once during each of its six steps (and a
 * second project's deployment is killed along with it); after each restart the work resumes, and in
 * the end every deployment completes with exactly one running revision per project and no leaked
 * work dir, build process, sandbox or build context.
 */
describe('worker killed during every step', () => {
  let dataDir: string;
  let api: ChildProcess;
  let worker: ChildProcess;
  let apiUrl: string;
  let env: Record<string, string>;

  let output = '';
  const startWorker = () => {
    worker = spawn(process.execPath, ['test/e2e/fixtures/slow-worker.ts'], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    worker.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    worker.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  };
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const status = async (id: string) => (await (await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).json()) as Status;
  const deploy = async (projectId: string, text: string) => {
    // An app process, not a static site (the router serves those itself): the end checks that exactly
    // one process per project runs, and none leaked.
    const server = `require('node:http').createServer((q, r) => r.end(${JSON.stringify(`<p>${text}</p>`)})).listen(Number(process.env.PORT), '127.0.0.1');`;
    const body = { projectId, organizationId: 'org_crash', userId: 'u', startCommand: 'node server.js', files: [{ path: 'server.js', content: server }] };
    const response = await fetch(`${apiUrl}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) });
    return ((await response.json()) as { deploymentId: string }).deploymentId;
  };
  const settle = async (id: string) => {
    let last: Status | null = null;
    await waitFor(`${id} to finish`, async () => {
      last = await status(id);
      return ['completed', 'failed', 'cancelled'].includes(last.status);
    }, 90_000);
    return last as unknown as Status;
  };

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-crash-'));
    const [apiPort, routerPort] = [await freePort(), await freePort()];
    apiUrl = `http://127.0.0.1:${apiPort}`;
    env = {
      DATA_DIR: dataDir,
      PORT: String(apiPort),
      LOCAL_ROUTER_PORT: String(routerPort),
      DEPLOY_API_TOKENS: `org_crash:${TOKEN}`,
      LOG_LEVEL: 'warn',
      QUEUE_LOCK_DURATION_MS: '1500',
      STEP_DELAY_MS: '1200',
    };
    api = spawn(process.execPath, ['apps/api/src/server.ts'], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    api.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    api.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    startWorker();
    await waitFor('the API', async () => (await fetch(`${apiUrl}/health/ready`).catch(() => null))?.status === 200).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
    });
  }, 60_000);

  afterAll(async () => {
    for (const child of [worker, api]) child.kill('SIGTERM');
    await waitFor('processes to stop', () => [worker, api].every((child) => child.exitCode !== null || child.signalCode !== null), 30_000);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('resumes after each kill and ends with every deployment completed and nothing leaked', async () => {
    // A live revision first, so the deploy step has one to replace.
    const first = await settle(await deploy('crash-a', 'version 1')).catch((error: unknown) => {
      throw new Error(`${String(error)}\nworker output:\n${output.slice(-3000)}`);
    });
    expect(first.status).toBe('completed');

    const id = await deploy('crash-a', 'version 2');
    const other = await deploy('crash-b', 'other project');
    for (const step of STEPS) {
      let seen: Status | null = null;
      await waitFor(`${step} to run`, async () => {
        seen = await status(id);
        return seen.currentStep === step && seen.steps[step]?.status === 'in_progress';
      }, 60_000).catch((error: unknown) => {
        throw new Error(`${String(error)}\nstatus: ${JSON.stringify(seen, null, 1).slice(0, 3000)}\noutput:\n${output.slice(-3000)}`);
      });
      const pid = worker.pid ?? -1;
      worker.kill('SIGKILL');
      await waitFor('the worker to die', () => !processAlive(pid));
      startWorker();
    }

    const [done, otherDone] = await Promise.all([settle(id), settle(other)]).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
    });
    expect(done.status, done.logs.join('\n')).toBe('completed');
    expect(otherDone.status, otherDone.logs.join('\n')).toBe('completed');
    expect((await getApp(done.url ?? '')).body).toContain('version 2');
    expect((await getApp(otherDone.url ?? '')).body).toContain('other project');
    expect(done.logs.some((line) => line.includes('resumes at'))).toBe(true);

    // Exactly one running revision per project: the processes serving from each app's images.
    const images = join(dataDir, 'images');
    const revisions = await processesIn(images);
    const perImage = new Map<string, number>();
    for (const { cwd } of revisions) {
      const image = cwd.slice(images.length + 1).split('/')[0] ?? '';
      perImage.set(image, (perImage.get(image) ?? 0) + 1);
    }
    const runtime = JSON.parse(await readFile(join(dataDir, 'runtime.json'), 'utf8')) as Record<string, { live: { deploymentId: string } }>;
    expect(Object.values(runtime).map((app) => app.live.deploymentId).sort()).toEqual([id, other].sort());
    expect([...perImage.keys()].sort()).toEqual([id, other].sort());
    // No leaked sandbox, build process or build context.
    expect(await readdir(join(dataDir, 'work'))).toEqual([]);
    expect(await processesIn(join(dataDir, 'work'))).toEqual([]);
    expect(await readdir(join(dataDir, 'artifacts', 'contexts'))).toEqual([]);
  }, 180_000);
});
