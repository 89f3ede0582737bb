import Type from 'typebox';
import type { Static, TObject } from 'typebox';
// The subpath, not the package: loading every Azure SDK just to read config would cost ~100 MB of RSS in local mode.
import { azureEnv } from '@zepid/azure/env';
import { commonEnv, DEFAULT_KEEP_IMAGES_PER_APP, parseEnv, positiveInt } from '@zepid/core';
import { BUILD_ENV_DEFAULT_PASSTHROUGH } from '@zepid/local/build-env';

/** The worker's configuration: parsed once in main.ts; nothing else reads process.env. */
const workerEnv = {
  ...commonEnv,
  ...azureEnv,
  MAX_CONCURRENT_DEPLOYMENTS: positiveInt(5, 100, 'Deployments this worker runs at once.'),
  BUILD_TIMEOUT_MS: positiveInt(300_000, 24 * 3600_000, 'Longest a build may run (also bounded by DEPLOYMENT_TIMEOUT_MS).'),
  REVISION_READY_TIMEOUT_MS: positiveInt(120_000, 3600_000, 'Longest a new revision may take to answer its health check.'),
  LOCAL_ROUTER_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3011, description: 'Port where local mode serves deployed apps.' }),
  LOCAL_ROUTER_HOST: Type.String({ default: '127.0.0.1', description: 'Interface the local router listens on.' }),
  LOCAL_STATIC_CACHE_MB: Type.Integer({
    minimum: 0,
    maximum: 65_536,
    default: 64,
    description: 'Local router: memory for static sites\' files (and their gzip and brotli copies), all sites together, in MiB; least recently served files go first. 0 turns it off: every file is read from disk.',
  }),
  LOCAL_STATIC_CACHE_FILE_KB: Type.Integer({
    minimum: 1,
    maximum: 1_048_576,
    default: 256,
    description: 'Local router: largest static file (or compressed copy) kept in memory, in KiB; larger files are read from disk for every request.',
  }),
  QUEUE_LOCK_DURATION_MS: positiveInt(30_000, 300_000, 'Local queue only: how long a job stays locked between renewals; a crashed worker\'s job comes back after it.'),
  KEEP_IMAGES_PER_APP: positiveInt(
    DEFAULT_KEEP_IMAGES_PER_APP,
    1000,
    'Images kept per app for rollback: those of its newest completed deployments (this many distinct images, the live one first); older ones are deleted.',
  ),
  SHUTDOWN_GRACE_MS: positiveInt(25_000, 3600_000, 'After SIGTERM, how long running deployments may finish before they are released to another delivery.'),
  BUILDER_PROVIDER: Type.Optional(Type.Enum(['local', 'azure'], { description: 'Builder of the sandbox and build steps; default: DEPLOY_MODE.' })),
  RUNTIME_PROVIDER: Type.Optional(Type.Enum(['local', 'azure'], { description: 'Runtime of the deploy step; default: DEPLOY_MODE.' })),
  LOCAL_BUILD_ISOLATION: Type.Enum(['auto', 'uid', 'none'], {
    default: 'auto',
    description: 'Local mode: run each app\'s build and start commands as its own uid from LOCAL_UID_RANGE (uid; needs root), or as the worker\'s user (none). auto: uid when root.',
  }),
  LOCAL_SANDBOX_DIR: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Local mode: where work dirs, images, revisions and build caches live (they must be reachable by every app\'s uid). Default: DATA_DIR, or /var/tmp/zepid-sandboxes-<hash> when DATA_DIR is inside a directory others cannot pass through.',
    }),
  ),
  LOCAL_UID_RANGE: Type.String({
    pattern: '^[0-9]+-[0-9]+$',
    default: '1000000000-1000099999',
    description: 'uid isolation: the reserved uids and gids (first-last) given one per app and one per project; no /etc/passwd entries needed.',
  }),
  LOCAL_LIMIT_MEMORY_MB: Type.Integer({ minimum: 256, maximum: 1_048_576, default: 16384, description: 'Local builds and apps: address space per process in MiB (RLIMIT_AS; Node needs about 1.5 GiB of it, and more for each worker thread).' }),
  LOCAL_LIMIT_PROCESSES: Type.Integer({ minimum: 16, maximum: 1_000_000, default: 512, description: 'Local builds and apps: processes and threads per app (RLIMIT_NPROC of its uid; uid isolation only).' }),
  LOCAL_LIMIT_OPEN_FILES: Type.Integer({ minimum: 64, maximum: 1_048_576, default: 4096, description: 'Local builds and apps: open files per process (RLIMIT_NOFILE).' }),
  LOCAL_BUILD_CACHE_MAX_MB: Type.Integer({
    minimum: 0,
    maximum: 1_048_576,
    default: 4096,
    description: 'Local builds: disk space of the dependency cache (node_modules and framework caches reused by later builds of the same organization with the same lockfile), all organizations together, in MiB; least recently used entries go first. 0 turns it off.',
  }),
  LOCAL_BUILD_CACHE_MAX_AGE_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 7, description: 'Local builds: a dependency cache entry unused for this many days is removed.' }),
  BUILD_ENV_PASSTHROUGH: Type.String({
    default: '',
    pattern: '^([A-Za-z_][A-Za-z0-9_]*)?(,[A-Za-z_][A-Za-z0-9_]*)*$',
    description: `Local builds: names of further variables of the worker's environment that builds get (comma-separated), besides ${BUILD_ENV_DEFAULT_PASSTHROUGH.filter((name) => name === name.toUpperCase() || name.startsWith('npm_')).join(', ')}.`,
  }),
  HEALTH_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'If set, the worker answers /health/live and /health/ready on this port.' })),
};

export const WorkerEnvSchema = Type.Object(workerEnv);
export type WorkerEnv = Static<TObject<typeof workerEnv>> & {
  /** The values builds get from the worker's environment: the default pass-through names and BUILD_ENV_PASSTHROUGH's, where set. Never logged. */
  buildEnvValues?: Readonly<Record<string, string>>;
};

export function loadWorkerEnv(env: Record<string, string | undefined>): WorkerEnv {
  const parsed = parseEnv(WorkerEnvSchema, env);
  return { ...parsed, buildEnvValues: buildEnvValues(env, parsed.BUILD_ENV_PASSTHROUGH) };
}

/** Picks the pass-through variables out of the worker's environment. */
export function buildEnvValues(env: Record<string, string | undefined>, extraNames: string): Record<string, string> {
  const names = [...BUILD_ENV_DEFAULT_PASSTHROUGH, ...extraNames.split(',').filter((name) => name !== '')];
  return Object.fromEntries(names.flatMap((name) => (env[name] === undefined || env[name] === '' ? [] : [[name, env[name]]])));
}
