import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, startLocalService, waitFor } from './support.ts';
import { viteReactTs } from './templates.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'apps', 'cli', 'bin', 'zepid.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

interface SentFile {
  path: string;
  sha256?: string;
  content?: string;
}

/**
 * A pass-through proxy in front of the API that keeps every request body: what the CLI really sends
 * over the wire, not what it says it sent. Responses (the event stream included) are piped as they come.
 */
function recordingProxy(target: number): { server: Server; deploys: { files: SentFile[] }[]; bytes: () => number } {
  const deploys: { files: SentFile[] }[] = [];
  let bytes = 0;
  const server = createServer((incoming, outgoing) => {
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.on('end', () => {
      const body = Buffer.concat(chunks);
      bytes += body.length;
      if (incoming.method === 'POST' && incoming.url === '/deploy') deploys.push(JSON.parse(body.toString('utf8')) as { files: SentFile[] });
      const upstream = request({ host: '127.0.0.1', port: target, method: incoming.method, path: incoming.url, headers: incoming.headers }, (response) => {
        outgoing.writeHead(response.statusCode ?? 502, response.headers);
        response.pipe(outgoing);
      });
      upstream.on('error', () => outgoing.destroy());
      outgoing.on('close', () => upstream.destroy());
      upstream.end(body);
    });
  });
  return { server, deploys, bytes: () => bytes };
}

describe('zepid CLI against npm start', () => {
  let dataDir: string;
  let work: string;
  let service: Service;
  let token: string;
  let proxy: ReturnType<typeof recordingProxy>;
  let apiUrl: string;

  const zepid = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
    new Promise((resolve, reject) => {
      const started = performance.now();
      const child = spawn(process.execPath, [bin, ...args], {
        cwd: work,
        env: { PATH: process.env.PATH ?? '', HOME: work, XDG_CONFIG_HOME: join(work, 'config'), CI: 'true', ZEPID_API_URL: apiUrl, ZEPID_TOKEN: token, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr, ms: performance.now() - started }));
    });

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'zepid-cli-work-'));
    // Builds keep their npm cache in the data dir: seed it from the clone's (.cache/npm, kept by CI),
    // as the frameworks e2e does, so the Vite build below fetches little from the registry.
    let apiPort: number;
    ({ service, token, dataDir, apiPort } = await startLocalService({ dataDirPrefix: 'zepid-e2e-cli-', seedNpmCache: join(root, '.cache', 'npm') }));
    proxy = recordingProxy(apiPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    apiUrl = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`;
  }, 60_000);

  afterAll(async () => {
    proxy.server.closeAllConnections();
    await new Promise<void>((resolve) => proxy.server.close(() => resolve()));
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  it('deploys the static sample folder, then redeploys it unchanged without uploading any file content', async () => {
    const site = join(work, 'static-site');
    await cp(join(root, 'examples', 'static-site'), site, { recursive: true });

    const first = await zepid(['deploy', site]);
    expect(first.code, first.stderr).toBe(0);
    const url = first.stdout.trim();
    expect(url).toMatch(/^http:\/\/static-site-[a-z0-9]{6}-development\.localhost:\d+\/$/);
    expect((await getApp(url)).body).toContain('Hello from Zepid Deploy');
    // Plain progress without a terminal: each step named, nothing animated.
    expect(first.stderr).toContain('→ build');
    expect(first.stderr).not.toContain('\r');
    expect(first.stderr).not.toContain('\u001b[');
    // First request: digests only; the service asked for the contents it lacked; second: those contents.
    expect(proxy.deploys).toHaveLength(2);
    expect(proxy.deploys[0]?.files.every((file) => file.content === undefined && /^[0-9a-f]{64}$/.test(file.sha256 ?? ''))).toBe(true);
    expect(proxy.deploys[1]?.files.map((file) => file.path).sort()).toEqual(['index.html', 'style.css']);
    expect(proxy.deploys[1]?.files.every((file) => typeof file.content === 'string')).toBe(true);

    const before = proxy.deploys.length;
    const second = await zepid(['deploy', site]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout.trim()).toBe(url);
    expect(proxy.deploys.slice(before)).toHaveLength(1);
    expect(proxy.deploys[before]?.files.some((file) => file.content !== undefined)).toBe(false);
    expect(second.stderr).toContain('no file content uploaded');
    console.log(`zepid deploy static sample → URL answers: first ${Math.round(first.ms)} ms, unchanged redeploy ${Math.round(second.ms)} ms`);
  });

  it('leaves out node_modules, .git, ignored files and build outputs of a Node project, and passes --env-var', async () => {
    const app = join(work, 'node-app');
    await cp(join(root, 'examples', 'node-server'), app, { recursive: true });
    await mkdir(join(app, 'node_modules', 'left-out'), { recursive: true });
    await writeFile(join(app, 'node_modules', 'left-out', 'index.js'), 'module.exports = 1;\n');
    await mkdir(join(app, '.git'), { recursive: true });
    await writeFile(join(app, '.git', 'HEAD'), 'ref: refs/heads/main\n');
    await mkdir(join(app, 'dist'), { recursive: true });
    await writeFile(join(app, 'dist', 'bundle.js'), '// built\n');
    await writeFile(join(app, '.gitignore'), 'notes/\n*.log\n');
    await mkdir(join(app, 'notes'), { recursive: true });
    await writeFile(join(app, 'notes', 'todo.txt'), 'private\n');
    await writeFile(join(app, 'debug.log'), 'noise\n');
    await writeFile(join(app, '.zepidignore'), 'fixtures/big.bin\n');
    await mkdir(join(app, 'fixtures'), { recursive: true });
    await writeFile(join(app, 'fixtures', 'big.bin'), Buffer.alloc(1024));
    await writeFile(join(app, 'fixtures', 'logo.bin'), Buffer.from([0, 255, 1, 254]));

    const before = proxy.deploys.length;
    const run = await zepid(['deploy', app, '--project', 'cli-node', '--env-var', 'GREETING=Bonjour', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const events = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(events[0]).toMatchObject({ type: 'accepted', projectId: 'cli-node' });
    expect(events.some((event) => event.type === 'log')).toBe(true);
    const result = events.at(-1) as { type: string; status: string; url: string };
    expect(result).toMatchObject({ type: 'result', status: 'completed' });
    expect((await getApp(result.url)).body).toContain('Bonjour from a Node app');

    const sent = proxy.deploys.slice(before).flatMap((body) => body.files.map((file) => file.path));
    expect([...new Set(sent)].sort()).toEqual(['.gitignore', '.zepidignore', 'fixtures/logo.bin', 'package.json', 'server.js']);
    const binary = proxy.deploys.at(-1)?.files.find((file) => file.path === 'fixtures/logo.bin') as { content: string; encoding: string } | undefined;
    expect(binary).toMatchObject({ content: Buffer.from([0, 255, 1, 254]).toString('base64'), encoding: 'base64' });
  });

  it('deploys a real Vite + React app folder (create-vite react-ts, as a user has it after npm install and a local build): built by the service, deep links served', async () => {
    // The template comes from the pinned create-vite package, with its own .gitignore (node_modules,
    // dist, *.local, logs…) — the CLI honours it, whatever this test expects.
    const box = { dir: join(work, 'templates'), env: { ...(process.env as Record<string, string>), npm_config_cache: join(root, '.cache', 'npm'), npm_config_update_notifier: 'false' } };
    await mkdir(box.dir, { recursive: true });
    const app = await viteReactTs(box);
    expect(await readFile(join(app, '.gitignore'), 'utf8')).toContain('dist');
    // What a user's folder has besides the source after `npm install` and `npm run build`.
    await mkdir(join(app, 'node_modules', 'vite'), { recursive: true });
    await writeFile(join(app, 'node_modules', 'vite', 'package.json'), '{"name":"vite"}\n');
    await mkdir(join(app, 'dist', 'assets'), { recursive: true });
    await writeFile(join(app, 'dist', 'index.html'), '<p>a stale local build</p>\n');
    await writeFile(join(app, '.env.local'), 'VITE_LOCAL_ONLY=1\n');

    const before = proxy.deploys.length;
    const run = await zepid(['deploy', app, '--project', 'cli-vite', '--timeout', '300']);
    expect(run.code, run.stderr).toBe(0);
    const url = run.stdout.trim();
    expect(url).toMatch(/^http:\/\/cli-vite-[a-z0-9]{6}-development\.localhost:\d+\/$/);
    expect(run.stderr).toContain('→ build');

    const sent = [...new Set(proxy.deploys.slice(before).flatMap((body) => body.files.map((file) => file.path)))];
    expect(sent).toEqual(expect.arrayContaining(['package.json', 'index.html', 'src/main.tsx', 'src/About.tsx', 'vite.config.ts', '.gitignore']));
    expect(sent.filter((path) => /^(node_modules|dist)\//.test(path) || path === '.env.local')).toEqual([]);

    // The service's own build (not the stale local one) serves /, and /about falls back to the SPA shell.
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('<div id="root">');
    expect(home.body).not.toContain('a stale local build');
    const deep = await getApp(new URL('/about', url).href);
    expect(deep.status).toBe(200);
    expect(deep.body).toContain('<div id="root">');
    // User source is never served: only the build output.
    expect((await getApp(new URL('/src/main.tsx', url).href)).body).not.toContain('createRoot');
    // Unchanged redeploy: no file content sent, the earlier build reused.
    const uploaded = proxy.deploys.length;
    const again = await zepid(['deploy', app, '--project', 'cli-vite', '--timeout', '300']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(url);
    expect(proxy.deploys.slice(uploaded).some((body) => body.files.some((file) => file.content !== undefined))).toBe(false);
    console.log(`zepid deploy of a create-vite react-ts folder → URL answers: first ${Math.round(run.ms)} ms, unchanged redeploy ${Math.round(again.ms)} ms`);
  }, 360_000);

  it('exits 1 when the build fails, and shows the error code', async () => {
    const broken = join(work, 'broken');
    await mkdir(broken, { recursive: true });
    await writeFile(join(broken, 'package.json'), JSON.stringify({ name: 'cli-broken', scripts: { build: 'echo building; exit 1', start: 'node -e 0' } }));
    const run = await zepid(['deploy', broken]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toMatch(/✗ dep_[a-z2-7]{26} failed \(BUILD_FAILED\)/);
    expect(run.stdout).toBe('');
  });

  it('exits 2 on a refused token and on bad usage, naming the problem in one line', async () => {
    const site = join(work, 'static-site');
    const refused = await zepid(['deploy', site], { ZEPID_TOKEN: 'zpd_not_a_real_token' });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/^zepid deploy: UNAUTHORIZED: /);

    const usage = await zepid(['deploy', site, '--no-such-flag']);
    expect(usage.code).toBe(2);
    const noToken = await zepid(['status', 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa'], { ZEPID_TOKEN: '' });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain('zepid login');
  });

  it('exits 124 when --timeout passes first; the deployment goes on and can be cancelled', async () => {
    const slow = join(work, 'slow');
    await mkdir(slow, { recursive: true });
    await writeFile(join(slow, 'package.json'), JSON.stringify({ name: 'cli-slow', scripts: { build: 'sleep 30', start: 'node -e 0' } }));
    const run = await zepid(['deploy', slow, '--timeout', '2s', '--json']);
    expect(run.code, run.stderr).toBe(124);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as { type: string; timedOut: boolean; deploymentId: string; status: string };
    expect(result).toMatchObject({ type: 'result', timedOut: true });
    expect(['queued', 'in_progress']).toContain(result.status);

    const cancelled = await zepid(['cancel', result.deploymentId]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    const followed = await zepid(['logs', result.deploymentId, '-f', '--timeout', '60s']);
    expect(followed.code).toBe(1);
    expect(followed.stderr).toContain(`✗ ${result.deploymentId} cancelled`);
  });

  it('in a CI job: writes the step outputs, and --cancel-on-abort cancels the deployment when the job is stopped', async () => {
    const outputs = join(work, 'github-output');
    await writeFile(outputs, '');
    const site = join(work, 'static-site');
    const run = await zepid(['deploy', site], { GITHUB_OUTPUT: outputs });
    expect(run.code, run.stderr).toBe(0);
    const written = await readFile(outputs, 'utf8');
    expect(written).toMatch(/^deployment-id=dep_[a-z2-7]{26}\nurl=http:\/\/static-site-[a-z0-9]{6}-development\.localhost:\d+\/\n$/);

    const slow = join(work, 'slow-abort');
    await mkdir(slow, { recursive: true });
    await writeFile(join(slow, 'package.json'), JSON.stringify({ name: 'cli-slow-abort', scripts: { build: 'sleep 30', start: 'node -e 0' } }));
    const child = spawn(process.execPath, [bin, 'deploy', slow, '--cancel-on-abort', '--json'], {
      env: { PATH: process.env.PATH ?? '', HOME: work, CI: 'true', ZEPID_API_URL: apiUrl, ZEPID_TOKEN: token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await waitFor('the build to start', () => stdout.includes('"currentStep":"build"'), 30_000);
    const id = (JSON.parse(stdout.split('\n')[0] ?? '{}') as { deploymentId: string }).deploymentId;
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    const status = await zepid(['status', id, '--json']);
    const settled = async () => (JSON.parse((await zepid(['status', id, '--json'])).stdout) as { status: string }).status;
    expect(['in_progress', 'cancelled']).toContain((JSON.parse(status.stdout) as { status: string }).status);
    await waitFor(`${id} to end cancelled`, async () => (await settled()) === 'cancelled', 30_000);
  });

  it('login keeps the API URL and token in a file only its owner can read, and later commands use it', async () => {
    const login = await zepid(['login', '--api', apiUrl, '--token', token], { ZEPID_API_URL: '', ZEPID_TOKEN: '' });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stderr).toContain('as organization local');
    const file = join(work, 'config', 'zepid', 'config.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ apiUrl, token });

    const deployed = proxy.deploys.length;
    const site = join(work, 'static-site');
    const run = await zepid(['deploy', site, '--detach'], { ZEPID_API_URL: '', ZEPID_TOKEN: '' });
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    expect(id).toMatch(/^dep_[a-z2-7]{26}$/);
    expect(proxy.deploys.length).toBe(deployed + 1);
    const status = await zepid(['status', id, '--json'], { ZEPID_API_URL: '', ZEPID_TOKEN: '' });
    expect(status.code, status.stderr).toBe(0);
    expect((JSON.parse(status.stdout) as { projectId: string }).projectId).toBe('static-site');

    const badLogin = await zepid(['login', '--api', apiUrl, '--token', 'zpd_wrong'], { ZEPID_API_URL: '', ZEPID_TOKEN: '' });
    expect(badLogin.code).toBe(2);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ apiUrl, token });
  });

  it('redeploy builds a deployment\'s stored source again (no earlier image reused), goes live at the same URL, and shows skipped steps of a rollback', async () => {
    const listed = JSON.parse((await zepid(['ls', '--json'])).stdout) as { apps: { projectId: string; liveDeploymentId: string; url: string }[] };
    for (const projectId of ['static-site', 'cli-vite']) {
      const app = listed.apps.find((candidate) => candidate.projectId === projectId);
      expect(app, projectId).toBeDefined();
      const before = proxy.bytes();
      const run = await zepid(['redeploy', app?.liveDeploymentId ?? '', '--timeout', '300']);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout.trim()).toBe(app?.url);
      // Nothing of the source travels: the service has it.
      expect(proxy.bytes() - before).toBeLessThan(1024);
      const id = /→ (dep_[a-z2-7]{26})/.exec(run.stderr)?.[1] ?? '';
      const status = JSON.parse((await zepid(['status', id, '--json'])).stdout) as { kind: string; redeployOf: string; reuse: { buildFrom: string | null }; steps: Record<string, { status: string }> };
      expect(status).toMatchObject({ kind: 'build', redeployOf: app?.liveDeploymentId, reuse: { buildFrom: null } });
      expect(status.steps.build?.status).toBe('completed');
      const log = (await zepid(['logs', id])).stdout;
      expect(log).toContain('building its source again');
      if (projectId === 'cli-vite') {
        // The build runs again; the dependency cache is used when the lockfile allows (create-vite ships none: then npm installs, from its package cache).
        expect(log).toContain('$ npm run build');
        expect(log).toMatch(/dependency cache: not used \(no lockfile|dependencies restored from the cache/);
      }
      expect((await getApp(app?.url ?? '')).status).toBe(200);
      console.log(`zepid redeploy of ${projectId} (a real build of the stored source) → URL answers: ${Math.round(run.ms)} ms`);
    }

    // A rollback builds nothing: its skipped steps are shown, one line each.
    const site = listed.apps.find((candidate) => candidate.projectId === 'static-site');
    const rolled = JSON.parse((await zepid(['rollback', site?.liveDeploymentId ?? '', '--json'])).stdout) as { deploymentId: string };
    const followed = await zepid(['logs', rolled.deploymentId, '-f', '--timeout', '60s']);
    expect(followed.code, followed.stderr).toBe(0);
    for (const step of ['sync', 'sandbox', 'build']) expect(followed.stderr).toContain(`– ${step} skipped`);
  }, 420_000);
});
