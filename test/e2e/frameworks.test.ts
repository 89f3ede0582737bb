import { execFileSync } from 'node:child_process';
import { chmod, copyFile, link, mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { request } from 'node:http';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, startLocalService, waitFor } from './support.ts';
import type { Toolbox } from './templates.ts';
import {
  astroNode,
  astroSite,
  bunVite,
  craApp,
  expressApp,
  fastifyApp,
  filesOf,
  honoApp,
  koaApp,
  nextApp,
  nextExport,
  nuxtApp,
  pnpmVite,
  reactRouterApp,
  reactRouterSpa,
  remixApp,
  removeDir,
  svelteKit,
  svelteKitStatic,
  viteReactTs,
  viteTemplate,
  yarnVite,
} from './templates.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const isRoot = process.getuid?.() === 0;

interface Status {
  status: string;
  url: string | null;
  error: string | null;
  errorCode: string | null;
  logs: string[];
  build: { framework: string; packageManager: string | null; install: string | null; build: string | null; start: string | null; outputDir: string | null } | null;
}

/**
 * Real templates (taken at test time from pinned npm packages) deployed through `npm start`, each
 * until its URL answers. As root, the service runs on a Node that lives under a 0700 directory
 * (the README's `~/.node24` installed as root), so every build and app here also proves the build
 * user reaches the worker's Node. Builds fetch from the registry through whatever proxy or CA the
 * machine's environment names (passed through to builds).
 */
describe('real templates end to end', () => {
  let work: string;
  let dataDir: string;
  let service: Service;
  let api: string;
  let token: string;
  let box: Toolbox;
  const timings: Record<string, number> = {};
  /**
   * Deployments that run beside the tests' own sequence, in lanes started by beforeAll (the worker
   * runs MAX_CONCURRENT_DEPLOYMENTS at once): Next, which builds longest; Nuxt, whose install is the
   * largest; the other frameworks and package managers one after another. An install mostly waits
   * on the registry, so the lanes overlap it with the other lanes' builds and keep CI time down.
   */
  const laneRuns = new Map<string, Promise<Status | Error>>();
  const asError = (error: unknown) => (error instanceof Error ? error : new Error(String(error)));
  /** `project`: the projectId deployed to (default `name`): a second entry with the same one redeploys that app. */
  const startLane = (entries: { name: string; make: (box: Toolbox) => Promise<string>; timeoutMs: number; project?: string }[]) => {
    let previous: Promise<unknown> = Promise.resolve();
    for (const entry of entries) {
      const run = previous.then(() => entry.make(box)).then((dir) => deploy(entry.name, dir, entry.timeoutMs, entry.project)).catch(asError);
      laneRuns.set(entry.name, run);
      previous = run;
    }
  };
  const laneResult = async (name: string): Promise<Status> => {
    const result = await laneRuns.get(name);
    if (result === undefined) throw new Error(`${name} was not started`);
    if (result instanceof Error) throw result;
    return result;
  };

  const call = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, json: (await response.json()) as T };
  };

  /** POST the project, wait until it ends; for a completed one, until `/` answers. Records the time. */
  const deploy = async (name: string, dir: string, timeoutMs: number, projectId = name): Promise<Status> => {
    const files = await filesOf(dir);
    const started = performance.now();
    const posted = await call<{ deploymentId: string }>('POST', '/deploy', { projectId, organizationId: 'local', userId: 'e2e', files });
    expect(posted.status, JSON.stringify(posted.json)).toBe(202);
    const id = posted.json.deploymentId;
    let last: Status | null = null;
    let polls = 0;
    await waitFor(
      `${name} to finish`,
      async () => {
        // Once a second: the API allows RATE_LIMIT_PER_MINUTE (600) requests per token, and up to
        // seven deployments poll here at once. Polled every 50 ms, they used the minute up in seconds
        // and then read 429s until it ended, so every time measured came out at a multiple of 60 s.
        if (polls++ > 0) await sleep(1000);
        const answer = await call<Status>('GET', `/deploy/${id}/status`);
        if (answer.status === 429) console.warn(`${name}: status poll answered 429; the time measured is late`);
        last = answer.json;
        return ['completed', 'failed', 'cancelled'].includes(last.status);
      },
      timeoutMs,
    );
    const status = last as unknown as Status;
    if (status.status === 'completed' && status.url !== null) {
      const url = status.url;
      await waitFor(`${name} to answer`, async () => (await getApp(url).catch(() => ({ status: 0 }))).status === 200, 30_000);
    }
    timings[name] = Math.round(performance.now() - started);
    const logs = await call<{ logs: { message: string }[] }>('GET', `/deploy/${id}/logs`);
    status.logs = logs.json.logs.map((line) => line.message);
    return status;
  };

  const expectCompleted = (status: Status) => {
    expect(status.status, `${status.errorCode ?? ''} ${status.error ?? ''}\n${status.logs.slice(-30).join('\n')}`).toBe('completed');
  };

  /** Source files of a project never answer with their content. */
  const expectNoSources = async (url: string, paths: Record<string, string>) => {
    for (const [path, marker] of Object.entries(paths)) {
      const response = await getApp(new URL(path, url).href);
      expect(response.body, `${path} must not be served`).not.toContain(marker);
    }
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'zepid-frameworks-'));
    await chmod(work, 0o755);
    dataDir = join(work, 'data');
    await mkdir(dataDir);
    // npm's cache: the clone's .cache/ (gitignored, kept by CI between runs) for the generators.
    const npmCache = join(root, '.cache', 'npm');
    let nodeDir = dirname(process.execPath);
    if (isRoot) {
      // The README's install as root: Node under a directory only root may enter.
      const home = join(work, 'root-home');
      nodeDir = join(home, '.node24', 'node_modules', 'node', 'bin');
      await mkdir(nodeDir, { recursive: true });
      await link(process.execPath, join(nodeDir, 'node')).catch(() => copyFile(process.execPath, join(nodeDir, 'node')));
      await chmod(join(nodeDir, 'node'), 0o755);
      await chmod(home, 0o700);
    }
    const path = `${nodeDir}:${process.env.PATH ?? ''}`;
    box = { dir: join(work, 'projects'), env: { ...(process.env as Record<string, string>), PATH: path, npm_config_cache: npmCache, npm_config_update_notifier: 'false' } };
    await mkdir(box.dir);

    // The worker's builds keep their npm cache in the data dir; seed it from the clone's (hard links:
    // cacache files are immutable and content-addressed) and hand back what they fetched afterwards.
    ({ service, api, token } = await startLocalService({
      dataDir,
      nodeDir,
      seedNpmCache: npmCache,
      env: {
        BUILD_TIMEOUT_MS: '400000',
        // The lanes below and the tests' own sequence keep up to nine of this organization's deployments active at once.
        MAX_ACTIVE_DEPLOYMENTS_PER_ORG: '12',
        // react-scripts' build starts worker threads whose isolates do not fit in the default 16 GiB of
        // address space (Failed to reserve virtual memory for CodeRange; BUILD_FAILED naming the limit).
        LOCAL_LIMIT_MEMORY_MB: '32768',
        DEPLOYMENT_TIMEOUT_MS: '600000',
      },
      timeoutMs: 60_000,
    }));
    startLane([{ name: 'next-app', make: nextApp, timeoutMs: 540_000 }]);
    startLane([
      { name: 'nuxt-app', make: nuxtApp, timeoutMs: 540_000 },
      { name: 'vite-vue-ts', make: (b) => viteTemplate(b, 'vue-ts'), timeoutMs: 300_000 },
      { name: 'vite-svelte-ts', make: (b) => viteTemplate(b, 'svelte-ts'), timeoutMs: 300_000 },
    ]);
    startLane([
      { name: 'astro-site', make: astroSite, timeoutMs: 300_000 },
      { name: 'react-router-app', make: reactRouterApp, timeoutMs: 300_000 },
      { name: 'yarn-berry-site', make: (b) => yarnVite(b, 'berry'), timeoutMs: 300_000 },
      { name: 'bun-site', make: bunVite, timeoutMs: 300_000 },
      { name: 'yarn-classic-site', make: (b) => yarnVite(b, 'classic'), timeoutMs: 300_000 },
    ]);
    // Servers with a start script. Koa's and Hono's templates as they come listen on 3000; then the
    // same app (same lockfile: its install comes from the dependency cache) with the change the
    // failure message asks for.
    startLane([
      { name: 'fastify-app', make: fastifyApp, timeoutMs: 300_000 },
      { name: 'koa-app', make: (b) => koaApp(b, false), timeoutMs: 300_000 },
      { name: 'koa-app-fixed', make: (b) => koaApp(b, true), timeoutMs: 300_000, project: 'koa-app' },
      { name: 'hono-app', make: (b) => honoApp(b, false), timeoutMs: 300_000 },
      { name: 'hono-app-fixed', make: (b) => honoApp(b, true), timeoutMs: 300_000, project: 'hono-app' },
    ]);
    // Create React App, the longest of all (its install is the largest), from the start in a lane of its own.
    startLane([{ name: 'cra-app', make: craApp, timeoutMs: 540_000 }]);
  }, 180_000);

  afterAll(async () => {
    // A lane still deploying when a test failed early: let it end before the service stops under it.
    await Promise.allSettled(laneRuns.values());
    await service?.stop();
    await mkdir(join(root, '.cache', 'npm'), { recursive: true });
    execFileSync('cp', ['-al', '-n', `${join(dataDir, 'cache', 'npm')}/.`, join(root, '.cache', 'npm')]);
    // The figures the issue asks for: POST to a URL that answers, per framework.
    console.log(`time from POST to a URL that answers (ms): ${JSON.stringify(timings)}`);
    await removeDir(work);
    // Handing the builds' npm cache back and removing every image (each app's node_modules) took
    // over 60 s on a loaded machine with Create React App's among them.
  }, 180_000);

  it('Express (npm, lockfile): completes, answers, and runs on the worker\'s Node with NODE_ENV=production', async () => {
    const status = await deploy('express-app', await expressApp(box), 240_000);
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'express', packageManager: 'npm', install: 'npm ci', start: 'npm start' });
    expect(status.logs.some((line) => line.includes(`toolchain: node ${process.version}`))).toBe(true);
    const url = status.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: 'Hello World!' });
    const version = JSON.parse((await getApp(new URL('/version', url).href)).body) as { node: string; nodeEnv: string };
    expect(version).toEqual({ node: process.version, nodeEnv: 'production' });
  }, 300_000);

  it('Vite react-ts with a client route: static, served from dist only', async () => {
    const status = await deploy('vite-react', await viteReactTs(box), 300_000);
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'vite-react', packageManager: 'npm', install: 'npm install --no-audit --no-fund', build: 'npm run build', start: null, outputDir: 'dist' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('<div id="root"></div>');
    expect(home.body).toMatch(/<script type="module" crossorigin src="\/assets\/index-[\w-]+\.js"><\/script>/);
    const script = /src="(\/assets\/index-[\w-]+\.js)"/.exec(home.body)?.[1] ?? '';
    const bundle = await getApp(new URL(script, url).href);
    expect(bundle.status).toBe(200);
    expect(bundle.body).toContain('About this app');
    await expectNoSources(url, { '/package.json': '"devDependencies"', '/src/main.tsx': 'createRoot', '/index.html?x': 'src="/src/main.tsx"' });
  }, 360_000);

  it('pnpm (lockfile) Vite vanilla: installed with the pinned pnpm from the registry', async () => {
    const status = await deploy('pnpm-site', await pnpmVite(box), 300_000);
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'vite', packageManager: 'pnpm@10.34.9', install: 'pnpm install --frozen-lockfile', build: 'pnpm run build', outputDir: 'dist' });
    expect(status.logs.some((line) => line.includes('package manager: pnpm-lock.yaml found: pnpm 10.34.9'))).toBe(true);
    const home = await getApp(status.url ?? '');
    expect(home.status).toBe(200);
    expect(home.body).toContain('<div id="app"></div>');
    await expectNoSources(status.url ?? '', { '/pnpm-lock.yaml': 'lockfileVersion', '/package.json': '"devDependencies"' });
  }, 360_000);

  it('SvelteKit with adapter-node: a Node app started with `node build`', async () => {
    const status = await deploy('kit-node', await svelteKit(box, 'kit-node', 'node'), 300_000);
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'sveltekit', start: 'node build', outputDir: 'build' });
    const home = await getApp(status.url ?? '');
    expect(home.status).toBe(200);
    expect(home.body).toContain('Welcome to SvelteKit');
    await expectNoSources(status.url ?? '', { '/package.json': '"devDependencies"', '/src/app.html': '%sveltekit.head%' });
  }, 360_000);

  it('SvelteKit with the template\'s adapter-auto: failed, BUILD_OUTPUT_MISSING naming both adapters', async () => {
    const status = await deploy('kit-auto', await svelteKit(box, 'kit-auto', 'auto'), 300_000);
    expect(status.status).toBe('failed');
    expect(status.errorCode).toBe('BUILD_OUTPUT_MISSING');
    expect(status.error).toMatch(/adapter-auto/);
    expect(status.error).toMatch(/@sveltejs\/adapter-node/);
    expect(status.error).toMatch(/@sveltejs\/adapter-static/);
    expect(status.url).toBeNull();
  }, 360_000);

  it('Next.js (create-next-app, app and pages router): next build with NODE_ENV=production, next start', async () => {
    const status = await laneResult('next-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'next', packageManager: 'npm', build: 'npm run build', outputDir: '.next' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('<title>Zepid Next e2e</title>');
    const legacy = await getApp(new URL('/legacy', url).href);
    expect(legacy.status).toBe(200);
    expect(legacy.body).toContain('pages router works');
    await expectNoSources(url, { '/package.json': '"next build"', '/app/layout.js': 'RootLayout' });
  }, 560_000);
  /** A GET with the request headers given: status, response headers and the body's bytes as sent (no decoding, redirects not followed). */
  const raw = (url: string, headers: Record<string, string> = {}) => {
    const parsed = new URL(url);
    return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(parsed.port), path: parsed.pathname + parsed.search, headers: { host: parsed.host, ...headers }, timeout: 5000 }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end();
    });
  };
  /** A GET with its response headers, redirects not followed (getApp keeps only status and body). */
  const head = async (url: string) => {
    const response = await raw(url);
    const header = (name: string) => String(response.headers[name] ?? '');
    return { status: response.status, type: header('content-type'), cache: header('cache-control'), location: header('location'), frame: header('x-frame-options'), body: response.body.toString('utf8') };
  };

  it('Astro (static, create-astro\'s minimal layout): dist/ served, /about deep link, its 404 page with 404', async () => {
    const status = await laneResult('astro-site');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'astro', packageManager: 'npm', build: 'npm run build', start: null, outputDir: 'dist' });
    const url = status.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: expect.stringContaining('<title>Zepid Astro e2e</title>') });
    for (const path of ['/about', '/about/']) {
      const about = await head(new URL(path, url).href);
      expect(about, path).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache' });
      expect(about.body).toContain('About this Astro site');
    }
    // The site has a 404 page (src/pages/404.astro): unknown paths get it with 404, not the SPA fallback.
    const missing = await head(new URL('/no/such/page', url).href);
    expect(missing.status).toBe(404);
    expect(missing.body).toContain('Astro says: no such page');
    await expectNoSources(url, { '/package.json': '"astro build"', '/src/pages/index.astro': 'const title', '/astro.config.mjs': 'defineConfig' });
  }, 600_000);

  it('React Router 7 framework mode: react-router build, react-router-serve, server-rendered /about', async () => {
    const status = await laneResult('react-router-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'react-router', build: 'npm run build', start: './node_modules/.bin/react-router-serve ./build/server/index.js', outputDir: 'build/server/index.js' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('<title>Zepid React Router e2e</title>');
    expect(home.body).toContain('Welcome to React Router');
    // The loader runs on the server: on the worker's Node.
    const about = await getApp(new URL('/about', url).href);
    expect(about.status).toBe(200);
    expect(about.body).toContain(`About, served by Node <!-- -->${process.version}`);
    const asset = /<script[^>]+src="(\/assets\/[^"]+\.js)"|<link rel="modulepreload" href="(\/assets\/[^"]+\.js)"/.exec(home.body);
    const assetPath = asset?.[1] ?? asset?.[2] ?? '';
    expect(assetPath, 'a client bundle linked from the page').not.toBe('');
    expect(await head(new URL(assetPath, url).href)).toMatchObject({ status: 200, type: expect.stringMatching(/javascript/) });
    expect((await getApp(new URL('/no/such/page', url).href)).status).toBe(404);
    await expectNoSources(url, { '/package.json': '"react-router build"', '/app/root.tsx': 'ScrollRestoration' });
  }, 600_000);

  it('Nuxt 4: nuxt build, .output/server/index.mjs, server-rendered /about, its own 404', async () => {
    const status = await laneResult('nuxt-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'nuxt', build: 'npm run build', start: 'node .output/server/index.mjs', outputDir: '.output/server/index.mjs' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('Zepid Nuxt e2e');
    const about = await getApp(new URL('/about', url).href);
    expect(about.status).toBe(200);
    expect(about.body).toContain('About this Nuxt app, rendered on the server');
    const script = /(\/_nuxt\/[\w.-]+\.js)/.exec(home.body)?.[1] ?? '';
    expect(script, 'a client bundle linked from the page').not.toBe('');
    expect(await head(new URL(script, url).href)).toMatchObject({ status: 200, type: expect.stringMatching(/javascript/) });
    expect((await getApp(new URL('/no/such/page', url).href)).status).toBe(404);
    await expectNoSources(url, { '/package.json': '"nuxt build"', '/nuxt.config.ts': 'defineNuxtConfig', '/app/app.vue': '<NuxtPage' });
  }, 900_000);

  it('yarn 4 (berry) lockfile: installed with the pinned yarn from the registry, into node_modules', async () => {
    const status = await laneResult('yarn-berry-site');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'vite', packageManager: '@yarnpkg/cli-dist@4.18.1', install: 'YARN_NODE_LINKER=node-modules yarn install --immutable', build: 'YARN_NODE_LINKER=node-modules yarn run build', outputDir: 'dist' });
    expect(status.logs.some((line) => line.includes('package manager: yarn.lock found: yarn 4.18.1 (berry'))).toBe(true);
    const url = status.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: expect.stringContaining('<div id="app"></div>') });
    // No 404.html: a single-page app, every deep link answers the index.
    expect(await getApp(new URL('/some/client/route', url).href)).toMatchObject({ status: 200, body: expect.stringContaining('<div id="app"></div>') });
    await expectNoSources(url, { '/yarn.lock': '__metadata', '/package.json': '"devDependencies"', '/_redirects': '/home' });
    // public/_redirects and public/_headers, copied into dist/ by Vite, apply; the rule outside the subset is named in the log.
    expect(await head(new URL('/legacy/about?x=1', url).href)).toMatchObject({ status: 302, location: '/about?x=1', frame: 'DENY' });
    expect(status.logs.some((line) => line.includes('static site rules: 2 redirects, 1 header rules'))).toBe(true);
    expect(status.logs.some((line) => line.includes('static site rules: _redirects:3: left out (code 410: only 301, 302, 303, 307, 308 and 200 are supported)'))).toBe(true);
  }, 900_000);

  it('bun lockfile: installed and built with the pinned bun from the registry', async () => {
    const status = await laneResult('bun-site');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'vite', packageManager: 'bun@1.4.5', install: 'bun install --frozen-lockfile', build: 'bun run build', outputDir: 'dist' });
    expect(status.logs.some((line) => line.includes('package manager: bun.lock found: bun 1.4.5'))).toBe(true);
    const url = status.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: expect.stringContaining('<div id="app"></div>') });
    expect(await getApp(new URL('/deep/link', url).href)).toMatchObject({ status: 200, body: expect.stringContaining('<div id="app"></div>') });
    await expectNoSources(url, { '/bun.lock': 'lockfileVersion', '/package.json': '"devDependencies"' });
  }, 900_000);

  it('yarn 1 (classic) lockfile: yarn install --frozen-lockfile with the pinned yarn 1', async () => {
    const status = await laneResult('yarn-classic-site');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'vite', packageManager: 'yarn@1.22.22', install: 'yarn install --frozen-lockfile', build: 'yarn run build', outputDir: 'dist' });
    expect(await getApp(status.url ?? '')).toMatchObject({ status: 200, body: expect.stringContaining('<div id="app"></div>') });
  }, 900_000);

  it('Create React App (cra-template from npm): react-scripts build, build/ served as a single-page app', async () => {
    const status = await laneResult('cra-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'create-react-app', build: 'npm run build', start: null, outputDir: 'build' });
    const url = status.url ?? '';
    const home = await head(url);
    expect(home).toMatchObject({ status: 200, cache: 'no-cache' });
    expect(home.body).toContain('<div id="root"></div>');
    const bundle = /src="(\/static\/js\/main\.[0-9a-f]+\.js)"/.exec(home.body)?.[1] ?? '';
    expect(bundle, 'the main bundle linked from the page').not.toBe('');
    expect(await head(new URL(bundle, url).href)).toMatchObject({ status: 200, cache: 'public, max-age=31536000, immutable' });
    expect(await getApp(new URL('/deep/link', url).href)).toMatchObject({ status: 200, body: expect.stringContaining('<div id="root"></div>') });
    await expectNoSources(url, { '/package.json': '"react-scripts build"', '/src/App.js': 'function App' });
  }, 900_000);

  /**
   * The table's other outputs (issue 10): Astro with @astrojs/node, React Router with ssr: false,
   * Remix v2, SvelteKit adapter-static, Next output: 'export'. Started after the lanes above, beside
   * the tests' own sequence: a lane of their own for Astro, SvelteKit and Remix; the Next export once
   * the Next app is done and the React Router SPA once the React Router app is, so that the builds
   * spread over the run on the machine's two cores. (No dependency cache between them: their
   * templates have no lockfile, and the cache keys only installs from one.)
   */
  beforeAll(() => {
    const after = (name: string, make: (box: Toolbox) => Promise<string>) => async (b: Toolbox) => {
      await laneRuns.get(name);
      return make(b);
    };
    startLane([
      { name: 'astro-node', make: astroNode, timeoutMs: 400_000 },
      { name: 'kit-static', make: svelteKitStatic, timeoutMs: 300_000 },
      { name: 'remix-app', make: remixApp, timeoutMs: 400_000 },
    ]);
    startLane([{ name: 'next-export', make: after('next-app', nextExport), timeoutMs: 400_000 }]);
    startLane([{ name: 'react-router-spa', make: after('react-router-app', reactRouterSpa), timeoutMs: 300_000 }]);
  });

  /** The first same-origin asset a page links to under `prefix`, resolved against the page. */
  const assetOf = (html: string, pageUrl: string, prefix: RegExp): string => {
    const found = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => new URL(match[1] ?? '', pageUrl)).find((asset) => prefix.test(asset.pathname));
    expect(found, `an asset under ${String(prefix)} linked from ${pageUrl}`).toBeDefined();
    return found?.href ?? '';
  };

  it('Astro with @astrojs/node (standalone): an app on dist/server/entry.mjs, pages rendered per request, its assets and 404', async () => {
    const status = await laneResult('astro-node');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'astro', build: 'npm run build', start: 'node ./dist/server/entry.mjs', outputDir: 'dist/server/entry.mjs' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home).toMatchObject({ status: 200, body: expect.stringContaining('<title>Zepid Astro e2e</title>') });
    // Rendered on request, on the worker's Node.
    expect((await getApp(new URL('/now', url).href)).body).toContain(`Rendered by Astro on Node ${process.version}`);
    expect(await getApp(new URL('/about', url).href)).toMatchObject({ status: 200, body: expect.stringContaining('About this Astro site') });
    const logo = assetOf(home.body, url, /^\/_astro\/logo\.[\w-]+\.svg$/);
    expect(await head(logo)).toMatchObject({ status: 200, type: expect.stringMatching(/^image\/svg\+xml/), cache: expect.stringMatching(/max-age=31536000.*immutable/) });
    expect(await getApp(new URL('/no/such/page', url).href)).toMatchObject({ status: 404, body: expect.stringContaining('Astro says: no such page') });
    await expectNoSources(url, { '/package.json': '"astro build"', '/src/pages/index.astro': 'const title', '/astro.config.mjs': 'defineConfig', '/dist/server/entry.mjs': 'import' });
  }, 900_000);

  it('React Router 7 with ssr: false: build/client served as a single-page app, /about falls back to index.html', async () => {
    const status = await laneResult('react-router-spa');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'react-router', build: 'npm run build', start: null, outputDir: 'build/client' });
    const url = status.url ?? '';
    const home = await head(url);
    expect(home).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache' });
    expect(home.body).toContain('"isSpaMode":true');
    // No 404.html: every unknown path is the app's index.html, whose router renders /about.
    expect(await head(new URL('/about', url).href)).toMatchObject({ status: 200, body: home.body });
    const entry = assetOf(home.body, url, /^\/assets\/entry\.client-[\w-]+\.js$/);
    expect(await head(entry)).toMatchObject({ status: 200, type: 'text/javascript; charset=utf-8', cache: 'public, max-age=31536000, immutable' });
    await expectNoSources(url, { '/package.json': '"react-router build"', '/app/root.tsx': 'ScrollRestoration', '/react-router.config.ts': 'ssr: false' });
  }, 900_000);

  it('Remix v2 (Vite): remix vite:build, remix-serve, a server-rendered route with a loader, its assets', async () => {
    const status = await laneResult('remix-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'remix', build: 'npm run build', start: './node_modules/.bin/remix-serve ./build/server/index.js', outputDir: 'build/server/index.js' });
    const url = status.url ?? '';
    const home = await getApp(url);
    expect(home.status).toBe(200);
    expect(home.body).toContain('<title>Zepid Remix e2e</title>');
    expect(home.body).toContain('Welcome to Remix');
    const about = await getApp(new URL('/about', url).href);
    expect(about.status).toBe(200);
    expect(about.body).toContain(`About, served by Node <!-- -->${process.version}`);
    const entry = assetOf(home.body, url, /^\/assets\/entry\.client-[\w-]+\.js$/);
    expect(await head(entry)).toMatchObject({ status: 200, type: expect.stringMatching(/javascript/), cache: expect.stringMatching(/max-age=31536000.*immutable/) });
    expect((await getApp(new URL('/no/such/page', url).href)).status).toBe(404);
    await expectNoSources(url, { '/package.json': '"remix vite:build"', '/app/root.tsx': 'ScrollRestoration', '/build/server/index.js': 'assetsBuildDirectory' });
  }, 900_000);

  it('SvelteKit with adapter-static (sv add, prerendered): build/ served, /about finds about.html', async () => {
    const status = await laneResult('kit-static');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'sveltekit', build: 'npm run build', start: null, outputDir: 'build' });
    const url = status.url ?? '';
    const home = await head(url);
    expect(home).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache' });
    expect(home.body).toContain('Welcome to SvelteKit');
    const aboutUrl = new URL('/about', url).href;
    const about = await head(aboutUrl);
    expect(about).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache' });
    expect(about.body).toContain('About this SvelteKit site');
    const start = assetOf(about.body, aboutUrl, /^\/_app\/immutable\/entry\/start\.[\w-]+\.js$/);
    expect(await head(start)).toMatchObject({ status: 200, type: 'text/javascript; charset=utf-8', cache: 'public, max-age=31536000, immutable' });
    await expectNoSources(url, { '/package.json': '"devDependencies"', '/src/routes/+layout.ts': 'prerender', '/vite.config.ts': 'adapter-static', '/src/app.html': '%sveltekit.head%' });
  }, 900_000);

  it('Next.js output: \'export\': out/ served, /about finds about.html, its 404.html with 404', async () => {
    const status = await laneResult('next-export');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'next', build: 'npm run build', start: null, outputDir: 'out' });
    const url = status.url ?? '';
    const home = await head(url);
    expect(home).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache' });
    expect(home.body).toContain('<title>Zepid Next export e2e</title>');
    const about = await head(new URL('/about', url).href);
    expect(about).toMatchObject({ status: 200, type: 'text/html; charset=utf-8' });
    expect(about.body).toContain('About this exported Next site');
    const chunk = assetOf(home.body, url, /^\/_next\/static\/.+\.js$/);
    expect(await head(chunk)).toMatchObject({ status: 200, type: 'text/javascript; charset=utf-8', cache: 'public, max-age=31536000, immutable' });
    expect(await head(new URL('/no/such/page', url).href)).toMatchObject({ status: 404, body: expect.stringContaining('Next export says: no such page') });
    await expectNoSources(url, { '/package.json': '"next build"', '/app/page.js': 'export default', '/next.config.mjs': "output: 'export'" });
  }, 900_000);
  it.each([
    ['vue-ts', 'vite-vue', 'createApp(App)'],
    ['svelte-ts', 'vite-svelte', 'mount(App'],
  ])('Vite %s (create-vite as it comes): static from dist only, deep links answer index.html, assets typed, compressed and immutable', async (template, framework, marker) => {
    const status = await laneResult(`vite-${template}`);
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework, packageManager: 'npm', install: 'npm install --no-audit --no-fund', build: 'npm run build', start: null, outputDir: 'dist' });
    const url = status.url ?? '';
    const home = await head(url);
    expect(home).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', cache: 'no-cache', body: expect.stringContaining('<div id="app"></div>') });
    // No 404.html in dist/: a single-page app, every unknown path answers the index.
    expect(await head(new URL('/some/deep/link', url).href)).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', body: home.body });
    const script = assetOf(home.body, url, /^\/assets\/index-[\w-]+\.js$/);
    const plain = await raw(script);
    expect(plain.status).toBe(200);
    expect(plain.headers).toMatchObject({ 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=31536000, immutable' });
    expect(plain.headers['content-encoding']).toBeUndefined();
    const br = await raw(script, { 'accept-encoding': 'gzip, deflate, br' });
    expect(br.headers).toMatchObject({ 'content-encoding': 'br', 'cache-control': 'public, max-age=31536000, immutable' });
    expect(br.body.length).toBeLessThan(plain.body.length);
    expect(brotliDecompressSync(br.body).equals(plain.body)).toBe(true);
    const gzip = await raw(script, { 'accept-encoding': 'gzip' });
    expect(gzip.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(gzip.body).equals(plain.body)).toBe(true);
    const css = assetOf(home.body, url, /^\/assets\/index-[\w-]+\.css$/);
    expect(await head(css)).toMatchObject({ status: 200, type: 'text/css; charset=utf-8', cache: 'public, max-age=31536000, immutable' });
    await expectNoSources(url, { '/package.json': '"devDependencies"', '/src/main.ts': marker, '/vite.config.ts': 'defineConfig', '/index.html?x': 'src="/src/main.ts"' });
  }, 900_000);

  /** A server app's /version: the Node and NODE_ENV it runs with. */
  const versionOf = async (url: string) => JSON.parse((await getApp(new URL('/version', url).href)).body) as { node: string; nodeEnv: string };

  it('Fastify (fastify generate): npm ci, npm start (fastify start, on PORT), on the worker\'s Node with NODE_ENV=production', async () => {
    const status = await laneResult('fastify-app');
    expectCompleted(status);
    expect(status.build).toMatchObject({ framework: 'fastify', packageManager: 'npm', install: 'npm ci', start: 'npm start' });
    expect(status.logs.some((line) => line.includes(`toolchain: node ${process.version}`))).toBe(true);
    const url = status.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: '{"root":true}' });
    expect(await getApp(new URL('/example', url).href)).toMatchObject({ status: 200, body: 'this is an example' });
    expect(await versionOf(url)).toEqual({ node: process.version, nodeEnv: 'production' });
    // `fastify start` listens on FASTIFY_ADDRESS (127.0.0.1, given by the service), not on 0.0.0.0 as it would in a container.
    expect(status.logs.filter((line) => line.includes('warning: the app listens on'))).toEqual([]);
    await expectNoSources(url, { '/package.json': '"fastify start', '/app.js': 'AutoLoad' });
  }, 900_000);

  /**
   * Koa's README app and Hono's Node template listen on port 3000 whatever PORT says: nothing a
   * service can do on a shared host (two such apps, or two revisions of one, cannot both have 3000),
   * so the deployment fails saying what to change; with that change, the same app completes.
   */
  it.each([
    ['koa', 'Koa (its README\'s Hello Koa)', 'app.listen(process.env.PORT, process.env.HOST)', 'Hello Koa', null],
    ['hono', 'Hono (create-hono\'s nodejs template)', 'serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: process.env.HOST })', 'Hello Hono!', 'npm run build'],
  ])('%s: as it comes, failed START_FAILED naming port 3000 and the change; with it, completes on PORT', async (framework, _title, fix, hello, build) => {
    const asIs = await laneResult(`${framework}-app`);
    expect(asIs.status, `${asIs.errorCode ?? ''} ${asIs.error ?? ''}`).toBe('failed');
    expect(asIs.errorCode).toBe('START_FAILED');
    expect(asIs.error).toContain('The app listens on port 3000, not on the port it is given in PORT');
    expect(asIs.error).toContain(`Make it listen on process.env.PORT (and on process.env.HOST, 127.0.0.1, so that only the router reaches it), e.g. ${fix}.`);
    expect(asIs.url).toBeNull();
    expect(asIs.build).toMatchObject({ framework, packageManager: 'npm', install: 'npm ci', build, start: 'npm start' });
    const fixed = await laneResult(`${framework}-app-fixed`);
    expectCompleted(fixed);
    const url = fixed.url ?? '';
    expect(await getApp(url)).toMatchObject({ status: 200, body: hello });
    expect(await versionOf(url)).toEqual({ node: process.version, nodeEnv: 'production' });
    // It listens on HOST (loopback) as the message asked: no warning about every interface.
    expect(fixed.logs.filter((line) => line.includes('warning: the app listens on'))).toEqual([]);
    await expectNoSources(url, { '/package.json': '"node ', '/app.js': "require('koa')", '/src/index.ts': "from 'hono'", '/tsconfig.json': 'compilerOptions' });
  }, 900_000);
});
