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
export { AciKanikoBuilder, imageRepository } from './aci/builder.ts';
export type { AciKanikoBuilderOptions } from './aci/builder.ts';
export { storageKeyFromArm, storageKeyFromConnectionString } from './aci/storage-key.ts';
export { AcrTokenExchange } from './acr/token-exchange.ts';
export { ContainerAppsRuntime } from './containerapps/runtime.ts';
export type { ContainerAppsRuntimeOptions } from './containerapps/runtime.ts';
export { SCALE_PROFILES } from './containerapps/scale.ts';
