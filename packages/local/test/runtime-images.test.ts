import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildPlan, RevisionSpec } from '@zepid/core';
import { alwaysHeld, newDeploymentId, silentLogger } from '@zepid/core';
import { FileSecretStore, LocalRouter, LocalRuntime, ProcessRegistry, resolveIsolation } from '../src/index.ts';
import { parseListening } from '../src/process/listening.ts';
import { freePort } from '../src/runtime/local-runtime.ts';

const STATIC_PLAN: BuildPlan = { kind: 'static', install: null, build: null, start: null, port: 8080, framework: 'static-html', packageManager: null, outputDir: null, outputHint: null, image: 'start' };

async function startRuntime(dir: string, overrides: { readyTimeoutMs?: number; wrongPortGraceMs?: number } = {}): Promise<LocalRuntime> {
  const secrets = new FileSecretStore(join(dir, 'secrets'));
  await secrets.start();
  const runtime = new LocalRuntime({
    statePath: join(dir, 'runtime.json'),
    revisionsDir: join(dir, 'revisions'),
    npmCache: join(dir, 'npm-cache'),
    router: new LocalRouter({ host: '127.0.0.1', port: 0 }),
    secrets,
    registry: new ProcessRegistry(join(dir, 'processes.json')),
    logger: silentLogger,
    // Short: one test waits it out on purpose (an app answering 500 never becomes healthy).
    readyTimeoutMs: 4_000,
    isolation: resolveIsolation('none', { ids: null, limits: { memoryMb: 4096, processes: 512, openFiles: 4096 } }),
    nodeBin: dirname(process.execPath),
    ...overrides,
  });
  await runtime.start();
  return runtime;
}

const NODE_PLAN: BuildPlan = { kind: 'node', install: null, build: null, start: 'node server.mjs', port: 8080, framework: 'node', packageManager: null, outputDir: null, outputHint: null, image: 'start' };

function revisionSpec(appName: string, imagePath: string, plan: BuildPlan = STATIC_PLAN): RevisionSpec {
  return {
    deploymentId: newDeploymentId(),
    orgId: 'org_r',
    projectId: 'site',
    appName,
    environment: appName.endsWith('production') ? 'production' : 'development',
    image: imagePath,
    imageDigest: null,
    plan,
    containerSize: null,
    customDomain: null,
    envVariableNames: [],
    attempt: 1,
    signal: AbortSignal.timeout(30_000),
    fence: alwaysHeld,
    log: () => undefined,
  };
}

describe('LocalRuntime', () => {
  let dir: string;
  let runtime: LocalRuntime;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-runtime-'));
    runtime = await startRuntime(dir);
  });

  afterEach(async () => {
    await runtime.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function image(name: string): Promise<string> {
    const path = join(dir, 'images', name);
    await mkdir(path, { recursive: true });
    await writeFile(join(path, 'index.html'), `<h1>${name}</h1>`);
    return path;
  }

  async function deploy(appName: string, imagePath: string): Promise<void> {
    await runtime.deploy(revisionSpec(appName, imagePath));
  }

  // Rollback (issue 12) starts a new revision from any of the app's kept images: the runtime never
  // removes an image; the worker's retention (KEEP_IMAGES_PER_APP) decides which go.
  it('never removes an image, however many revisions it replaced: a rollback may need any', async () => {
    const [first, second, third] = [await image('first'), await image('second'), await image('third')];
    await deploy('site-development', first);
    await deploy('site-development', second);
    await deploy('site-development', third);
    await deploy('site-development', third);
    expect([existsSync(first), existsSync(second), existsSync(third)]).toEqual([true, true, true]);
    // And the oldest one goes live again.
    const back = await runtime.deploy(revisionSpec('site-development', first));
    expect(await runtime.isServing({ appName: 'site-development', revision: back.revision, customDomain: null }, AbortSignal.timeout(10_000))).toBe(true);
  }, 60_000);

  it('removeApp: the URL stops answering, every revision of the app stops, its revision dirs and state go; other apps stay; idempotent', async () => {
    const path = await appImage('app', 200);
    const spec = revisionSpec('gone-development', path, NODE_PLAN);
    const live = await runtime.deploy(spec);
    const other = await runtime.deploy(revisionSpec('kept-development', path, NODE_PLAN));
    const pid = runtime.runningRevisions().find((candidate) => candidate.revision === live.revision)?.pid;
    if (pid === undefined || pid === null) throw new Error('the live revision has no process');
    const viaRouter = () => fetch(`http://127.0.0.1:${new URL(live.url).port}/apps/gone-development/`).then((response) => response.status);
    expect(await viaRouter()).toBe(200);
    expect(existsSync(join(dir, 'revisions', live.revision))).toBe(true);
    const lines: string[] = [];
    const app = { orgId: 'org_r', projectId: 'site', environment: 'development' as const, appName: 'gone-development' };
    await runtime.removeApp(app, { signal: AbortSignal.timeout(10_000), log: (line) => lines.push(line) });
    expect(await viaRouter()).toBe(404);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(join(dir, 'revisions', live.revision))).toBe(false);
    expect(Object.keys(JSON.parse(await readFile(join(dir, 'runtime.json'), 'utf8')) as object)).toEqual(['kept-development']);
    expect(runtime.runningRevisions().map((run) => run.app)).toEqual(['kept-development']);
    expect(await serving('kept-development', other.revision)).toBe(true);
    expect(lines.join('\n')).toContain('1 revision(s) stopped');
    await runtime.removeApp(app, { signal: AbortSignal.timeout(10_000), log: () => undefined });
  }, 60_000);

  it('deploys several apps at once, and its state file (read at the next start) has every one of them', async () => {
    const apps = ['a', 'b', 'c', 'd'].map((name) => `site-${name}-development`);
    const paths = await Promise.all(apps.map((app) => image(app)));
    // Saves of concurrent deploys are queued one after another (they once shared a temporary file and a
    // rename found it gone: seen in the crash test); whatever the timing, none may be lost.
    await Promise.all(apps.map((app, i) => deploy(app, paths[i]!)));
    const state = JSON.parse(await readFile(join(dir, 'runtime.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(state).sort()).toEqual([...apps].sort());
  }, 60_000);

  /** What the deploy step asks before keeping a revision for an identical redeploy. */
  const serving = (appName: string, revision: string) => runtime.isServing({ appName, revision, customDomain: null }, AbortSignal.timeout(10_000));

  it('is true for the live static revision (served by the router, no process), false for another one', async () => {
    const path = await image('site');
    const first = await runtime.deploy(revisionSpec('site-development', path));
    expect(await serving('site-development', first.revision)).toBe(true);
    expect(await serving('site-production', first.revision)).toBe(false);
    // No process per static site: the router answers it.
    expect(runtime.runningRevisions()).toEqual([{ app: 'site-development', revision: first.revision, pid: null, port: null }]);

    const second = await runtime.deploy(revisionSpec('site-development', path));
    expect(await serving('site-development', second.revision)).toBe(true);
    // The previous revision is stopped once the new one has the traffic.
    expect(await serving('site-development', first.revision)).toBe(false);
    expect(runtime.runningRevisions().map((run) => run.revision)).toEqual([second.revision]);

    // Rolled back to nothing: stopped.
    await runtime.rollback({ deploymentId: 'dep_x', appName: 'site-development', revision: second.revision, previousRevision: null, fence: alwaysHeld }, () => undefined);
    expect(await serving('site-development', second.revision)).toBe(false);
  }, 60_000);

  it('refuses a static revision whose / does not answer 200 (no index.html at the root), and keeps the live one', async () => {
    const good = await image('good');
    const live = await runtime.deploy(revisionSpec('site-development', good));
    const bare = join(dir, 'images', 'bare');
    await mkdir(join(bare, 'src'), { recursive: true });
    await writeFile(join(bare, 'package.json'), '{}');
    await writeFile(join(bare, 'src', 'app.html'), '<p>source</p>');
    await expect(runtime.deploy(revisionSpec('site-development', bare))).rejects.toMatchObject({ code: 'DEPLOY_UNHEALTHY' });
    expect(await serving('site-development', live.revision)).toBe(true);
  }, 60_000);

  /** An app image: a server answering `status` at every path. */
  async function appImage(name: string, status: number): Promise<string> {
    const path = join(dir, 'images', name);
    await mkdir(path, { recursive: true });
    await writeFile(
      join(path, 'server.mjs'),
      `import { createServer } from 'node:http';\ncreateServer((q, r) => r.writeHead(${status}).end('${name}')).listen(Number(process.env.PORT), '127.0.0.1');\n`,
    );
    return path;
  }

  it('takes an app answering below 500 at / as healthy (its own 404 included), and never one answering 500', async () => {
    const notFound = await runtime.deploy(revisionSpec('api-development', await appImage('not-found', 404), NODE_PLAN));
    expect(await serving('api-development', notFound.revision)).toBe(true);
    await expect(runtime.deploy(revisionSpec('api-development', await appImage('broken', 500), NODE_PLAN))).rejects.toMatchObject({ code: 'DEPLOY_UNHEALTHY' });
    expect(await serving('api-development', notFound.revision)).toBe(true);
  }, 60_000);

  it('is true for the live app revision while its process runs and answers, false once it hangs or dies', async () => {
    const path = await appImage('app', 200);
    const live = await runtime.deploy(revisionSpec('app-development', path, NODE_PLAN));
    expect(await serving('app-development', live.revision)).toBe(true);
    // The live revision's process hangs (it runs, but answers nothing), then dies: still live in
    // the runtime's state, but not serving.
    const pid = runtime.runningRevisions().find((candidate) => candidate.revision === live.revision)?.pid;
    if (pid === undefined || pid === null) throw new Error('the live revision has no process');
    process.kill(-pid, 'SIGSTOP');
    expect(await serving('app-development', live.revision)).toBe(false);
    process.kill(-pid, 'SIGCONT');
    expect(await serving('app-development', live.revision)).toBe(true);
    process.kill(-pid, 'SIGKILL');
    await waitUntil(async () => !(await serving('app-development', live.revision)));
  }, 60_000);
});

const connects = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });

/**
 * Apps written to listen on a port of their own (Koa's README app and Hono's Node template listen on
 * 3000) never answer on the PORT they are given: their start fails saying what to change, without
 * waiting out the ready timeout, and leaves nothing listening. One on every interface is warned about.
 */
describe('LocalRuntime: where an app listens', () => {
  let dir: string;
  let runtime: LocalRuntime;
  const KOA_PLAN: BuildPlan = { ...NODE_PLAN, framework: 'koa' };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-runtime-listen-'));
    // A ready timeout far beyond the test's own: only the wrong-port check can end these starts in time.
    runtime = await startRuntime(dir, { readyTimeoutMs: 120_000, wrongPortGraceMs: 500 });
  });

  afterEach(async () => {
    await runtime.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function fixedPortImage(port: number): Promise<string> {
    const path = join(dir, 'images', `fixed-${port}`);
    await mkdir(path, { recursive: true });
    await writeFile(join(path, 'server.mjs'), `import { createServer } from 'node:http';\ncreateServer((q, r) => r.end('hi')).listen(${port}, '127.0.0.1');\n`);
    return path;
  }

  it('fails START_FAILED naming the port it listens on and the framework\'s fix, and stops it', async () => {
    const fixed = await freePort();
    const failure = runtime.deploy(revisionSpec('koa-development', await fixedPortImage(fixed), KOA_PLAN));
    await expect(failure).rejects.toMatchObject({ code: 'START_FAILED' });
    const message = ((await failure.catch((error: unknown) => error)) as Error).message;
    expect(message).toContain(`The app listens on port ${fixed}, not on the port it is given in PORT`);
    expect(message).toContain('e.g. app.listen(process.env.PORT, process.env.HOST)');
    expect(await connects(fixed)).toBe(false);
  }, 30_000);

  it('an app whose fixed port is taken (EADDRINUSE) fails START_FAILED naming that port and the fix', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const taken = (holder.address() as AddressInfo).port;
    try {
      const failure = runtime.deploy(revisionSpec('koa-development', await fixedPortImage(taken), KOA_PLAN));
      await expect(failure).rejects.toMatchObject({ code: 'START_FAILED' });
      const message = ((await failure.catch((error: unknown) => error)) as Error).message;
      expect(message).toContain('The app exited before answering HTTP on its PORT: The app listens on port');
      expect(message).toContain(`port ${taken}, not on the port it is given in PORT`);
      expect(message).toContain('EADDRINUSE');
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  }, 30_000);

  it('is live, with a warning in the log naming the address and the fix; one on HOST gets none', async () => {
    const logs: string[] = [];
    const deployWith = async (name: string, host: string) => {
      const path = join(dir, 'images', name);
      await mkdir(path, { recursive: true });
      await writeFile(join(path, 'server.mjs'), `import { createServer } from 'node:http';\ncreateServer((q, r) => r.end('${name}')).listen(Number(process.env.PORT)${host});\n`);
      const spec = revisionSpec(`${name}-development`, path, { ...NODE_PLAN, framework: 'hono' });
      return runtime.deploy({ ...spec, log: (line) => logs.push(`${name}: ${line}`) });
    };
    await deployWith('wide', '');
    await deployWith('narrow', ', process.env.HOST');
    expect(logs.filter((line) => line.includes('warning: the app listens on'))).toEqual([
      expect.stringMatching(/^wide: warning: the app listens on (\[::\]|0\.0\.0\.0):\d+, every interface, so it is reachable around the router; listen on process\.env\.HOST \(127\.0\.0\.1\), e\.g\. serve\(\{ fetch: app\.fetch, port: Number\(process\.env\.PORT\), hostname: process\.env\.HOST \}\)$/),
    ]);
  }, 30_000);
});

describe('parseListening (/proc/net/tcp, the kernel\'s proc_net_tcp.rst format)', () => {
  it('keeps listening sockets (state 0A) by inode, with their address and port', () => {
    const tcp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
      '   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0',
      '   2: 0100007F:0BB8 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 20 4 30 10 -1',
    ].join('\n');
    expect([...parseListening(tcp, 4)]).toEqual([
      ['4242', { address: '127.0.0.1', port: 3000 }],
      ['4243', { address: '0.0.0.0', port: 8080 }],
    ]);
    const tcp6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0',
      '   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5152 1 0000000000000000 100 0 0 10 0',
    ].join('\n');
    expect([...parseListening(tcp6, 6)]).toEqual([
      ['5151', { address: '::', port: 3000 }],
      ['5152', { address: '::1', port: 80 }],
    ]);
  });
});

async function waitUntil(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) throw new Error(`condition not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
