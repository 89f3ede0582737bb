import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, processAlive, startLocalService, startService, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Status {
  status: string;
  url: string | null;
  error: string | null;
  errorCode: string | null;
  logs: string[];
  steps: Record<string, { status: string }>;
}

/**
 * The README's walk-through with the real processes: `npm start` on a fresh data dir, deploy the
 * samples, fetch their URLs, redeploy, cancel a slow build, fail a build, restart.
 */
describe('end to end on the embedded defaults', () => {
  let dataDir: string;
  let service: Service;
  let env: Record<string, string>;
  let api: string;
  let token: string;

  const call = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, json: (await response.json()) as T };
  };
  const deploy = async (body: unknown) => {
    const response = await call<{ deploymentId: string }>('POST', '/deploy', body);
    expect(response.status).toBe(202);
    return response.json.deploymentId;
  };
  const settle = async (id: string, timeoutMs = 60_000): Promise<Status> => {
    let last: Status | null = null;
    await waitFor(
      `deployment ${id} to finish`,
      async () => {
        last = (await call<Status>('GET', `/deploy/${id}/status`)).json;
        return ['completed', 'failed', 'cancelled', 'superseded'].includes(last.status);
      },
      timeoutMs,
    );
    return last as unknown as Status;
  };
  const example = async (name: string) => JSON.parse(await readFile(join(root, 'examples', `${name}.json`), 'utf8')) as Record<string, unknown>;

  beforeAll(async () => {
    ({ service, api, token, dataDir, env } = await startLocalService({ dataDirPrefix: 'zepid-e2e-' }));
  }, 60_000);

  it('keeps the dev token only as a hash', async () => {
    const stored = await readFile(join(dataDir, 'api-tokens.json'), 'utf8');
    expect(token).toMatch(/^zpd_/);
    expect(stored).not.toContain(token);
    expect(JSON.parse(stored)).toEqual([{ orgId: 'local', name: 'dev', sha256: createHash('sha256').update(token).digest('hex') }]);
  });

  afterAll(async () => {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('deploys the static sample to a local URL that answers', async () => {
    const started = performance.now();
    const id = await deploy(await example('static-site'));
    const status = await settle(id);
    expect(status.status, JSON.stringify(status.logs)).toBe('completed');
    expect(status.url).toMatch(/^http:\/\/static-site-[a-z0-9]{6}-development\.localhost:\d+\/$/);
    const page = await getApp(status.url ?? '');
    const elapsed = performance.now() - started;
    expect(page.status).toBe(200);
    expect(page.body).toContain('Hello from Zepid Deploy');
    expect((await getApp(`${status.url ?? ''}style.css`)).body).toContain('font-family');
    // the path form, for clients that do not resolve *.localhost
    const app = new URL(status.url ?? '').hostname.replace('.localhost', '');
    expect((await getApp(`http://127.0.0.1:${env.LOCAL_ROUTER_PORT}/apps/${app}/`)).body).toContain('Hello from Zepid Deploy');
    console.log(`static sample: POST /deploy to a URL that answers in ${Math.round(elapsed)} ms`);
  });

  it('deploys the Node sample with its env variable, and keeps the value out of storage', async () => {
    const body = await example('node-server');
    const id = await deploy(body);
    const status = await settle(id);
    expect(status.status, status.logs.join('\n')).toBe('completed');
    const greeting = (body.envVariables as { GREETING: string }).GREETING;
    expect((await getApp(`${status.url ?? ''}hello`)).body).toBe(`${greeting} from a Node app deployed by Zepid Deploy (path /hello)\n`);
    // Not in the database, logs, artifacts or images: only (encrypted) in the secret store.
    const grep = spawnSync('grep', ['-rl', '--', greeting, dataDir], { encoding: 'utf8' });
    expect(grep.stdout).toBe('');
    expect(grep.status).toBe(1);
    // Nor in what the API and the worker logged.
    expect(service.output()).not.toContain(greeting);
  });

  it('redeploys the static site with a change and serves the new content', async () => {
    const body = await example('static-site');
    const files = (body.files as { path: string; content: string }[]).map((file) =>
      file.path === 'index.html' ? { ...file, content: file.content.replace('Hello from Zepid Deploy', 'Second version') } : file,
    );
    const status = await settle(await deploy({ ...body, files }));
    expect(status.status).toBe('completed');
    expect((await getApp(status.url ?? '')).body).toContain('Second version');
  });

  it('cancels a deliberately slow build and its process is gone', async () => {
    // World-writable: under uid isolation the build cannot write into DATA_DIR.
    const pidFile = join(tmpdir(), `zepid-slow-build-${process.pid}-${Date.now()}.pid`);
    const id = await deploy({
      projectId: 'slow-build',
      organizationId: 'local',
      userId: 'you',
      envVariables: { PID_FILE: pidFile },
      files: [{ path: 'package.json', content: JSON.stringify({ scripts: { build: 'echo $$ > "$PID_FILE"; exec sleep 300', start: 'node x.js' } }) }],
    });
    await waitFor('the slow build to start', async () => (await readFile(pidFile, 'utf8').catch(() => '')).trim() !== '');
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    expect(processAlive(pid)).toBe(true);
    const cancel = await call<{ status: string }>('POST', `/deploy/${id}/cancel`);
    expect(cancel.status).toBe(202);
    const status = await settle(id);
    expect(status.status).toBe('cancelled');
    expect(status.steps.build?.status).toBe('cancelled');
    await waitFor('the build process to exit', () => !processAlive(pid), 10_000);
    expect((await call('POST', `/deploy/${id}/cancel`)).status).toBe(409);
  });

  it('fails a build that exits 1, with the log tail in the status', async () => {
    const id = await deploy({
      projectId: 'broken-build',
      organizationId: 'local',
      userId: 'you',
      files: [{ path: 'package.json', content: JSON.stringify({ scripts: { build: 'echo "compiling..."; echo "error TS2322: boom" >&2; exit 1', start: 'node x.js' } }) }],
    });
    const status = await settle(id);
    expect(status.status).toBe('failed');
    expect(status.errorCode).toBe('BUILD_FAILED');
    expect(status.error).toContain('exited with code 1');
    expect(status.error).toContain('error TS2322: boom');
    expect(status.logs.join('\n')).toContain('error TS2322: boom');
  });

  it('runs build commands where they cannot read the service\'s data dir or tokens', async () => {
    const probe = [
      'echo "uid=$(id -u)"',
      'for f in "$DATA/zepid.db" "$DATA/api-tokens.json" "$DATA/secrets/.key"; do if cat "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "denied $f"; fi; done',
      'if ls "$DATA/secrets" >/dev/null 2>&1; then echo "LISTED secrets"; else echo "denied listing"; fi',
      'if touch "$DATA/pwned" 2>/dev/null; then echo "WROTE"; else echo "denied write"; fi',
      'env | cut -d= -f1 | sort | tr "\\n" " "; echo',
      'mkdir -p dist && echo "<p>probe</p>" > dist/index.html',
    ].join('; ');
    const id = await deploy({
      projectId: 'isolation-probe',
      organizationId: 'local',
      userId: 'you',
      envVariables: { DATA: dataDir },
      files: [{ path: 'package.json', content: JSON.stringify({ scripts: { build: probe } }) }],
    });
    const status = await settle(id);
    expect(status.status, status.logs.join('\n')).toBe('completed');
    const log = (await (await fetch(`${api}/deploy/${id}/logs`, { headers: { authorization: `Bearer ${token}`, accept: 'text/plain' } })).text());
    // The service's own environment never reaches user code.
    expect(log).not.toMatch(/\bDEPLOY_API_TOKENS\b|\bDATA_DIR\b|\bLOCAL_ROUTER_PORT\b/);
    if (process.getuid?.() === 0) {
      // CI runs as root: uid isolation is on (LOCAL_BUILD_ISOLATION=auto), with the app's own uid
      // from the default LOCAL_UID_RANGE.
      expect(log).toMatch(/uid=10000\d{5}\b/);
      expect(log.split("\n").filter((line) => /\[build\] (READ |LISTED|WROTE)/.test(line))).toEqual([]);
      expect(log).toContain('denied listing');
      expect(log).toContain('denied write');
    } else {
      // As an ordinary user there is no one to switch to: the README says so; the env is still cleaned.
      expect(log).toContain(`uid=${process.getuid?.() ?? ''}`);
    }
  });

  it('after a restart, serves the last completed revisions again, and the dev token is not printed twice', async () => {
    const latestUrl = async (projectId: string) =>
      (await call<{ deployments: { url: string | null; status: string }[] }>('GET', `/deploy/project/${projectId}`)).json.deployments.find(
        (deployment) => deployment.status === 'completed',
      )?.url ?? '';
    const url = await latestUrl('node-server');
    const staticUrl = await latestUrl('static-site');
    await service.stop();
    service = startService(root, env);
    await waitFor('the API to answer', async () => (await fetch(`${api}/health/ready`).catch(() => null))?.status === 200);
    await waitFor('the Node app to answer again', async () => (await getApp(url).catch(() => ({ status: 0 }))).status === 200, 60_000);
    expect((await getApp(url)).body).toContain('from a Node app');
    await waitFor('the static site to answer again', async () => (await getApp(staticUrl).catch(() => ({ status: 0 }))).status === 200, 60_000);
    expect((await getApp(staticUrl)).body).toContain('Second version');
    expect(service.output()).not.toContain('export TOKEN=');
  }, 90_000);
});
