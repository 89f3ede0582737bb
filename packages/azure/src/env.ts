import Type from 'typebox';
import type { Static, TObject } from 'typebox';

/**
 * Variables of Azure mode (DEPLOY_MODE=azure), shared by the API and the worker schemas. All are
 * optional at parse time; `requireAzureSettings` names what a given adapter still misses. Where a
 * service offers both, managed identity (endpoint/namespace + DefaultAzureCredential) is the
 * production path and a connection string is for emulators.
 */
const optional = (description: string) => Type.Optional(Type.String({ minLength: 1, description }));

export const azureEnv = {
  AZURE_SUBSCRIPTION_ID: optional('Subscription where apps and build containers are created.'),
  AZURE_TENANT_ID: optional('Entra tenant of the identities.'),
  AZURE_RESOURCE_GROUP: optional('Resource group where apps and build containers are created.'),
  AZURE_LOCATION: optional('Region of build containers and apps, e.g. westeurope.'),
  AZURE_CLIENT_ID: optional('Client id of the user-assigned managed identity this process runs as.'),
  AZURE_ARM_ENDPOINT: Type.String({ default: 'https://management.azure.com', description: 'Azure Resource Manager endpoint.' }),
  AZURE_CONTAINER_REGISTRY: optional('ACR login server (myregistry.azurecr.io) images are pushed to.'),
  AZURE_CONTAINER_APPS_ENVIRONMENT_ID: optional('Resource id of the Container Apps managed environment apps are deployed into.'),
  AZURE_APPS_IDENTITY_ID: optional('Resource id of the user-assigned identity deployed apps use to pull from ACR and read Key Vault.'),
  AZURE_SERVICE_BUS_NAMESPACE: optional('Fully qualified Service Bus namespace (managed identity).'),
  AZURE_SERVICE_BUS_CONNECTION_STRING: optional('Service Bus connection string (emulator or key-based auth).'),
  AZURE_SERVICE_BUS_QUEUE: Type.String({ default: 'deployment-queue', description: 'Queue the API publishes jobs to.' }),
  AZURE_SERVICE_BUS_LOCK_DURATION_MS: Type.Integer({
    minimum: 5000,
    maximum: 300_000,
    default: 60_000,
    description: 'Lock duration of the queue (must equal its lockDuration in infra/); the worker renews at a third of it.',
  }),
  AZURE_SERVICE_BUS_MAX_DELIVERY_COUNT: Type.Integer({
    minimum: 1,
    maximum: 100,
    default: 3,
    description: 'Max delivery count of the queue (must equal its maxDeliveryCount in infra/).',
  }),
  AZURE_STORAGE_ACCOUNT_URL: optional('Blob endpoint, https://<account>.blob.core.windows.net (managed identity).'),
  AZURE_STORAGE_CONNECTION_STRING: optional('Storage connection string (Azurite or key-based auth).'),
  AZURE_COSMOS_ENDPOINT: optional('Cosmos DB account endpoint (managed identity).'),
  AZURE_COSMOS_CONNECTION_STRING: optional('Cosmos DB connection string (emulator or key-based auth).'),
  AZURE_COSMOS_DATABASE: Type.String({ default: 'zepid-deploy', description: 'Cosmos DB database name.' }),
  AZURE_COSMOS_CONTAINER: Type.String({ default: 'deployments', description: 'Cosmos DB container (partition key /orgId).' }),
  AZURE_COSMOS_TTL_DAYS: Type.Integer({
    minimum: 1,
    maximum: 3650,
    default: 30,
    description: 'Cosmos TTL of finished records: the backstop behind POST /status/cleanup, so longer than RETENTION_DAYS.',
  }),
  AZURE_CREATE_IF_MISSING: Type.Boolean({
    default: false,
    description: 'Create the Cosmos database/container, blob containers and queue when absent (emulators only; in Azure, infra/ creates them).',
  }),
  AZURE_KEY_VAULT_URI: optional('Key Vault holding deployment secrets and, optionally, this service\'s own settings.'),
  AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: Type.Boolean({
    default: true,
    description: 'Check that the vault\'s auth challenge names a Key Vault resource; off only for a vault behind a custom domain or a local fake.',
  }),
  AZURE_STORAGE_RESOURCE_GROUP: optional('Resource group of the storage account, when it differs from AZURE_RESOURCE_GROUP (to read the key kaniko needs).'),
  AZURE_POLL_INTERVAL_MS: Type.Integer({ minimum: 50, maximum: 60_000, default: 2000, description: 'First wait between polls of ARM operations, build containers and revisions.' }),
  AZURE_EVENTS_POLL_MS: Type.Integer({
    minimum: 100,
    maximum: 60_000,
    default: 1000,
    description: 'How often an event stream (SSE) polls the record and the log in Azure mode, where replicas share no change signal.',
  }),
  SECRETS_PROVIDER: Type.Optional(Type.Enum(['local', 'azure'], { description: 'Where env variable values are kept; default: DEPLOY_MODE.' })),
  APPLICATIONINSIGHTS_CONNECTION_STRING: optional('Application Insights connection string; telemetry is off without it.'),
  BUILD_CONTAINER_CPU: Type.Number({ minimum: 0.5, maximum: 4, default: 2, description: 'vCPU of each ACI build container.' }),
  BUILD_CONTAINER_MEMORY: Type.Number({ minimum: 1, maximum: 16, default: 4, description: 'Memory in GB of each ACI build container.' }),
  // v1.28.3 is the newest release of the maintained fork seen (osscontainertools/kaniko tags; its
  // images.yaml publishes :v<version>-debug on ghcr.io). No digest is pinned here: none could be read
  // from the registry where this was written; production pins one (docs/operations.md).
  KANIKO_IMAGE: Type.String({ default: 'ghcr.io/osscontainertools/kaniko:v1.28.3-debug', description: 'Kaniko executor image the builder runs; pin a digest in production.' }),
};

const azureEnvSchema = Type.Object(azureEnv);
export type AzureEnv = Static<TObject<typeof azureEnv>>;
export { azureEnvSchema };
