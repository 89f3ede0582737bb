import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, link, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildJob, BuildPlan } from '@zepid/core';
import { alwaysHeld, newDeploymentId, planBuild, silentLogger } from '@zepid/core';
import { FileSecretStore, FsArtifactStore, LocalBuilder, parseIdRange, ProcessRegistry, resolveIsolation, SqliteDatabase, TenantIds } from '../src/index.ts';
import { prepareToolchain } from '../src/builder/toolchain.ts';
import { packArchive } from '../../../apps/worker/src/steps/context-archive.ts';

const isRoot = process.getuid?.() === 0 && existsSync('/usr/bin/setpriv');
const LIMITS = { memoryMb: 4096, processes: 512, openFiles: 4096 };

/**
 * The local builder against small projects that need nothing from the registry (no dependencies):
 * what runs with which NODE_ENV and environment, on which Node, and what a stored build keeps.
 */
describe('LocalBuilder, by build plan', () => {
  let dir: string;
  let artifacts: FsArtifactStore;
  let builder: LocalBuilder;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-plans-'));
    artifacts = new FsArtifactStore(join(dir, 'artifacts'), new SqliteDatabase(join(dir, 'zepid.db')));
    await artifacts.start();
    const secrets = new FileSecretStore(join(dir, 'secrets'));
    await secrets.start();
    builder = new LocalBuilder({
      workDir: join(dir, 'work'),
      imagesDir: join(dir, 'images'),
      npmCache: join(dir, 'npm-cache'),
      artifacts,
      secrets,
      registry: new ProcessRegistry(join(dir, 'processes.json')),
      logger: silentLogger,
      buildTimeoutMs: 60_000,
      isolation: resolveIsolation('none', { ids: null, limits: LIMITS }),
      toolchainDir: join(dir, 'toolchain'),
      toolsDir: join(dir, 'tools'),
      passthrough: { HTTPS_PROXY: 'http://proxy.example:3128', EXTRA_BUILD_SETTING: 'yes' },
    });
    await builder.start();
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function build(files: Record<string, string>, adjust: (plan: BuildPlan) => BuildPlan = (plan) => plan) {
    const deploymentId = newDeploymentId();
    const entries = Object.entries(files).map(([path, content]) => ({ path, data: Buffer.from(content) }));
    await artifacts.putContext(deploymentId, packArchive(entries));
    const plan = adjust(planBuild(new Map(entries.map((entry) => [entry.path, entry.data])), { buildCommand: null, startCommand: null, port: null }));
    const lines: string[] = [];
    const job: BuildJob = {
      deploymentId,
      orgId: 'org',
      projectId: 'p',
      appName: 'p-dev',
      plan,
      contextUri: '',
      envVariableNames: [],
      signal: new AbortController().signal,
      fence: alwaysHeld,
      log: (message) => lines.push(message),
    };
    await builder.createSandbox(job);
    try {
      return { image: await builder.build(job), lines, plan };
    } catch (error) {
      return { error: error as Error & { code?: string; details?: unknown }, lines, plan };
    }
  }

  // Records, from inside the build, what a build sees: NODE_ENV at install and build, Node, env.
  const probe = `const fs = require('fs'); fs.mkdirSync('dist', { recursive: true });
fs.writeFileSync('dist/index.html', '<h1>built</h1>');
fs.writeFileSync('dist/build.json', JSON.stringify({ nodeEnv: process.env.NODE_ENV ?? null, installNodeEnv: fs.readFileSync('install-env.txt', 'utf8'),
  version: process.version, proxy: process.env.HTTPS_PROXY ?? null, extra: process.env.EXTRA_BUILD_SETTING ?? null, secret: process.env.ZEPID_TEST_WORKER_SECRET ?? null }));`;

  it('installs without NODE_ENV (dev dependencies), builds with NODE_ENV=production on the worker\'s Node, and keeps only the output', async () => {
    process.env.ZEPID_TEST_WORKER_SECRET = 'must-not-reach-builds';
    const result = await build({
      'package.json': JSON.stringify({
        name: 'site',
        scripts: { postinstall: 'node -e "require(\'fs\').writeFileSync(\'install-env.txt\', String(process.env.NODE_ENV))"', build: 'node build.cjs' },
      }),
      'build.cjs': probe,
      'src/secret-source.ts': 'export const x = 1;',
    });
    delete process.env.ZEPID_TEST_WORKER_SECRET;
    expect(result.error).toBeUndefined();
    const image = result.image?.image ?? '';
    expect(result.image?.outputDir).toBe('dist');
    expect((await readdir(image)).sort()).toEqual(['build.json', 'index.html']);
    const seen = JSON.parse(await readFile(join(image, 'build.json'), 'utf8')) as Record<string, unknown>;
    expect(seen).toEqual({ nodeEnv: 'production', installNodeEnv: 'undefined', version: process.version, proxy: 'http://proxy.example:3128', extra: 'yes', secret: null });
    expect(result.lines).toContain('build environment from the worker: EXTRA_BUILD_SETTING, HTTPS_PROXY');
    expect(result.lines.join('\n')).not.toContain('proxy.example');
    expect(result.lines.some((line) => line.startsWith(`toolchain: node ${process.version}`))).toBe(true);
    expect(result.lines.some((line) => line.startsWith('package manager: no lockfile and no packageManager field: npm'))).toBe(true);
  });

  it('fails BUILD_OUTPUT_MISSING, naming where it looked, instead of serving the project root', async () => {
    const result = await build({
      'package.json': JSON.stringify({ name: 'site', scripts: { build: 'node -e "1"' } }),
      'index.html': '<p>source, not a build</p>',
    });
    expect(result.error?.code).toBe('BUILD_OUTPUT_MISSING');
    expect(result.error?.message).toMatch(/No index\.html in dist\/, build\/, out\/, public\/ after the build/);
    expect(result.error?.details).toMatchObject({ lookedAt: ['dist', 'build', 'out', 'public'] });
  });

  it('fails BUILD_OUTPUT_MISSING for SvelteKit with adapter-auto, naming both adapters', async () => {
    const result = await build({
      'package.json': JSON.stringify({ name: 'kit', scripts: { build: 'node -e "1"' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-auto': '6' } }),
      'svelte.config.js': "import adapter from '@sveltejs/adapter-auto';",
      // Offline: the real kit is not installed here (the end-to-end test builds the real template).
    }, (plan) => ({ ...plan, install: null }));
    expect(result.plan.framework).toBe('sveltekit');
    expect(result.error?.code).toBe('BUILD_OUTPUT_MISSING');
    expect(result.error?.message).toMatch(/adapter-auto.*@sveltejs\/adapter-node.*@sveltejs\/adapter-static/);
  });

  it('keeps a plain HTML site whole, and a Node app with its directory', async () => {
    const html = await build({ 'index.html': '<h1>hi</h1>', 'about.html': '<p>about</p>' });
    expect((await readdir(html.image?.image ?? '')).sort()).toEqual(['about.html', 'index.html']);
    const app = await build({ 'package.json': JSON.stringify({ name: 'app', scripts: { start: 'node server.js' } }), 'server.js': '' });
    expect(app.plan.kind).toBe('node');
    expect(existsSync(join(app.image?.image ?? '', 'server.js'))).toBe(true);
  });
});

describe.runIf(isRoot)('toolchain under uid isolation (root only)', () => {
  let dir: string;
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("makes a Node that lives under a 0700 directory runnable by the build user, as the worker's version", async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-toolchain-'));
    // The README's setup as root: Node under a directory only root may enter.
    const hidden = join(dir, 'root-home', '.node24', 'bin');
    await mkdir(hidden, { recursive: true });
    await chmod(join(dir, 'root-home'), 0o700);
    const node = join(hidden, 'node');
    await link(process.execPath, node).catch(() => copyFile(process.execPath, node));
    await chmod(join(dir), 0o711);
    const isolation = resolveIsolation('uid', { ids: new TenantIds(new SqliteDatabase(join(dir, 'ids.db')), parseIdRange('1000000000-1000000099')), limits: LIMITS });
    const asNobody = (argv: string[]) => {
      // Through a shell, as builds run (setpriv itself resolves its argument as root).
      const [file, ...args] = isolation.probe(['/bin/sh', '-c', 'exec "$@"', 'sh', ...argv]);
      return spawnSync(file ?? '', args, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
    };
    expect(asNobody([node, '--version']).status).not.toBe(0);

    const data = join(dir, 'data');
    await mkdir(data);
    await chmod(data, 0o711);
    // A private CA kept beside it, as NODE_EXTRA_CA_CERTS often is.
    const ca = join(dir, 'root-home', 'corp-ca.pem');
    await writeFile(ca, '-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n', { mode: 0o600 });
    const toolchain = await prepareToolchain({ dir: join(data, 'toolchain'), isolation, passthrough: { NODE_EXTRA_CA_CERTS: ca, HTTPS_PROXY: 'http://proxy:3128' }, execPath: node });
    expect(asNobody(['/bin/cat', ca]).status).not.toBe(0);
    const passedCa = toolchain.buildEnv.NODE_EXTRA_CA_CERTS ?? '';
    expect(passedCa).not.toBe(ca);
    expect(asNobody(['/bin/cat', passedCa]).stdout).toContain('not a real one');
    expect(toolchain.buildEnv.HTTPS_PROXY).toBe('http://proxy:3128');
    const ran = asNobody([join(toolchain.bin, 'node'), '--version']);
    expect(ran.stdout.trim()).toBe(process.version);
    expect(toolchain.description).toContain('because the build user cannot reach it');
    const npm = asNobody([join(toolchain.bin, 'npm'), '--version']);
    expect(npm.status).toBe(0);
    expect((await stat(join(toolchain.bin, 'node'))).mode & 0o777).toBe(0o755);
  });
});
