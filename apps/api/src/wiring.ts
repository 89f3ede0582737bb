import type { ApiAdapters, Logger, Telemetry } from '@zepid/core';
import { chooseProviders, closeInReverse, startInOrder } from '@zepid/core';
import { AppInsightsTelemetry, AzureServices } from '@zepid/azure';
import { createLocalAdapters, FileSecretStore, localPaths, LogTelemetry } from '@zepid/local';
import type { ApiEnv } from './env.ts';

/** The one place where the API picks its adapters, from validated config. */
export async function createApiAdapters(env: ApiEnv, logger: Logger): Promise<ApiAdapters> {
  const providers = chooseProviders(env);
  if (providers.data === 'local') return { ...createLocalAdapters(env.DATA_DIR, logger), telemetry: telemetryFor(env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger) };
  const azure = await AzureServices.connect(env, logger);
  return azure.dataAdapters({
    secrets: providers.secrets === 'azure' ? azure.secrets() : new FileSecretStore(localPaths(env.DATA_DIR).secrets),
    telemetry: telemetryFor(azure.env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger),
  });
}

/** Application Insights when a connection string is configured (also in local mode), else log lines. */
function telemetryFor(connectionString: string | undefined, logger: Logger): Telemetry {
  if (connectionString === undefined) return new LogTelemetry(logger);
  return new AppInsightsTelemetry({ connectionString, cloudRoleName: 'zepid-api', logger });
}

/** Adapters in the order they start (and, reversed, close). */
const inOrder = (adapters: ApiAdapters) => [adapters.store, adapters.queue, adapters.artifacts, adapters.secrets, adapters.telemetry];

export const startAll = (adapters: ApiAdapters): Promise<void> => startInOrder(inOrder(adapters));
export const closeAll = (adapters: ApiAdapters): Promise<void> => closeInReverse(inOrder(adapters));
