/** @zepid/azure: the Azure adapters (Cosmos DB, Service Bus, Blob Storage, Key Vault, ACI + kaniko, Container Apps, Application Insights). */
export { azureEnv, azureEnvSchema } from './env.ts';
export type { AzureEnv } from './env.ts';
export { createCredential } from './credentials.ts';
export { CosmosDeploymentStore, DEPLOYMENTS_CONTAINER } from './cosmos/store.ts';
export type { CosmosStoreOptions, CosmosConnectionOptions } from './cosmos/store.ts';
export { BlobArtifactStore } from './blob/artifacts.ts';
export type { BlobArtifactStoreOptions, BlobConnectionOptions } from './blob/artifacts.ts';
export { KeyVaultSecretStore, secretNameFor, MAX_SECRET_VALUE_BYTES } from './keyvault/secrets.ts';
export type { KeyVaultSecretStoreOptions } from './keyvault/secrets.ts';
export { resolveSettings, keyVaultSecretReader } from './keyvault/settings.ts';
export type { SettingSource, SecretReader, ResolvedSettings } from './keyvault/settings.ts';
