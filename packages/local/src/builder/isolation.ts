import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { appName, ENVIRONMENTS } from '@zepid/core';
import type { TenantIds } from './tenant-ids.ts';

const run = promisify(execFile);

export type IsolationSetting = 'auto' | 'uid' | 'none';

/** Whose code a command is: the app (org + project + environment, named by appName) it builds or runs. */
export interface TenantRef {
  orgId: string;
  projectId: string;
  /** `<project>-<hash>-<environment>`: one per project and environment. */
  appName: string;
}

/** Limits every build command and app revision runs under (rlimits, set by prlimit before anything starts). */
export interface ResourceLimits {
  /** RLIMIT_AS of each process, in MiB: the address space it may map (Node itself needs ~1.5 GiB). */
  memoryMb: number;
  /** RLIMIT_NPROC: processes and threads of one app's uid (its builds and revisions together). */
  processes: number;
  /** RLIMIT_NOFILE of each process. */
  openFiles: number;
}

/** One app's identity: what its build commands and revisions run as. */
export interface Tenant {
  /** Null when commands run as the worker's own user (no isolation). */
  readonly uid: number | null;
  /** The project's group: the app's environments share it, to read images a reused build made. */
  readonly gid: number | null;
  /** Runs a command as this tenant, under the limits (and in a private /proc where available). */
  readonly wrap: (argv: string[]) => string[];
  /** Gives the tenant a tree it must write (its sandbox, a revision's HOME): owner-only, nobody else's. */
  readonly handOver: (path: string) => Promise<void>;
  /** A built image: readable by the project's environments (group), by no other tenant (0750). */
  readonly shareImage: (path: string) => Promise<void>;
  /** `base/<uid>`, created and handed over: a cache this app shares with no other (npm's). */
  readonly privateDir: (base: string) => Promise<string>;
}

/**
 * How local mode keeps deployed code away from the service and from other tenants:
 *
 * - `uid`: each app (org + project + environment) gets its own uid and each project its own gid,
 *   from LOCAL_UID_RANGE, allocated once and kept in the embedded database (tenant-ids.ts). Its
 *   builds and revisions run as that uid via `setpriv` (no supplementary groups, no new
 *   privileges), so no other tenant can read its /proc entries (environ, cwd), signal it or read its
 *   owner-only sandbox, HOME and npm cache. Its images are 0750 with the project's group: a build
 *   reused by another environment of the project stays readable to it. Where the kernel allows it,
 *   commands also get a private /proc mounted with hidepid=invisible, so other tenants' processes
 *   are not even listed (their cmdline is world-readable otherwise). The service's own files are
 *   owner-only (umask 077) in a DATA_DIR that is traversable but not listable. Needs root.
 * - `none`: commands run as the worker's own user, with only the cleaned environment between them,
 *   the service and each other. The API refuses several organizations then (LOCAL_SINGLE_TENANT).
 *
 * Both apply the resource limits with `prlimit` (in `none` mode without RLIMIT_NPROC, which would
 * count the worker's own processes). Neither is a container: the network and world-readable files
 * stay shared.
 */
export interface Isolation {
  readonly mode: 'uid' | 'none';
  /** Whether commands see only their own tenant's processes in /proc. */
  readonly privateProc: boolean;
  readonly limits: ResourceLimits;
  /** The identity of an app's builds and revisions. */
  readonly tenant: (ref: TenantRef) => Promise<Tenant>;
  /** Lets tenants pass through these directories (0711) without listing or reading them. */
  readonly traversable: (paths: readonly string[]) => Promise<void>;
  /** Which limit a failed command's output says it ran into, as a sentence for BUILD_FAILED/START_FAILED; null if none. */
  readonly limitHit: (output: readonly string[]) => string | null;
  /**
   * Runs a check as a user that owns nothing here (nobody, no groups): what it can reach, every
   * tenant's uid can (the toolchain's test that builds and apps reach the worker's Node).
   */
  readonly probe: (argv: string[]) => string[];
  /**
   * App deletion: removes the app's private dirs (`<base>/<uid>` under each base, e.g. the npm cache)
   * and frees its uid for another app. The caller has stopped its processes and removed its images
   * and revisions first: no process and no file of the uid may remain. The project's gid is freed
   * with it when no other environment of the project holds a uid (those may hold files of the gid),
   * in the same SQLite transaction (tenant-ids.ts `releaseApp`). Idempotent; nothing in `none` mode.
   */
  readonly release: (ref: TenantRef, privateBases: readonly string[]) => Promise<void>;
  readonly close: () => void;
}

/** The probing identity: nobody and nogroup on Debian, outside LOCAL_UID_RANGE. */
const NOBODY = 65534;
const SETPRIV = '/usr/bin/setpriv';
const PRLIMIT = '/usr/bin/prlimit';
const UNSHARE = '/usr/bin/unshare';
/** Mounts a /proc listing only the caller's uid's processes, in the command's own mount namespace, then runs it. */
const PRIVATE_PROC = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', 'mount -t proc -o hidepid=invisible proc /proc && exec "$@"', 'zepid-sandbox'];

/** Whether this process can run commands as other uids: root with setpriv (and prlimit) installed. */
export function canSwitchUsers(): boolean {
  return process.getuid?.() === 0 && existsSync(SETPRIV) && existsSync(PRLIMIT);
}

/** Whether a private hidepid /proc can be mounted here (root, util-linux unshare, a kernel that allows it). */
function privateProcWorks(): boolean {
  if (!existsSync(UNSHARE)) return false;
  const probe = spawnSync(UNSHARE, [...PRIVATE_PROC, 'true'], { stdio: 'ignore', timeout: 5000 });
  return probe.status === 0;
}

const MiB = 1024 * 1024;

/** Output lines that mean a command ran into one of the limits (Node, npm, glibc and sh wording). */
const LIMIT_SIGNS: { limit: keyof ResourceLimits; pattern: RegExp }[] = [
  { limit: 'memoryMb', pattern: /out of memory|allocation failed|failed to allocate|cannot allocate memory|ENOMEM|bad_alloc|mmap.*failed/i },
  { limit: 'processes', pattern: /EAGAIN|resource temporarily unavailable|fork: retry|cannot fork|pthread_create/i },
  { limit: 'openFiles', pattern: /EMFILE|too many open files/i },
];

export function describeLimit(limit: keyof ResourceLimits, limits: ResourceLimits): string {
  switch (limit) {
    case 'memoryMb':
      return `the memory limit (LOCAL_LIMIT_MEMORY_MB=${limits.memoryMb}: ${limits.memoryMb} MiB of address space per process)`;
    case 'processes':
      return `the process limit (LOCAL_LIMIT_PROCESSES=${limits.processes}: processes and threads per app)`;
    case 'openFiles':
      return `the open files limit (LOCAL_LIMIT_OPEN_FILES=${limits.openFiles} per process)`;
  }
}

function limitArgs(limits: ResourceLimits, perUid: boolean): string[] {
  const args = [`--as=${limits.memoryMb * MiB}`, `--nofile=${limits.openFiles}`];
  if (perUid) args.push(`--nproc=${limits.processes}`);
  return args;
}

export function resolveIsolation(setting: IsolationSetting, options: { ids: TenantIds | null; limits: ResourceLimits }): Isolation {
  const { ids, limits } = options;
  const canSwitch = canSwitchUsers();
  if (setting === 'uid' && !canSwitch) {
    throw new Error(`LOCAL_BUILD_ISOLATION=uid needs the worker to run as root with ${SETPRIV} and ${PRLIMIT} installed`);
  }
  const limitHit = (output: readonly string[]) => {
    const text = output.join('\n');
    const sign = LIMIT_SIGNS.find((candidate) => candidate.pattern.test(text));
    return sign === undefined ? null : `it ran into ${describeLimit(sign.limit, limits)}`;
  };

  if (setting === 'none' || !canSwitch || ids === null) {
    // Unprivileged, limits can still be lowered (not RLIMIT_NPROC: it counts every process of the user).
    const withLimits = existsSync(PRLIMIT) ? (argv: string[]) => [PRLIMIT, ...limitArgs(limits, false), '--', ...argv] : (argv: string[]) => argv;
    const shared: Tenant = {
      uid: null,
      gid: null,
      wrap: withLimits,
      handOver: () => Promise.resolve(),
      shareImage: () => Promise.resolve(),
      privateDir: (base) => Promise.resolve(base),
    };
    return {
      mode: 'none',
      privateProc: false,
      limits,
      tenant: () => Promise.resolve(shared),
      probe: (argv) => argv,
      traversable: () => Promise.resolve(),
      limitHit,
      release: () => Promise.resolve(),
      close: () => ids?.close(),
    };
  }

  const privateProc = privateProcWorks();
  return {
    mode: 'uid',
    privateProc,
    limits,
    probe: (argv) => [SETPRIV, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--', ...argv],
    tenant: (ref) => {
      // NUL cannot occur in an org, project or environment id, so keys of different apps never meet.
      const [uid = 0, gid = 0] = ids.idsOf([appKey(ref), projectKeyOf(ref)]);
      const handOver = async (path: string) => {
        // Only ever called on a tree the service has just created (no tenant has written into it), and
        // -R does not follow symbolic links (GNU default -P).
        await run('chown', ['-R', `${uid}:${gid}`, path]);
        await chmod(path, 0o700);
      };
      return Promise.resolve({
        uid,
        gid,
        wrap: (argv) => [
          PRLIMIT,
          ...limitArgs(limits, true),
          '--',
          ...(privateProc ? [UNSHARE, ...PRIVATE_PROC] : []),
          SETPRIV,
          `--reuid=${uid}`,
          `--regid=${gid}`,
          '--clear-groups',
          '--no-new-privs',
          '--',
          ...argv,
        ],
        handOver,
        shareImage: async (path) => {
          // The build wrote under umask 077; the project's group may read and traverse, others nothing.
          // As the tenant, not as root: the tree is the tenant's, and a link it planted there must not
          // let root change anything outside it.
          await run(SETPRIV, [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--no-new-privs', '--', 'chmod', '-R', 'g+rX,g-w,o-rwx', path]);
        },
        privateDir: async (base) => {
          const dir = join(base, String(uid));
          // Handed over once, when created: later its content is the tenant's, which root leaves alone.
          if ((await mkdir(dir, { recursive: true })) !== undefined) await handOver(dir);
          return dir;
        },
      });
    },
    traversable: async (paths) => {
      for (const path of paths) await chmod(path, 0o711);
    },
    limitHit,
    release: async (ref, privateBases) => {
      const key = appKey(ref);
      const uid = ids.existing(key);
      if (uid !== null) for (const base of privateBases) await rm(join(base, String(uid)), { recursive: true, force: true });
      // Run even when the uid is gone already: a delivery that freed it before the gid was freed too (older versions) finishes here.
      const siblings = ENVIRONMENTS.map((environment) => appKey({ orgId: ref.orgId, appName: appName(ref.orgId, ref.projectId, environment) })).filter((other) => other !== key);
      ids.releaseApp(key, projectKeyOf(ref), siblings);
    },
    close: () => ids.close(),
  };
}

/** The tenant-ids key of a project's gid. */
function projectKeyOf(ref: Pick<TenantRef, 'orgId' | 'projectId'>): string {
  return `project\u0000${ref.orgId}\u0000${ref.projectId}`;
}

/** The tenant-ids key of an app's uid. NUL cannot occur in an org, project or environment id, so keys of different apps never meet. */
function appKey(ref: Pick<TenantRef, 'orgId' | 'appName'>): string {
  return `app\u0000${ref.orgId}\u0000${ref.appName}`;
}
