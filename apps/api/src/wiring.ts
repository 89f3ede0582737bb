import type { ApiAdapters, Logger, Telemetry } from '@zepid/core';
import { chooseProviders, closeInReverse, OutboxIntake, startInOrder } from '@zepid/core';
import { AppInsightsTelemetry, AzureServices } from '@zepid/azure';
import { createLocalAdapters, FileSecretStore, localPaths, LogTelemetry } from '@zepid/local';
import type { ApiEnv } from './env.ts';

/** The one place where the API picks its adapters, from validated config. */
export async function createApiAdapters(env: ApiEnv, logger: Logger): Promise<ApiAdapters> {
  const providers = chooseProviders(env);
  if (providers.data === 'local') return { ...createLocalAdapters(env.DATA_DIR, logger), telemetry: telemetryFor(env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger) };
  const azure = await AzureServices.connect(env, logger);
  const store = azure.store();
  const queue = azure.queue();
  return {
    store,
    queue,
    // Cosmos DB and Service Bus share no transaction: record, then job, with the worker's outbox repair.
    intake: new OutboxIntake(store, queue, {
      onPublishFailure: (error, record) =>
        logger.warn({ err: error, deploymentId: record.id }, 'job not published; the worker\'s outbox repair will publish it'),
    }),
    artifacts: azure.artifacts(),
    secrets: providers.secrets === 'azure' ? azure.secrets() : new FileSecretStore(localPaths(env.DATA_DIR).secrets),
    telemetry: telemetryFor(azure.env.APPLICATIONINSIGHTS_CONNECTION_STRING, logger),
  };
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
