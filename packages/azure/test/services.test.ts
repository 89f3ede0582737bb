import Value from 'typebox/value';
import { describe, expect, it } from 'vitest';
import { ConfigError, silentLogger } from '@zepid/core';
import type { Logger } from '@zepid/core';
import { azureEnvSchema, AzureServices } from '../src/index.ts';
import { isPinnedByDigest } from '../src/services.ts';

const env = (overrides: Record<string, unknown>) => ({
  ...(Value.Default(azureEnvSchema, {}) as object),
  DEPLOYMENT_TIMEOUT_MS: 600_000,
  ...overrides,
}) as Parameters<typeof AzureServices.connect>[0];

async function problems(build: (services: AzureServices) => unknown, overrides: Record<string, unknown> = {}): Promise<string[]> {
  const services = await AzureServices.connect(env(overrides), silentLogger);
  try {
    build(services);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems.map((problem) => `${problem.variable}: ${problem.message}`);
  }
}

/** Misconfiguration stops a process at start, naming what is missing, never at the first deployment. */
describe('Azure services configuration', () => {
  it('names the missing endpoint or connection string of each data port', async () => {
    expect(await problems((s) => s.store())).toEqual([expect.stringMatching(/^AZURE_COSMOS_ENDPOINT: or AZURE_COSMOS_CONNECTION_STRING is required/)]);
    expect(await problems((s) => s.queue())).toEqual([expect.stringMatching(/^AZURE_SERVICE_BUS_NAMESPACE: or AZURE_SERVICE_BUS_CONNECTION_STRING/)]);
    expect(await problems((s) => s.artifacts())).toEqual([expect.stringMatching(/^AZURE_STORAGE_ACCOUNT_URL: or AZURE_STORAGE_CONNECTION_STRING/)]);
    expect(await problems((s) => s.secrets())).toEqual(['AZURE_KEY_VAULT_URI: is required in azure mode']);
  });

  it('names every setting the builder and the runtime miss', async () => {
    const storage = { AZURE_STORAGE_ACCOUNT_URL: 'https://stzepid.blob.core.windows.net' };
    expect(await problems((s) => s.builder(), storage)).toEqual([
      'AZURE_SUBSCRIPTION_ID: is required in azure mode',
      'AZURE_RESOURCE_GROUP: is required in azure mode',
      'AZURE_LOCATION: is required in azure mode',
      'AZURE_CONTAINER_REGISTRY: is required in azure mode',
    ]);
    expect(
      await problems((s) => s.runtime({ references: () => Promise.resolve({}) } as never), {
        AZURE_SUBSCRIPTION_ID: 's',
        AZURE_RESOURCE_GROUP: 'rg',
        AZURE_LOCATION: 'westeurope',
        AZURE_CONTAINER_REGISTRY: 'cr.azurecr.io',
      }),
    ).toEqual(['AZURE_CONTAINER_APPS_ENVIRONMENT_ID: is required in azure mode', 'AZURE_APPS_IDENTITY_ID: is required in azure mode']);
  });

  it('says which setting it looked for in Key Vault, and under which secret name', async () => {
    const services = AzureServices.connect(env({ AZURE_KEY_VAULT_URI: 'https://127.0.0.1:9', AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: false }), silentLogger);
    await expect(services).rejects.toThrow(/AZURE_SERVICE_BUS_CONNECTION_STRING: is not set, and Key Vault secret "service-bus-connection-string" could not be read/);
  });

  it('builds every adapter when the settings are there', async () => {
    const full = {
      AZURE_SUBSCRIPTION_ID: 's',
      AZURE_RESOURCE_GROUP: 'rg',
      AZURE_LOCATION: 'westeurope',
      AZURE_CONTAINER_REGISTRY: 'cr.azurecr.io',
      AZURE_CONTAINER_APPS_ENVIRONMENT_ID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/managedEnvironments/env',
      AZURE_APPS_IDENTITY_ID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/apps',
      AZURE_COSMOS_ENDPOINT: 'https://cosmos.documents.azure.com',
      AZURE_SERVICE_BUS_NAMESPACE: 'sb.servicebus.windows.net',
      AZURE_STORAGE_ACCOUNT_URL: 'https://stzepid.blob.core.windows.net',
      AZURE_KEY_VAULT_URI: 'https://kv.vault.azure.net',
      // Set, so no setting is looked up in the (unreachable) vault.
      APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=00000000-0000-0000-0000-000000000000',
    };
    const services = await AzureServices.connect(env(full), silentLogger);
    const secrets = services.secrets();
    for (const adapter of [services.store(), services.queue(), services.artifacts(), secrets, services.builder(), services.runtime(secrets)]) {
      expect(typeof adapter.start).toBe('function');
    }
  });

  it('warns at start when KANIKO_IMAGE is a tag, not a digest (issue 11)', async () => {
    const builderSettings = {
      AZURE_SUBSCRIPTION_ID: 's',
      AZURE_RESOURCE_GROUP: 'rg',
      AZURE_LOCATION: 'westeurope',
      AZURE_CONTAINER_REGISTRY: 'cr.azurecr.io',
      AZURE_STORAGE_ACCOUNT_URL: 'https://stzepid.blob.core.windows.net',
    };
    const warnings = async (kanikoImage: string | undefined) => {
      const seen: string[] = [];
      const logger = { ...silentLogger, warn: (_fields: unknown, message?: string) => seen.push(String(message)) } as unknown as Logger;
      logger.child = () => logger;
      const services = await AzureServices.connect(env({ ...builderSettings, ...(kanikoImage === undefined ? {} : { KANIKO_IMAGE: kanikoImage }) }), logger);
      services.builder();
      return seen.filter((message) => message.includes('KANIKO_IMAGE'));
    };
    // The default is a tag: warned.
    expect(await warnings(undefined)).toEqual([expect.stringMatching(/^KANIKO_IMAGE is not pinned by digest/)]);
    expect(await warnings(`ghcr.io/osscontainertools/kaniko@sha256:${'0f'.repeat(32)}`)).toEqual([]);
    expect(isPinnedByDigest('ghcr.io/osscontainertools/kaniko:v1.28.3-debug')).toBe(false);
    expect(isPinnedByDigest(`ghcr.io/osscontainertools/kaniko@sha256:${'0F'.repeat(32)}`)).toBe(false);
  });
});
