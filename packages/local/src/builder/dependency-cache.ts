import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BuildPlan, Logger } from '@zepid/core';
import { installInputs } from '@zepid/core';

const run = promisify(execFile);

/**
 * Installed dependencies kept between builds (issue 16), as Vercel and Netlify keep them: a build
 * whose install inputs are the same as an earlier build's of the same organization gets that build's
 * `node_modules` (and framework caches such as `.next/cache`) copied in and skips its install.
 *
 * - Key: SHA-256 of the lockfile, the dependency fields and install scripts of package.json, the
 *   install config files (.npmrc …), the package manager and its pinned version, the install
 *   command, the worker's Node version, platform and architecture, and the builder's version. Any
 *   difference is another key; nothing is reused across keys.
 * - Per organization: entries live under `<dir>/<sha256(org)>/`, one directory per key, and a build
 *   only ever looks in its own organization's directory. The whole tree is the worker's own (0700,
 *   root under uid isolation): no tenant reads it. The worker copies an entry into a new sandbox
 *   before handing the sandbox to the app's uid, and takes what a build saved only from a copy the
 *   build's own uid made (so the worker never reads a tenant's tree as root), then owns it.
 * - Bounded: LOCAL_BUILD_CACHE_MAX_MB over all organizations (least recently used entries go first)
 *   and LOCAL_BUILD_CACHE_MAX_AGE_DAYS since an entry was last used.
 * - Not used: without a lockfile (an install is not reproducible then), for workspaces and patched
 *   dependencies (the install reads more than the root manifest), for Yarn 2+ (Plug'n'Play keeps no
 *   node_modules), and when the source brings its own node_modules.
 */
export interface DependencyCacheOptions {
  dir: string;
  /** Total size of all entries; 0 turns the cache off. */
  maxBytes: number;
  /** Entries unused for longer are removed. */
  maxAgeMs: number;
  logger: Logger;
}

/** What createSandbox decided, kept beside the sandbox (worker-owned, out of the tenant's reach) for the build step. */
export interface CacheDecision {
  /** Null when the cache does not apply; `reason` says why. */
  key: string | null;
  reason: string;
  /** The deployment whose install was restored, when one was. */
  restoredFrom: string | null;
  /** How long that deployment's install took. */
  installMs: number | null;
  /** node_modules was moved out of the entry (not copied): the build gives it back. */
  checkedOut: boolean;
}

interface EntryMeta {
  key: string;
  deploymentId: string;
  installMs: number;
  bytes: number;
  createdAt: string;
}

/** package.json fields that change what an install writes. */
const INSTALL_FIELDS = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies', 'bundleDependencies', 'bundledDependencies', 'overrides', 'resolutions', 'pnpm', 'packageManager', 'engines'];
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare', 'prepublish'];
/** Framework caches kept with an entry: the project path and the entry's name for it. */
export const FRAMEWORK_CACHES = [{ path: '.next/cache', name: 'next-cache' }] as const;
const META = 'entry.json';
const STAGING_MAX_AGE_MS = 3600_000;

export class DependencyCache {
  private readonly options: DependencyCacheOptions;

  constructor(options: DependencyCacheOptions) {
    this.options = options;
  }

  get enabled(): boolean {
    return this.options.maxBytes > 0;
  }

  async start(): Promise<void> {
    if (!this.enabled) return;
    await mkdir(this.options.dir, { recursive: true, mode: 0o700 });
    await chmod(this.options.dir, 0o700);
    await this.prune();
  }

  /** The cache key of a source just unpacked into `source` (before any command ran there), or why there is none. */
  async keyFor(plan: BuildPlan, source: string, builderIdentity: string): Promise<{ key: string | null; reason: string }> {
    if (!this.enabled) return { key: null, reason: 'the dependency cache is off (LOCAL_BUILD_CACHE_MAX_MB=0)' };
    const manager = plan.packageManager;
    if (manager === null || plan.install === null) return { key: null, reason: 'no package.json' };
    if (manager.lockfile === null) return { key: null, reason: 'no lockfile: an install without one is not reproducible' };
    if (manager.tool?.startsWith('@yarnpkg/') === true) return { key: null, reason: 'Yarn 2+ keeps no node_modules (Plug\'n\'Play)' };
    const paths = (await readdir(source, { recursive: true })).map((path) => path.split('\\').join('/'));
    if (paths.some((path) => path === 'node_modules' || path.startsWith('node_modules/'))) return { key: null, reason: 'the source brings its own node_modules' };
    const inputs = installInputs(plan, paths);
    if (inputs === null) return { key: null, reason: 'workspaces or patched dependencies: the install reads more than the root manifest' };
    const pkg = JSON.parse(await readFile(join(source, 'package.json'), 'utf8')) as Record<string, unknown>;
    if (pkg.workspaces !== undefined) return { key: null, reason: 'workspaces: the install reads more than the root manifest' };
    const hash = createHash('sha256');
    const scripts = (pkg.scripts ?? {}) as Record<string, unknown>;
    hash.update(JSON.stringify({
      builder: builderIdentity,
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      manager: manager.name,
      tool: manager.tool,
      install: plan.install,
      manifest: INSTALL_FIELDS.map((field) => [field, pkg[field] ?? null]),
      scripts: INSTALL_SCRIPTS.map((name) => [name, scripts[name] ?? null]),
    }));
    for (const input of inputs.filter((path) => path !== 'package.json').sort()) {
      hash.update(`\u0000${input}\u0000`);
      hash.update(await readFile(join(source, input)));
    }
    return { key: hash.digest('hex'), reason: `key over ${inputs.join(', ')}, ${manager.tool ?? 'npm'}, node ${process.version}, "${plan.install}"` };
  }

  private orgDir(orgId: string): string {
    return join(this.options.dir, createHash('sha256').update(orgId).digest('hex').slice(0, 32));
  }

  /**
   * Copies the entry of `key` (this organization's only) into `source`: node_modules and framework
   * caches. Null when there is none or it cannot be used; a failed copy leaves nothing behind.
   */
  async restore(orgId: string, key: string, source: string, options: { checkOut: boolean }): Promise<{ deploymentId: string; installMs: number; restored: string[]; checkedOut: boolean } | null> {
    const entry = join(this.orgDir(orgId), key);
    const meta = await readEntry(entry, key);
    if (meta === null) return null;
    const restored: string[] = [];
    let checkedOut = false;
    try {
      if (options.checkOut) {
        // Moved, not copied: the build gives it back (a static site drops node_modules anyway). Until
        // then the entry has none, so a build of the same key meanwhile installs; a build that fails
        // never gives it back, and the next one installs and saves a new entry.
        checkedOut = await rename(join(entry, 'node_modules'), join(source, 'node_modules')).then(
          () => true,
          (error: NodeJS.ErrnoException) => {
            if (error.code === 'EXDEV') return false;
            throw error;
          },
        );
      }
      if (!checkedOut) await copyTree(join(entry, 'node_modules'), join(source, 'node_modules'));
      restored.push('node_modules');
      for (const cache of FRAMEWORK_CACHES) {
        const saved = await lstat(join(entry, cache.name)).catch(() => null);
        if (saved === null || !saved.isDirectory()) continue;
        await mkdir(join(source, cache.path, '..'), { recursive: true });
        await copyTree(join(entry, cache.name), join(source, cache.path));
        restored.push(cache.path);
      }
    } catch (error) {
      this.options.logger.warn({ err: error, entry }, 'dependency cache entry could not be copied; installing instead');
      await rm(join(source, 'node_modules'), { recursive: true, force: true });
      for (const cache of FRAMEWORK_CACHES) await rm(join(source, cache.path), { recursive: true, force: true });
      return null;
    }
    // Last use, for the age limit and least-recently-used eviction.
    const now = new Date();
    await utimes(join(entry, META), now, now).catch(() => undefined);
    return { deploymentId: meta.deploymentId, installMs: meta.installMs, restored, checkedOut };
  }

  /** Whether this organization has an entry for `key` (then a build saves only its framework caches). */
  async has(orgId: string, key: string): Promise<boolean> {
    return (await readEntry(join(this.orgDir(orgId), key), key)) !== null;
  }

  /**
   * Takes `saved` (a directory the build's uid filled with copies of its node_modules and framework
   * caches, named as in the entry) into the cache: moved out of the tenant's reach first, then made
   * the worker's own, then renamed into place. With an entry already there, only the framework caches
   * are replaced. Returns the entry's size in bytes, or null when nothing was saved.
   */
  async save(orgId: string, key: string, saved: string, meta: { deploymentId: string; installMs: number | null }): Promise<number | null> {
    const org = this.orgDir(orgId);
    await mkdir(org, { recursive: true, mode: 0o700 });
    const staging = join(org, `.staging-${meta.deploymentId}`);
    await rm(staging, { recursive: true, force: true });
    // rename(2) moves a symbolic link itself, never what it points to: checked right after.
    await rename(saved, staging);
    try {
      const moved = await lstat(staging);
      if (!moved.isDirectory()) return null;
      if (process.getuid?.() === 0) await run('chown', ['-R', '0:0', staging]);
      // No set-id bits from a tenant's tree in the worker's (chmod -R leaves symbolic links alone).
      await run('chmod', ['-R', 'u+rwX,go-rwx,ug-s', staging]);
      const entry = join(org, key);
      const existing = await readEntry(entry, key);
      const checkedOut = existing === null ? await readMeta(entry) : null;
      if (checkedOut !== null && checkedOut.key === key && (await lstat(join(staging, 'node_modules')).catch(() => null))?.isDirectory() === true) {
        // node_modules given back by the build that checked it out.
        await rename(join(staging, 'node_modules'), join(entry, 'node_modules'));
      }
      const current = existing ?? (await readEntry(entry, key));
      if (current !== null) {
        for (const cache of FRAMEWORK_CACHES) {
          const fresh = await lstat(join(staging, cache.name)).catch(() => null);
          if (fresh === null || !fresh.isDirectory()) continue;
          await rm(join(entry, cache.name), { recursive: true, force: true });
          await rename(join(staging, cache.name), join(entry, cache.name));
        }
        return this.measure(entry, current);
      }
      const modules = await lstat(join(staging, 'node_modules')).catch(() => null);
      if (modules === null || !modules.isDirectory() || meta.installMs === null) return null;
      const bytes = await diskBytes(staging);
      const record: EntryMeta = { key, deploymentId: meta.deploymentId, installMs: meta.installMs, bytes, createdAt: new Date().toISOString() };
      await rm(entry, { recursive: true, force: true });
      await writeFile(join(staging, META), `${JSON.stringify(record)}\n`, { mode: 0o600 });
      await rename(staging, entry);
      return bytes;
    } finally {
      await rm(staging, { recursive: true, force: true });
      await this.prune().catch((error: unknown) => this.options.logger.warn({ err: error }, 'dependency cache pruning failed'));
    }
  }

  private async measure(entry: string, meta: EntryMeta): Promise<number> {
    const bytes = await diskBytes(entry);
    if (bytes !== meta.bytes) await writeFile(join(entry, META), `${JSON.stringify({ ...meta, bytes })}\n`, { mode: 0o600 });
    return bytes;
  }

  /** Removes entries unused for longer than the age limit, then the least recently used until the total fits. */
  async prune(): Promise<{ removed: number; bytes: number }> {
    const entries: { path: string; bytes: number; usedAt: number }[] = [];
    const now = Date.now();
    let removed = 0;
    for (const org of await readdir(this.options.dir).catch(() => [] as string[])) {
      const orgPath = join(this.options.dir, org);
      for (const name of await readdir(orgPath).catch(() => [] as string[])) {
        const path = join(orgPath, name);
        if (name.startsWith('.staging-')) {
          // A save that died half-way: nobody will finish it.
          const info = await stat(path).catch(() => null);
          if (info !== null && now - info.mtimeMs > STAGING_MAX_AGE_MS) await rm(path, { recursive: true, force: true });
          continue;
        }
        const meta = await readMeta(path);
        const used = await stat(join(path, META)).catch(() => null);
        if (meta === null || used === null || now - used.mtimeMs > this.options.maxAgeMs) {
          // Unreadable (partial, corrupt) or too old.
          const info = await stat(path).catch(() => null);
          if (meta === null && info !== null && now - info.mtimeMs < STAGING_MAX_AGE_MS) continue;
          await rm(path, { recursive: true, force: true });
          removed += 1;
          continue;
        }
        entries.push({ path, bytes: meta.bytes, usedAt: used.mtimeMs });
      }
    }
    entries.sort((a, b) => a.usedAt - b.usedAt);
    let total = entries.reduce((sum, entry) => sum + entry.bytes, 0);
    for (const entry of entries) {
      if (total <= this.options.maxBytes) break;
      await rm(entry.path, { recursive: true, force: true });
      total -= entry.bytes;
      removed += 1;
    }
    return { removed, bytes: total };
  }
}

/** An entry that can be restored: its metadata names `key` and its node_modules is a directory. */
async function readEntry(entry: string, key: string): Promise<EntryMeta | null> {
  const meta = await readMeta(entry);
  if (meta === null || meta.key !== key) return null;
  const modules = await lstat(join(entry, 'node_modules')).catch(() => null);
  return modules?.isDirectory() === true ? meta : null;
}

async function readMeta(entry: string): Promise<EntryMeta | null> {
  try {
    const meta = JSON.parse(await readFile(join(entry, META), 'utf8')) as Partial<EntryMeta>;
    if (typeof meta.key !== 'string' || typeof meta.deploymentId !== 'string' || typeof meta.installMs !== 'number' || typeof meta.bytes !== 'number') return null;
    return meta as EntryMeta;
  } catch {
    return null;
  }
}

/**
 * `cp -a --reflink=auto`: links stay links (never followed), modes and times kept; on a filesystem
 * with reflinks (btrfs, XFS) the data is shared copy-on-write, elsewhere copied (a Vite app's 100 MB
 * of node_modules in ~0.5 s on ext4, against ~8 s for npm ci from a warm npm cache).
 */
async function copyTree(from: string, to: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--no-target-directory', from, to]);
}

async function diskBytes(path: string): Promise<number> {
  const { stdout } = await run('du', ['-sb', path]);
  return Number(stdout.split('\t')[0]) || 0;
}
