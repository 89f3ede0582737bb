import { join } from 'node:path';
import type { Logger, WorkerAdapters } from '@zepid/core';
import { DeployError } from '@zepid/core';
import type { Isolation } from '@zepid/local';
import { createLocalAdapters, LocalBuilder, LocalRouter, LocalRuntime, localPaths, ProcessRegistry, resolveIsolation } from '@zepid/local';
import type { WorkerEnv } from './env.ts';

export interface WorkerWiring {
  adapters: WorkerAdapters;
  /** Local mode only: groups a killed worker left behind are reaped before anything starts. */
  processes: ProcessRegistry | null;
  /** Local mode only: who runs user commands. */
  isolation: Isolation | null;
  /** Directories the sandbox user must be able to pass through (local mode, uid isolation). */
  traversable: string[];
}

/** The one place where the worker picks its adapters, from validated config. */
export function createWorkerAdapters(env: WorkerEnv, logger: Logger): WorkerWiring {
  if (env.DEPLOY_MODE !== 'local') throw new DeployError('NOT_IMPLEMENTED', 'DEPLOY_MODE=azure is not wired into the worker yet');
  const paths = localPaths(env.DATA_DIR);
  const base = createLocalAdapters(env.DATA_DIR, logger, { lockDurationMs: env.QUEUE_LOCK_DURATION_MS });
  const processes = new ProcessRegistry(join(env.DATA_DIR, 'processes.json'));
  const [uid, gid] = env.LOCAL_BUILD_USER.split(':').map(Number) as [number, number];
  const isolation = resolveIsolation(env.LOCAL_BUILD_ISOLATION, { uid, gid });
  const revisionsDir = join(env.DATA_DIR, 'revisions');
  const builder = new LocalBuilder({
    workDir: paths.work,
    imagesDir: paths.images,
    npmCache: paths.npmCache,
    artifacts: base.artifacts,
    secrets: base.secrets,
    registry: processes,
    logger: logger.child({ component: 'builder' }),
    buildTimeoutMs: env.BUILD_TIMEOUT_MS,
    isolation,
  });
  const runtime = new LocalRuntime({
    statePath: join(env.DATA_DIR, 'runtime.json'),
    revisionsDir,
    npmCache: paths.npmCache,
    router: new LocalRouter({ host: env.LOCAL_ROUTER_HOST, port: env.LOCAL_ROUTER_PORT }),
    secrets: base.secrets,
    registry: processes,
    logger: logger.child({ component: 'runtime' }),
    readyTimeoutMs: env.REVISION_READY_TIMEOUT_MS,
    isolation,
  });
  return {
    adapters: { ...base, builder, runtime },
    processes,
    isolation,
    traversable: [env.DATA_DIR, paths.work, paths.images, revisionsDir, join(env.DATA_DIR, 'cache')],
  };
}

const order = (adapters: WorkerAdapters) => [
  adapters.store,
  adapters.queue,
  adapters.artifacts,
  adapters.secrets,
  adapters.telemetry,
  adapters.builder,
  adapters.runtime,
];

export async function startAll(adapters: WorkerAdapters): Promise<void> {
  const started: { close(): Promise<void> }[] = [];
  try {
    for (const adapter of order(adapters)) {
      await adapter.start();
      started.push(adapter);
    }
  } catch (error) {
    for (const adapter of started.reverse()) await adapter.close().catch(() => undefined);
    throw error;
  }
}

export async function closeAll(adapters: WorkerAdapters): Promise<void> {
  for (const adapter of order(adapters).reverse()) await adapter.close().catch(() => undefined);
}
