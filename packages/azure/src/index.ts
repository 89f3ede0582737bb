/** @zepid/azure: the Azure adapters (Cosmos DB, Service Bus, Blob Storage, Key Vault, ACI + kaniko, Container Apps, Application Insights). */
export { azureEnv, azureEnvSchema } from './env.ts';
export type { AzureEnv } from './env.ts';
