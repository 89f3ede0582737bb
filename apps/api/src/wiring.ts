import type { ApiAdapters, Logger, Telemetry } from '@zepid/core';
import { chooseProviders, OutboxIntake } from '@zepid/core';
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
