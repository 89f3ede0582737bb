import { CosmosWebhookStore } from './cosmos/webhooks.ts';
import { PollingChangeSignal } from './cosmos/polling-changes.ts';
import { CosmosStreamLeaseStore } from './cosmos/stream-leases.ts';
import type { TokenCredential } from '@azure/identity';
import type { ApiAdapters, Logger, SecretStore, Telemetry } from '@zepid/core';
import { ConfigError, OutboxIntake } from '@zepid/core';
import { AciKanikoBuilder } from './aci/builder.ts';
import { storageKeyFromArm, storageKeyFromConnectionString } from './aci/storage-key.ts';
import { BlobArtifactStore } from './blob/artifacts.ts';
import { ContainerAppsRuntime } from './containerapps/runtime.ts';
import { CosmosDeploymentStore, DEPLOYMENTS_CONTAINER } from './cosmos/store.ts';
import type { CosmosStoreOptions } from './cosmos/store.ts';
import { createCredential } from './credentials.ts';
import type { AzureEnv } from './env.ts';
import { KeyVaultSecretStore } from './keyvault/secrets.ts';
import { keyVaultSecretReader, resolveSettings } from './keyvault/settings.ts';
import { ServiceBusJobQueue } from './servicebus/queue.ts';

/**
 * Settings that may come from Key Vault instead of the environment. A connection string is only
 * looked for when its identity-based alternative (`unless`) is not set either.
 */
const VAULT_SETTINGS = [
  { variable: 'AZURE_SERVICE_BUS_CONNECTION_STRING', secret: 'service-bus-connection-string', required: false, unless: 'AZURE_SERVICE_BUS_NAMESPACE' },
  { variable: 'AZURE_STORAGE_CONNECTION_STRING', secret: 'storage-connection-string', required: false, unless: 'AZURE_STORAGE_ACCOUNT_URL' },
  { variable: 'AZURE_COSMOS_CONNECTION_STRING', secret: 'cosmos-connection-string', required: false, unless: 'AZURE_COSMOS_ENDPOINT' },
  { variable: 'APPLICATIONINSIGHTS_CONNECTION_STRING', secret: 'appinsights-connection-string', required: false, unless: null },
] as const;

type Env = AzureEnv & { DEPLOYMENT_TIMEOUT_MS: number; BUILD_TIMEOUT_MS?: number; REVISION_READY_TIMEOUT_MS?: number };

/**
 * The Azure side of both apps' wiring: one credential (DefaultAzureCredential), the settings
 * resolved from the environment or Key Vault, and one constructor per port. Each constructor checks
 * the settings its adapter needs and names every missing one (ConfigError), so a misconfigured
 * process stops at start with a message, never at the first deployment.
 */
export class AzureServices {
  readonly env: Env;
  readonly credential: TokenCredential;
  private readonly logger: Logger;

  private constructor(env: Env, credential: TokenCredential, logger: Logger) {
    this.env = env;
    this.credential = credential;
    this.logger = logger;
  }

  /** Resolves connection strings left out of the environment from Key Vault, when one is configured. */
  static async connect(env: Env, logger: Logger): Promise<AzureServices> {
    const credential = createCredential({ clientId: env.AZURE_CLIENT_ID, tenantId: env.AZURE_TENANT_ID });
    const vault =
      env.AZURE_KEY_VAULT_URI === undefined
        ? null
        : keyVaultSecretReader({ vaultUrl: env.AZURE_KEY_VAULT_URI, credential, verifyChallengeResource: env.AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE });
    // Only what the environment leaves open is looked up; nothing is read when everything is set.
    const open = VAULT_SETTINGS.filter((setting) => env[setting.variable] === undefined && (setting.unless === null || env[setting.unless] === undefined));
    const fromVault = vault === null || open.length === 0 ? {} : await resolveSettings({}, open, vault);
    const resolved = { ...env } as Env;
    for (const [variable, value] of Object.entries(fromVault)) {
      if (value !== undefined) (resolved as Record<string, unknown>)[variable] = value;
    }
    return new AzureServices(resolved, credential, logger);
  }

  private require(...variables: (keyof Env)[]): void {
    const missing = variables.filter((variable) => this.env[variable] === undefined);
    if (missing.length > 0) throw new ConfigError(missing.map((variable) => ({ variable: String(variable), message: 'is required in azure mode' })));
  }

  private oneOf(identity: keyof Env, connection: keyof Env): void {
    if (this.env[identity] === undefined && this.env[connection] === undefined) {
      throw new ConfigError([{ variable: String(identity), message: `or ${String(connection)} is required in azure mode (neither is set, nor in Key Vault)` }]);
    }
  }

  store(): CosmosDeploymentStore {
    return new CosmosDeploymentStore(this.cosmosOptions());
  }

  /** Webhook endpoints and deliveries, in the deployments container, through `store`'s Cosmos client. */
  webhooks(store: CosmosDeploymentStore): CosmosWebhookStore {
    return new CosmosWebhookStore(store);
  }

  private cosmosOptions(): CosmosStoreOptions {
    this.oneOf('AZURE_COSMOS_ENDPOINT', 'AZURE_COSMOS_CONNECTION_STRING');
    const env = this.env;
    const common = {
      databaseId: env.AZURE_COSMOS_DATABASE,
      containerId: env.AZURE_COSMOS_CONTAINER ?? DEPLOYMENTS_CONTAINER,
      createIfMissing: env.AZURE_CREATE_IF_MISSING,
      retentionDays: env.AZURE_COSMOS_TTL_DAYS,
      logger: this.logger.child({ adapter: 'cosmos' }),
    };
    return env.AZURE_COSMOS_ENDPOINT !== undefined
      ? { ...common, endpoint: env.AZURE_COSMOS_ENDPOINT, credential: this.credential }
      : { ...common, connectionString: env.AZURE_COSMOS_CONNECTION_STRING ?? '' };
  }

  queue(): ServiceBusJobQueue {
    this.oneOf('AZURE_SERVICE_BUS_NAMESPACE', 'AZURE_SERVICE_BUS_CONNECTION_STRING');
    const env = this.env;
    const common = {
      queueName: env.AZURE_SERVICE_BUS_QUEUE,
      lockDurationMs: env.AZURE_SERVICE_BUS_LOCK_DURATION_MS,
      maxDeliveryCount: env.AZURE_SERVICE_BUS_MAX_DELIVERY_COUNT,
      maxLockRenewalMs: env.DEPLOYMENT_TIMEOUT_MS,
    };
    return env.AZURE_SERVICE_BUS_NAMESPACE !== undefined
      ? new ServiceBusJobQueue({ ...common, fullyQualifiedNamespace: env.AZURE_SERVICE_BUS_NAMESPACE, credential: this.credential })
      : new ServiceBusJobQueue({ ...common, connectionString: env.AZURE_SERVICE_BUS_CONNECTION_STRING ?? '' });
  }

  artifacts(): BlobArtifactStore {
    this.oneOf('AZURE_STORAGE_ACCOUNT_URL', 'AZURE_STORAGE_CONNECTION_STRING');
    const env = this.env;
    const common = { containers: { sources: 'sources', contexts: 'contexts', logs: 'logs' }, createIfMissing: env.AZURE_CREATE_IF_MISSING };
    return env.AZURE_STORAGE_ACCOUNT_URL !== undefined
      ? new BlobArtifactStore({ ...common, accountUrl: env.AZURE_STORAGE_ACCOUNT_URL, credential: this.credential })
      : new BlobArtifactStore({ ...common, connectionString: env.AZURE_STORAGE_CONNECTION_STRING ?? '' });
  }

  /**
   * The data ports on Azure: store, queue, the outbox intake (Cosmos DB and Service Bus share no
   * transaction; a job whose publish failed is published by the worker's outbox repair) and
   * artifacts. Secrets and telemetry come from the caller, which may keep them local.
   */
  dataAdapters(parts: { secrets: SecretStore; telemetry: Telemetry }): ApiAdapters {
    const store = this.store();
    const queue = this.queue();
    const artifacts = this.artifacts();
    const intake = new OutboxIntake(store, queue, {
      onPublishFailure: (error, record) =>
        this.logger.warn({ err: error, deploymentId: record.id }, "job not published; the worker's outbox repair will publish it"),
      // A new deployment's manifest goes to Blob storage before its record (no transaction spans the two).
      artifacts,
    });
    return { store, queue, intake, artifacts, changes: new PollingChangeSignal(this.env.AZURE_EVENTS_POLL_MS), webhooks: this.webhooks(store), streamLeases: new CosmosStreamLeaseStore(store), ...parts };
  }

  secrets(): KeyVaultSecretStore {
    this.require('AZURE_KEY_VAULT_URI');
    return new KeyVaultSecretStore({
      vaultUrl: this.env.AZURE_KEY_VAULT_URI ?? '',
      credential: this.credential,
      verifyChallengeResource: this.env.AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE,
    });
  }

  /** The storage account name kaniko reads contexts from: from the account URL or the connection string. */
  private storageAccountName(): string {
    const env = this.env;
    const fromUrl = env.AZURE_STORAGE_ACCOUNT_URL === undefined ? undefined : /^https?:\/\/([^./]+)\./.exec(env.AZURE_STORAGE_ACCOUNT_URL)?.[1];
    const fromConnection = env.AZURE_STORAGE_CONNECTION_STRING === undefined ? undefined : /(?:^|;)\s*AccountName=([^;]+)/i.exec(env.AZURE_STORAGE_CONNECTION_STRING)?.[1];
    const name = fromUrl ?? fromConnection;
    if (name === undefined) throw new ConfigError([{ variable: 'AZURE_STORAGE_ACCOUNT_URL', message: 'names no storage account (kaniko needs one)' }]);
    return name;
  }

  /** An explicit blob endpoint (emulators, sovereign clouds): from the connection string's BlobEndpoint. */
  private blobEndpoint(): string | undefined {
    const connection = this.env.AZURE_STORAGE_CONNECTION_STRING;
    return connection === undefined ? undefined : /(?:^|;)\s*BlobEndpoint=([^;]+)/i.exec(connection)?.[1];
  }

  builder(): AciKanikoBuilder {
    this.require('AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_LOCATION', 'AZURE_CONTAINER_REGISTRY');
    const env = this.env;
    const accountName = this.storageAccountName();
    const storageAccessKey =
      env.AZURE_STORAGE_CONNECTION_STRING !== undefined && /AccountKey=/i.test(env.AZURE_STORAGE_CONNECTION_STRING)
        ? storageKeyFromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING)
        : storageKeyFromArm({
            credential: this.credential,
            subscriptionId: env.AZURE_SUBSCRIPTION_ID ?? '',
            resourceGroup: env.AZURE_STORAGE_RESOURCE_GROUP ?? env.AZURE_RESOURCE_GROUP ?? '',
            accountName,
            armEndpoint: env.AZURE_ARM_ENDPOINT,
          });
    if (!isPinnedByDigest(env.KANIKO_IMAGE)) {
      this.logger.warn(
        { kanikoImage: env.KANIKO_IMAGE },
        'KANIKO_IMAGE is not pinned by digest: a tag can move or vanish, and builds would run another executor or none (deploy.yml pins it; docs/operations.md)',
      );
    }
    return new AciKanikoBuilder({
      subscriptionId: env.AZURE_SUBSCRIPTION_ID ?? '',
      resourceGroup: env.AZURE_RESOURCE_GROUP ?? '',
      location: env.AZURE_LOCATION ?? '',
      credential: this.credential,
      armEndpoint: env.AZURE_ARM_ENDPOINT,
      registry: env.AZURE_CONTAINER_REGISTRY ?? '',
      kanikoImage: env.KANIKO_IMAGE,
      cpu: env.BUILD_CONTAINER_CPU,
      memoryInGB: env.BUILD_CONTAINER_MEMORY,
      storageAccountName: accountName,
      storageBlobEndpoint: this.blobEndpoint(),
      storageAccessKey,
      tenantId: env.AZURE_TENANT_ID,
      buildTimeoutMs: env.BUILD_TIMEOUT_MS,
      pollIntervalMs: env.AZURE_POLL_INTERVAL_MS,
      operationPollIntervalMs: env.AZURE_POLL_INTERVAL_MS,
    });
  }

  runtime(secrets: SecretStore): ContainerAppsRuntime {
    this.require('AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_LOCATION', 'AZURE_CONTAINER_REGISTRY', 'AZURE_CONTAINER_APPS_ENVIRONMENT_ID', 'AZURE_APPS_IDENTITY_ID');
    const env = this.env;
    return new ContainerAppsRuntime({
      subscriptionId: env.AZURE_SUBSCRIPTION_ID ?? '',
      resourceGroup: env.AZURE_RESOURCE_GROUP ?? '',
      location: env.AZURE_LOCATION ?? '',
      credential: this.credential,
      armEndpoint: env.AZURE_ARM_ENDPOINT,
      environmentId: env.AZURE_CONTAINER_APPS_ENVIRONMENT_ID ?? '',
      registry: env.AZURE_CONTAINER_REGISTRY ?? '',
      appsIdentityId: env.AZURE_APPS_IDENTITY_ID ?? '',
      secrets,
      healthTimeoutMs: env.REVISION_READY_TIMEOUT_MS,
      pollIntervalMs: env.AZURE_POLL_INTERVAL_MS,
      operationPollIntervalMs: env.AZURE_POLL_INTERVAL_MS,
    });
  }
}

/** `<repository>@sha256:<64 hex>`: an image reference that names one manifest for good. */
export function isPinnedByDigest(image: string): boolean {
  return /@sha256:[0-9a-f]{64}$/.test(image);
}
