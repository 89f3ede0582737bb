import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildJob } from '@zepid/core';
import { alwaysHeld, newDeploymentId, planBuild, silentLogger } from '@zepid/core';
import { DependencyCache, FileSecretStore, FsArtifactStore, LocalBuilder, ProcessRegistry, resolveIsolation, SqliteDatabase } from '../src/index.ts';
import { packArchive } from '../../../apps/worker/src/steps/context-archive.ts';

const LIMITS = { memoryMb: 4096, processes: 512, openFiles: 4096 };
const npmEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, npm_config_update_notifier: 'false' };

/**
 * The dependency cache in the local builder, on projects whose one dependency is a package tarball
 * in the source (`file:dep-1.0.0.tgz`): npm installs it for real (npm ci, package-lock.json written
 * by npm itself), offline. The real-template run (test/e2e/build-cache.test.ts) covers Vite, uid
 * isolation and the API.
 */
describe('dependency cache', () => {
  let dir: string;
  let artifacts: FsArtifactStore;
  let builder: LocalBuilder;
  let cacheDir: string;

  const makeBuilder = async (maxBytes = 64 * 1024 * 1024) => {
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
      passthrough: {},
      dependencyCache: new DependencyCache({ dir: cacheDir, maxBytes, maxAgeMs: 24 * 3600_000, logger: silentLogger }),
    });
    await builder.start();
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-depcache-'));
    cacheDir = join(dir, 'cache', 'deps');
    artifacts = new FsArtifactStore(join(dir, 'artifacts'), new SqliteDatabase(join(dir, 'zepid.db')));
    await artifacts.start();
    await makeBuilder();
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A project depending on `dep@<version>` from a tarball in the source, with npm's own lockfile. */
  async function project(version: string, extra: Record<string, string> = {}, pkgExtra: Record<string, unknown> = {}): Promise<Record<string, Buffer>> {
    const work = await mkdtemp(join(dir, 'project-'));
    await mkdir(join(work, 'package'));
    await writeFile(join(work, 'package', 'package.json'), JSON.stringify({ name: 'dep', version, main: 'index.js' }));
    await writeFile(join(work, 'package', 'index.js'), `module.exports = 'dep ${version}';\n`);
    execFileSync('tar', ['czf', `dep-${version}.tgz`, 'package'], { cwd: work });
    const pkg = { name: 'site', version: '1.0.0', private: true, dependencies: { dep: `file:dep-${version}.tgz` }, scripts: { build: 'node build.cjs' }, ...pkgExtra };
    await writeFile(join(work, 'package.json'), JSON.stringify(pkg, null, 2));
    execFileSync('npm', ['install', '--package-lock-only', '--offline', '--no-audit', '--no-fund'], { cwd: work, env: npmEnv, stdio: 'ignore' });
    return {
      'package.json': await readFile(join(work, 'package.json')),
      'package-lock.json': await readFile(join(work, 'package-lock.json')),
      [`dep-${version}.tgz`]: await readFile(join(work, `dep-${version}.tgz`)),
      'build.cjs': Buffer.from("const fs = require('fs'); fs.mkdirSync('dist', { recursive: true }); fs.writeFileSync('dist/index.html', require('dep') + ' ' + fs.readFileSync('src/page.txt', 'utf8'));\n"),
      'src/page.txt': Buffer.from('page one'),
      ...Object.fromEntries(Object.entries(extra).map(([path, content]) => [path, Buffer.from(content)])),
    };
  }

  async function build(files: Record<string, Buffer>, orgId = 'org-a', startCommand: string | null = null) {
    const deploymentId = newDeploymentId();
    const entries = Object.entries(files).map(([path, data]) => ({ path, data }));
    await artifacts.putContext(deploymentId, packArchive(entries));
    const plan = planBuild(new Map(entries.map((entry) => [entry.path, entry.data])), { buildCommand: null, startCommand, port: null });
    const lines: string[] = [];
    const job: BuildJob = {
      deploymentId,
      orgId,
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
    const image = await builder.build(job);
    await builder.deleteSandbox(deploymentId);
    return { deploymentId, image: image.image, lines, log: lines.join('\n') };
  }

  const restoredLine = /^dependencies restored from the cache of (\S+) \(key [0-9a-f]{12}: node_modules, (moved in|copied)\) in \d+\.\d s; install skipped \(it took \d+\.\d s there\)$/;

  it('a second build of the same lockfile in the same organization restores node_modules and skips the install; the output is the same', async () => {
    const files = await project('1.0.0');
    const first = await build(files);
    expect(first.log).toMatch(/dependency cache: no entry for key [0-9a-f]{12} in this organization/);
    expect(first.lines).toContain('$ npm ci');
    expect(first.log).toMatch(/dependency cache: saved node_modules for later builds of this organization/);
    expect(await readFile(join(first.image, 'index.html'), 'utf8')).toBe('dep 1.0.0 page one');

    // One source file changed: same key.
    const second = await build({ ...files, 'src/page.txt': Buffer.from('page two') });
    const restored = second.lines.find((line) => restoredLine.test(line));
    expect(restored, second.log).toBeDefined();
    expect(restoredLine.exec(restored ?? '')?.[1]).toBe(first.deploymentId);
    // A static site drops node_modules: moved in, and given back after the build.
    expect(restoredLine.exec(restored ?? '')?.[2]).toBe('moved in');
    expect(second.lines).toContain('$ npm ci  (skipped: dependencies restored from the cache)');
    expect(second.lines).not.toContain('$ npm ci');
    expect(await readFile(join(second.image, 'index.html'), 'utf8')).toBe('dep 1.0.0 page two');
    // A static site keeps only its output; the cache entry still holds the dependencies.
    expect(await readdir(second.image)).toEqual(['index.html']);
    const third = await build({ ...files, 'src/page.txt': Buffer.from('page three') });
    expect(third.lines.some((line) => restoredLine.test(line))).toBe(true);
  }, 60_000);

  it('another organization with the same lockfile does not get the cache', async () => {
    const files = await project('1.0.0');
    await build(files, 'org-a');
    const other = await build(files, 'org-b');
    expect(other.lines.some((line) => line.startsWith('dependencies restored'))).toBe(false);
    expect(other.lines).toContain('$ npm ci');
    expect(other.log).toMatch(/no entry for key [0-9a-f]{12} in this organization/);
    // One directory per organization.
    expect((await readdir(cacheDir)).length).toBe(2);
  }, 60_000);

  it('a changed lockfile (another dependency version), a changed .npmrc or a changed install script is another key: installed, never restored', async () => {
    const v1 = await project('1.0.0');
    await build(v1);
    const v2 = await build(await project('2.0.0'));
    expect(v2.lines.some((line) => line.startsWith('dependencies restored'))).toBe(false);
    expect(await readFile(join(v2.image, 'index.html'), 'utf8')).toBe('dep 2.0.0 page one');
    const npmrc = await build({ ...v1, '.npmrc': Buffer.from('fund=false\n') });
    expect(npmrc.lines).toContain('$ npm ci');
    const script = await build(await project('1.0.0', {}, { scripts: { build: 'node build.cjs', postinstall: 'node -e 1' } }));
    expect(script.lines).toContain('$ npm ci');
    // The unchanged project still hits its own entry.
    expect((await build(v1)).lines.some((line) => restoredLine.test(line))).toBe(true);
  }, 90_000);

  it('a corrupt or partial entry does not break the build: it installs, and the entry is replaced', async () => {
    const files = await project('1.0.0');
    await build(files);
    const [org] = await readdir(cacheDir);
    const [entry] = (await readdir(join(cacheDir, org ?? ''))).filter((name) => !name.startsWith('.'));
    const entryDir = join(cacheDir, org ?? '', entry ?? '');
    // node_modules gone (a partial entry).
    await rm(join(entryDir, 'node_modules'), { recursive: true });
    const partial = await build(files);
    expect(partial.lines).toContain('$ npm ci');
    expect(await readFile(join(partial.image, 'index.html'), 'utf8')).toBe('dep 1.0.0 page one');
    expect(existsSync(join(entryDir, 'node_modules', 'dep', 'index.js'))).toBe(true);
    // Unreadable metadata.
    await writeFile(join(entryDir, 'entry.json'), '{"key":');
    const corrupt = await build(files);
    expect(corrupt.lines).toContain('$ npm ci');
    expect((await build(files)).lines.some((line) => restoredLine.test(line))).toBe(true);
  }, 90_000);

  it('a build that fails after moving the entry\'s node_modules in does not give it back: the next build installs and saves again', async () => {
    const files = await project('1.0.0');
    await build(files);
    await expect(build({ ...files, 'build.cjs': Buffer.from("throw new Error('broken build')\n") })).rejects.toThrow(/broken build/);
    const next = await build(files);
    expect(next.lines).toContain('$ npm ci');
    expect(await readFile(join(next.image, 'index.html'), 'utf8')).toBe('dep 1.0.0 page one');
    expect((await build(files)).lines.some((line) => restoredLine.test(line))).toBe(true);
  }, 90_000);

  it('a Node app keeps node_modules in its image and in the cache; the cache is the worker\'s own (0700)', async () => {
    const files = await project('1.0.0', { 'server.js': "console.log(require('dep'))\n" });
    const first = await build(files, 'org-a', 'node server.js');
    expect(existsSync(join(first.image, 'node_modules', 'dep', 'index.js'))).toBe(true);
    const second = await build(files, 'org-a', 'node server.js');
    // A Node app's image keeps node_modules: copied, the entry stays in place.
    expect(second.lines.map((line) => restoredLine.exec(line)?.[2]).find((how) => how !== undefined)).toBe('copied');
    expect(existsSync(join(second.image, 'node_modules', 'dep', 'index.js'))).toBe(true);
    expect((await stat(cacheDir)).mode & 0o777).toBe(0o700);
  }, 60_000);

  it('no lockfile: not used, and the log says why', async () => {
    const files = await project('1.0.0');
    const { 'package-lock.json': _lock, ...rest } = files;
    const result = await build(rest);
    expect(result.lines).toContain('dependency cache: not used (no lockfile: an install without one is not reproducible)');
    expect(await readdir(cacheDir)).toEqual([]);
  }, 60_000);

  it('stays within LOCAL_BUILD_CACHE_MAX_MB (least recently used first) and drops entries unused for longer than the age limit', async () => {
    const cache = new DependencyCache({ dir: join(dir, 'bounded'), maxBytes: 10_000, maxAgeMs: 3600_000, logger: silentLogger });
    await cache.start();
    const org = join(dir, 'bounded', 'org');
    const entry = async (name: string, bytes: number, usedAgoMs: number) => {
      await mkdir(join(org, name, 'node_modules'), { recursive: true });
      await writeFile(join(org, name, 'entry.json'), JSON.stringify({ key: name, deploymentId: 'dep_x', installMs: 1000, bytes, createdAt: new Date().toISOString() }));
      const at = new Date(Date.now() - usedAgoMs);
      await utimes(join(org, name, 'entry.json'), at, at);
    };
    await entry('old', 100, 2 * 3600_000);
    await entry('lru', 6000, 60_000);
    await entry('recent', 6000, 1000);
    expect(await cache.prune()).toEqual({ removed: 2, bytes: 6000 });
    expect((await readdir(org)).sort()).toEqual(['recent']);
  });
});
