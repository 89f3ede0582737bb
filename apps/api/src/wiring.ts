import type { ApiAdapters, Logger, Telemetry } from '@zepid/core';
import { chooseProviders, closeInReverse, startInOrder } from '@zepid/core';
import { createLocalAdapters, FileSecretStore, localPaths, LogTelemetry } from '@zepid/local/data';
import type { ApiEnv } from './env.ts';

/**
 * The one place where the API picks its adapters, from validated config. The Azure SDKs are loaded
 * only when something is configured to use them: on the embedded defaults they would cost ~100 MB
 * of RSS and a slower start for nothing (see BENCHMARKS.md).
 */
export async function createApiAdapters(env: ApiEnv, logger: Logger): Promise<ApiAdapters> {
  const providers = chooseProviders(env);
  if (providers.data === 'local') {
    return { ...createLocalAdapters(env.DATA_DIR, logger), telemetry: await telemetryFor(env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger) };
  }
  const { AzureServices } = await import('@zepid/azure');
  const azure = await AzureServices.connect(env, logger);
  return azure.dataAdapters({
    secrets: providers.secrets === 'azure' ? azure.secrets() : new FileSecretStore(localPaths(env.DATA_DIR).secrets),
    telemetry: await telemetryFor(azure.env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger),
  });
}

/** Application Insights when a connection string is configured (also in local mode), else log lines. */
async function telemetryFor(connectionString: string | undefined, logger: Logger): Promise<Telemetry> {
  if (connectionString === undefined) return new LogTelemetry(logger);
  const { AppInsightsTelemetry } = await import('@zepid/azure');
  return new AppInsightsTelemetry({ connectionString, cloudRoleName: 'zepid-api', logger });
}

/** Adapters in the order they start (and, reversed, close). */
const inOrder = (adapters: ApiAdapters) => [adapters.store, adapters.queue, adapters.artifacts, adapters.secrets, adapters.telemetry, adapters.changes, adapters.webhooks, adapters.streamLeases];

export const startAll = (adapters: ApiAdapters): Promise<void> => startInOrder(inOrder(adapters));
export const closeAll = (adapters: ApiAdapters): Promise<void> => closeInReverse(inOrder(adapters));
