import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, cp, link, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Isolation } from './isolation.ts';

/**
 * The Node that builds and apps run on: the worker's own (`process.execPath`) and an npm beside it,
 * first on the PATH of every user command as `<dir>/bin/{node,npm,npx}`, so a `node` or `npm` found
 * elsewhere on PATH (a distribution's older Node in /usr/bin) is never used.
 *
 * Under uid isolation the build user must reach them. When the worker's Node lives where it cannot
 * (e.g. `~/.node24` as root, /root being 0700), the binary is hard-linked (or copied, across
 * filesystems) under the data dir; npm likewise is copied. CA files named by the build environment
 * (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, npm_config_cafile) are copied the same way when unreadable.
 */
export interface Toolchain {
  /** Directory to put first on PATH. */
  readonly bin: string;
  /** What the build log says about it. */
  readonly description: string;
  /** The pass-through build environment, with CA file paths the build user can read. */
  readonly buildEnv: Readonly<Record<string, string>>;
}

/** Variables whose value is a file the build reads. */
const FILE_VARIABLES = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'npm_config_cafile', 'NPM_CONFIG_CAFILE'];

/**
 * Whether the sandbox user can run `argv` (exit 0): asks the system rather than re-deriving its
 * permission rules. Through a shell, as user commands run: setpriv resolves its own argument before
 * it drops privileges, so `setpriv … /root/x/node` runs where `sh -c /root/x/node` is refused.
 */
function sandboxCan(isolation: Isolation, argv: string[]): boolean {
  const [file, ...args] = isolation.probe(['/bin/sh', '-c', 'exec "$@"', 'sh', ...argv]);
  if (file === undefined) return false;
  const result = spawnSync(file, args, { stdio: 'ignore', timeout: 10_000, env: { PATH: '/usr/bin:/bin' } });
  return result.status === 0;
}

/** Where the npm that comes with this Node lives: beside it (official tarballs), else a system-wide one. */
export function findNpm(execPath: string): string | null {
  const candidates = [
    join(dirname(execPath), '..', 'lib', 'node_modules', 'npm'),
    '/usr/local/lib/node_modules/npm',
    '/usr/lib/node_modules/npm',
    '/usr/share/nodejs/npm',
  ];
  return candidates.find((dir) => existsSync(join(dir, 'bin', 'npm-cli.js'))) ?? null;
}

async function npmVersion(npmDir: string): Promise<string> {
  try {
    return (JSON.parse(await readFile(join(npmDir, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Hard link where possible (no copy of ~120 MB), else a copy; either way mode 0755. */
async function linkOrCopy(from: string, to: string): Promise<'linked' | 'copied'> {
  await rm(to, { force: true });
  try {
    await link(from, to);
    if (((await stat(to)).mode & 0o005) === 0o005) return 'linked';
    // A hard link shares the original's mode: when that is not world-runnable, only a copy helps.
    await rm(to, { force: true });
  } catch {
    // EXDEV (another filesystem) or EPERM: copy.
  }
  await copyFile(from, to);
  await chmod(to, 0o755);
  return 'copied';
}

export async function prepareToolchain(options: {
  dir: string;
  isolation: Isolation;
  /** The pass-through variables from the worker's environment (names and values; never logged). */
  passthrough: Readonly<Record<string, string>>;
  execPath?: string;
  version?: string;
}): Promise<Toolchain> {
  const execPath = options.execPath ?? process.execPath;
  const version = options.version ?? process.version;
  const { dir, isolation } = options;
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  // The worker's umask is 077; these are read-only for everyone but the worker.
  await chmod(dir, 0o755);
  await chmod(bin, 0o755);

  const node = join(bin, 'node');
  let how: string;
  if (isolation.mode === 'none' || sandboxCan(isolation, [execPath, '--version'])) {
    await rm(node, { force: true });
    await symlink(execPath, node);
    how = `${execPath}`;
  } else {
    const done = await linkOrCopy(execPath, node);
    how = `${execPath}, ${done} to ${node} because the build user cannot reach it`;
  }
  if (isolation.mode === 'uid' && !sandboxCan(isolation, [node, '--version'])) {
    throw new Error(
      `The build user cannot run Node at ${node} (the worker's ${execPath}, linked or copied under DATA_DIR): ${dir} or one of its parents ` +
        `is not traversable by that user. Put DATA_DIR where every parent directory is traversable (chmod o+x), or set LOCAL_BUILD_ISOLATION=none.`,
    );
  }

  const foundNpm = findNpm(execPath);
  if (foundNpm === null) {
    throw new Error(`No npm found beside ${execPath} or in /usr/local/lib/node_modules, /usr/lib/node_modules: install npm (it comes with Node's official tarballs)`);
  }
  let npmDir = foundNpm;
  if (isolation.mode === 'uid' && !sandboxCan(isolation, ['/usr/bin/test', '-r', join(foundNpm, 'bin', 'npm-cli.js')])) {
    npmDir = join(dir, 'npm');
    await rm(npmDir, { recursive: true, force: true });
    await cp(foundNpm, npmDir, { recursive: true, dereference: true });
    // Copied under umask 077: open it to the build user (read and traverse, no write).
    spawnSync('chmod', ['-R', 'a+rX', npmDir]);
  }
  for (const [name, cli] of [
    ['npm', 'npm-cli.js'],
    ['npx', 'npx-cli.js'],
  ] as const) {
    // A script rather than a symlink: npm's own shebang would pick whatever `node` PATH finds.
    await writeFile(join(bin, name), `#!/bin/sh\nexec "${node}" "${join(npmDir, 'bin', cli)}" "$@"\n`, { mode: 0o755 });
    await chmod(join(bin, name), 0o755);
  }

  const buildEnv: Record<string, string> = { ...options.passthrough };
  const caDir = join(dir, 'ca');
  for (const name of FILE_VARIABLES) {
    const path = buildEnv[name];
    if (path === undefined || isolation.mode === 'none' || !existsSync(path)) continue;
    if (sandboxCan(isolation, ['/usr/bin/test', '-r', path])) continue;
    await mkdir(caDir, { recursive: true });
    await chmod(caDir, 0o755);
    const copy = join(caDir, `${name}-${basename(path)}`);
    await copyFile(path, copy);
    await chmod(copy, 0o644);
    buildEnv[name] = copy;
  }

  return { bin, description: `node ${version} (${how}), npm ${await npmVersion(npmDir)} (${npmDir})`, buildEnv };
}
