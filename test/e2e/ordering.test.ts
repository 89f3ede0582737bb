import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, getApp, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'ordering-test-token-0123456789';

interface Status {
  status: string;
  url: string | null;
  revision: string | null;
  error: string | null;
  errorCode: string | null;
  logs: string[];
  steps: Record<string, { status: string; error: string | null }>;
}

/**
 * Local mode, real processes: an app's live deployment only moves forward. The older of two
 * deployments of one app fails transiently at deploy (fixture), and while it waits for its retry a
 * newer one goes live; the retry then ends `superseded` and the newer one keeps serving.
 */
describe('local mode: an older deployment never replaces a newer live one', () => {
  let dataDir: string;
  let api: ChildProcess;
  let worker: ChildProcess;
  let apiUrl: string;
  let output = '';
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const status = async (id: string) => (await (await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).json()) as Status;
  const deploy = async (text: string) => {
    const body = { projectId: 'ordered', organizationId: 'org_order', userId: 'u', files: [{ path: 'index.html', content: `<p>${text}</p>` }] };
    const response = await fetch(`${apiUrl}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) });
    expect(response.status).toBe(202);
    return ((await response.json()) as { deploymentId: string }).deploymentId;
  };
  const settle = async (id: string) => {
    let last: Status | null = null;
    await waitFor(`${id} to finish`, async () => {
      last = await status(id);
      return ['completed', 'failed', 'cancelled', 'superseded'].includes(last.status);
    }, 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\nlast: ${JSON.stringify(last)}\noutput:\n${output.slice(-3000)}`);
    });
    return last as unknown as Status;
  };

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-ordering-'));
    const [apiPort, routerPort] = [await freePort(), await freePort()];
    apiUrl = `http://127.0.0.1:${apiPort}`;
    const env = {
      ...process.env,
      DATA_DIR: dataDir,
      PORT: String(apiPort),
      LOCAL_ROUTER_PORT: String(routerPort),
      DEPLOY_API_TOKENS: `org_order:${TOKEN}`,
      LOG_LEVEL: 'warn',
      FLAKY_DEPLOY_PROJECT: 'ordered',
      FLAKY_DEPLOY_TIMES: '2',
    };
    const start = (entry: string) => {
      const child = spawn(process.execPath, [entry], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      return child;
    };
    api = start('apps/api/src/server.ts');
    worker = start('test/e2e/fixtures/flaky-deploy-worker.ts');
    await waitFor('the API', async () => (await fetch(`${apiUrl}/health/ready`).catch(() => null))?.status === 200, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
    });
  }, 90_000);

  afterAll(async () => {
    for (const child of [worker, api]) child?.kill('SIGTERM');
    await waitFor('the processes to stop', () => [worker, api].every((child) => child === undefined || child.exitCode !== null || child.signalCode !== null), 30_000).catch(() => {
      for (const child of [worker, api]) child?.kill('SIGKILL');
    });
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  }, 60_000);

  it("the older deployment's retry ends superseded; the newer revision keeps the traffic", async () => {
    const olderId = await deploy('older');
    await waitFor('the older deployment to wait for its retry', async () => {
      const current = await status(olderId);
      return current.steps.deploy?.status === 'pending' && (current.steps.deploy.error ?? '') !== '';
    }, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-3000)}`);
    });
    const newerId = await deploy('newer');
    const newer = await settle(newerId);
    expect(newer.status, newer.logs.join('\n')).toBe('completed');
    const older = await settle(olderId);
    expect(older.status, older.logs.join('\n')).toBe('superseded');
    expect(older).toMatchObject({ errorCode: 'SUPERSEDED', url: null });
    expect(older.error).toContain(newerId);
    // The newer one serves, and is the app's live revision for the runtime too.
    expect((await getApp(newer.url ?? '')).body).toContain('newer');
    const runtime = JSON.parse(await readFile(join(dataDir, 'runtime.json'), 'utf8')) as Record<string, { live: { deploymentId: string } }>;
    expect(Object.values(runtime).map((app) => app.live.deploymentId)).toEqual([newerId]);
  }, 150_000);
});
