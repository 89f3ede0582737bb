import { join, resolve } from 'node:path';
import type { ApiAdapters, AppRef, Builder, Logger, Runtime, SecretStore, Telemetry, WorkerAdapters } from '@zepid/core';
import { chooseProviders, closeInReverse, startInOrder } from '@zepid/core';
import type { Isolation } from '@zepid/local';
import {
  createLocalAdapters,
  DependencyCache,
  FileSecretStore,
  LocalBuilder,
  LocalRouter,
  LocalRuntime,
  localPaths,
  LogTelemetry,
  parseIdRange,
  ProcessRegistry,
  resolveIsolation,
  sandboxRoot,
  SqliteDatabase,
  TenantIds,
  toolchainBin,
} from '@zepid/local';
import type { WorkerEnv } from './env.ts';

export interface WorkerWiring {
  adapters: WorkerAdapters;
  /** Local builder/runtime only: groups a killed worker left behind are reaped before anything starts. */
  processes: ProcessRegistry | null;
  /** Local builder/runtime only: who runs user commands. */
  isolation: Isolation | null;
  /** Directories the sandbox user must be able to pass through (uid isolation). */
  traversable: string[];
  /** Local runtime only: frees a deleted app's uid and private dirs (the delete-app job calls it last). */
  releaseTenant?: (app: AppRef) => Promise<void>;
}

/**
 * The one place where the worker picks its adapters, from validated config: data ports (store,
 * queue, artifacts) by DEPLOY_MODE, secrets, builder and runtime by their *_PROVIDER overrides.
 */
export async function createWorkerAdapters(env: WorkerEnv, logger: Logger): Promise<WorkerWiring> {
  const providers = chooseProviders(env);
  // The Azure SDKs load only when something is configured to use them (~100 MB of RSS otherwise).
  const azure = providers.data === 'azure' ? await (await import('@zepid/azure')).AzureServices.connect(env, logger) : null;
  let base: ApiAdapters;
  if (azure === null) {
    base = {
      ...createLocalAdapters(env.DATA_DIR, logger, { lockDurationMs: env.QUEUE_LOCK_DURATION_MS }),
      telemetry: await telemetryFor(env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger),
    };
  } else {
    base = azure.dataAdapters({
      secrets: providers.secrets === 'azure' ? azure.secrets() : new FileSecretStore(localPaths(env.DATA_DIR).secrets),
      telemetry: await telemetryFor(azure.env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger),
    });
  }

  if (providers.builder === 'azure' && azure !== null) {
    return {
      adapters: { ...base, builder: azure.builder(), runtime: azure.runtime(base.secrets) },
      processes: null,
      isolation: null,
      traversable: [],
    };
  }
  const local = await localWorkload(env, logger, base.artifacts, base.secrets);
  return {
    adapters: { ...base, ...local.workload },
    processes: local.processes,
    isolation: local.isolation,
    traversable: local.traversable,
    releaseTenant: local.releaseTenant,
  };
}

/** Application Insights when a connection string is configured (also in local mode), else log lines. */
async function telemetryFor(connectionString: string | undefined, logger: Logger): Promise<Telemetry> {
  if (connectionString === undefined) return new LogTelemetry(logger);
  const { AppInsightsTelemetry } = await import('@zepid/azure');
  return new AppInsightsTelemetry({ connectionString, cloudRoleName: 'zepid-worker', logger });
}

/** The local builder and runtime, with the process registry and isolation they share. */
async function localWorkload(env: WorkerEnv, logger: Logger, artifacts: ApiAdapters['artifacts'], secrets: SecretStore) {
  const paths = localPaths(env.DATA_DIR);
  const processes = new ProcessRegistry(join(env.DATA_DIR, 'processes.json'));
  // Its own connection to the embedded database, opened on first use: only uid isolation needs it.
  const ids = env.LOCAL_BUILD_ISOLATION === 'none' ? null : new TenantIds(new SqliteDatabase(paths.database), parseIdRange(env.LOCAL_UID_RANGE));
  const isolation = resolveIsolation(env.LOCAL_BUILD_ISOLATION, {
    ids,
    limits: { memoryMb: env.LOCAL_LIMIT_MEMORY_MB, processes: env.LOCAL_LIMIT_PROCESSES, openFiles: env.LOCAL_LIMIT_OPEN_FILES },
  });
  // What builds and apps must reach: DATA_DIR, or elsewhere when DATA_DIR sits in a private directory (sandbox-root.ts).
  const sandbox = await sandboxRoot(env.DATA_DIR, env.LOCAL_SANDBOX_DIR, isolation.mode === 'uid');
  if (sandbox !== resolve(env.DATA_DIR)) logger.info({ sandboxDir: sandbox }, 'DATA_DIR is in a directory builds cannot pass through: work dirs, images and revisions live in the sandbox dir');
  const sandboxPaths = localPaths(sandbox);
  const revisionsDir = join(sandbox, 'revisions');
  const toolchainDir = join(sandbox, 'toolchain');
  const builder: Builder = new LocalBuilder({
    workDir: sandboxPaths.work,
    imagesDir: sandboxPaths.images,
    npmCache: sandboxPaths.npmCache,
    artifacts,
    secrets,
    registry: processes,
    logger: logger.child({ component: 'builder' }),
    buildTimeoutMs: env.BUILD_TIMEOUT_MS,
    isolation,
    toolchainDir,
    toolsDir: join(sandbox, 'cache', 'tools'),
    passthrough: env.buildEnvValues ?? {},
    dependencyCache: new DependencyCache({
      dir: join(sandbox, 'cache', 'deps'),
      maxBytes: env.LOCAL_BUILD_CACHE_MAX_MB * 1024 * 1024,
      maxAgeMs: env.LOCAL_BUILD_CACHE_MAX_AGE_DAYS * 24 * 3600_000,
      logger: logger.child({ component: 'dependency-cache' }),
    }),
  });
  const runtime: Runtime = new LocalRuntime({
    statePath: join(env.DATA_DIR, 'runtime.json'),
    revisionsDir,
    npmCache: sandboxPaths.npmCache,
    router: new LocalRouter({
      host: env.LOCAL_ROUTER_HOST,
      port: env.LOCAL_ROUTER_PORT,
      staticCache: { maxBytes: env.LOCAL_STATIC_CACHE_MB * 1024 * 1024, maxFileBytes: env.LOCAL_STATIC_CACHE_FILE_KB * 1024 },
    }),
    secrets,
    registry: processes,
    logger: logger.child({ component: 'runtime' }),
    readyTimeoutMs: env.REVISION_READY_TIMEOUT_MS,
    isolation,
    nodeBin: toolchainBin(toolchainDir),
  });
  return {
    workload: { builder, runtime },
    processes,
    isolation,
    traversable: [...new Set([env.DATA_DIR, sandbox]), sandboxPaths.work, sandboxPaths.images, revisionsDir, join(sandbox, 'cache'), sandboxPaths.npmCache],
    releaseTenant: (app: AppRef) => isolation.release(app, [sandboxPaths.npmCache]),
  };
}

/** Adapters in the order they start (and, reversed, close). */
const inOrder = (adapters: WorkerAdapters) => [
  adapters.store,
  adapters.queue,
  adapters.artifacts,
  adapters.secrets,
  adapters.telemetry,
  adapters.changes,
  adapters.webhooks,
  adapters.builder,
  adapters.runtime,
];

export const startAll = (adapters: WorkerAdapters): Promise<void> => startInOrder(inOrder(adapters));
export const closeAll = (adapters: WorkerAdapters): Promise<void> => closeInReverse(inOrder(adapters));
