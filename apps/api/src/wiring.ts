import type { ApiAdapters, Logger } from '@zepid/core';
import { DeployError } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import type { ApiEnv } from './env.ts';

/** The one place where the API picks its adapters, from validated config. */
export async function createApiAdapters(env: ApiEnv, logger: Logger): Promise<ApiAdapters> {
  if (env.DEPLOY_MODE === 'local') return createLocalAdapters(env.DATA_DIR, logger);
  throw new DeployError('NOT_IMPLEMENTED', 'DEPLOY_MODE=azure is not wired into the API yet');
}

/** Starts adapters in order; if one fails, closes the ones already started. */
export async function startAll(adapters: ApiAdapters): Promise<void> {
  const started: { close(): Promise<void> }[] = [];
  try {
    for (const adapter of [adapters.store, adapters.queue, adapters.artifacts, adapters.secrets, adapters.telemetry]) {
      await adapter.start();
      started.push(adapter);
    }
  } catch (error) {
    for (const adapter of started.reverse()) await adapter.close().catch(() => undefined);
    throw error;
  }
}

export async function closeAll(adapters: ApiAdapters): Promise<void> {
  for (const adapter of [adapters.telemetry, adapters.secrets, adapters.artifacts, adapters.queue, adapters.store]) {
    await adapter.close().catch(() => undefined);
  }
}
