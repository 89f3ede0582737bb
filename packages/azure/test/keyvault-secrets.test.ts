import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/identity';
import { ConfigError, DeployError, newDeploymentId } from '@zepid/core';
import { secretContract, trustTestCertificate } from '@zepid/testkit';
import type { FakeKeyVault, FakeKeyVaultOptions } from '@zepid/testkit/fakes/keyvault.ts';
import { startFakeKeyVault } from '@zepid/testkit/fakes/keyvault.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appPrefixOf, KeyVaultSecretStore, secretNameFor } from '../src/keyvault/secrets.ts';
import type { SecretReader } from '../src/keyvault/settings.ts';
import { keyVaultSecretReader, resolveSettings } from '../src/keyvault/settings.ts';

trustTestCertificate();

interface RecordingCredential extends TokenCredential {
  calls: { scopes: string[]; tenantId: string | undefined }[];
}

function fakeCredential(token: string): RecordingCredential {
  const calls: RecordingCredential['calls'] = [];
  return {
    calls,
    getToken: (scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken> => {
      calls.push({ scopes: Array.isArray(scopes) ? scopes : [scopes], tenantId: options?.tenantId });
      return Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3_600_000 });
    },
  };
}

async function startStore(fakeOptions: FakeKeyVaultOptions = {}, token?: string) {
  const vault = await startFakeKeyVault(fakeOptions);
  const credential = fakeCredential(token ?? vault.token);
  // The fake lives at 127.0.0.1, not under vault.azure.net, so the SDK's resource check must be off.
  const secrets = new KeyVaultSecretStore({ vaultUrl: vault.vaultUrl, credential, verifyChallengeResource: false, pollIntervalMs: 10 });
  await secrets.start();
  return { vault, credential, secrets };
}

async function errorOf(promise: Promise<unknown>): Promise<DeployError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DeployError) return error;
    throw error;
  }
  throw new Error('expected a DeployError');
}

secretContract('Key Vault (HTTPS fake)', async () => {
  const { vault, secrets } = await startStore();
  return {
    secrets,
    dispose: async () => {
      await secrets.close();
      await vault.stop();
    },
  };
});

describe('KeyVaultSecretStore', () => {
  let vault: FakeKeyVault;
  let credential: RecordingCredential;
  let secrets: KeyVaultSecretStore;
  beforeAll(async () => {
    ({ vault, credential, secrets } = await startStore());
  });
  afterAll(async () => {
    await secrets.close();
    await vault.stop();
  });

  it('answers the vault\'s challenge with a token for the scope and tenant it names', async () => {
    const id = newDeploymentId();
    await secrets.put(id, { A: 'value-a' });
    expect(vault.requests[0]?.authorized).toBe(false);
    expect(vault.requests.some((request) => request.authorized)).toBe(true);
    expect(credential.calls[0]).toEqual({ scopes: ['https://vault.azure.net/.default'], tenantId: vault.tenantId });
  });

  it('names secrets one-to-one although Key Vault ignores case, and tags them', async () => {
    const id = newDeploymentId();
    const long = `X${'_Y'.repeat(60)}`;
    const values = { DATABASE_URL: 'postgres://u:p@h/db', API_KEY: 'upper-secret', api_key: 'lower-secret', Api_Key: 'mixed-secret', [long]: 'long-secret' };
    await secrets.put(id, values);
    expect(await secrets.get(id)).toEqual(values);

    const names = Object.keys(values).map((name) => secretNameFor(id, name));
    expect(new Set(names.map((name) => name.toLowerCase())).size).toBe(names.length);
    for (const name of names) expect(name).toMatch(/^[0-9a-zA-Z-]{1,127}$/);
    expect(secretNameFor(id, 'DATABASE_URL')).toBe(`${id.replace('_', '-')}-e-database-url`);
    expect(vault.secret(secretNameFor(id, 'api_key'))?.tags).toEqual({ deploymentId: id, envName: 'api_key' });

    const refs = await secrets.references(id, ['DATABASE_URL', 'api_key']);
    expect(refs).toEqual({
      DATABASE_URL: `${vault.vaultUrl}/secrets/${secretNameFor(id, 'DATABASE_URL')}`,
      api_key: `${vault.vaultUrl}/secrets/${secretNameFor(id, 'api_key')}`,
    });
    // what is stored next to the values (names, tags, the index) holds no value
    const stored = vault.secretNames().filter((name) => name.startsWith(id.replace('_', '-')));
    const visible = JSON.stringify([stored, stored.map((name) => vault.secret(name)?.tags)]);
    for (const value of Object.values(values)) expect(visible).not.toContain(value);
  });

  it('replaces the whole set on a second put', async () => {
    const id = newDeploymentId();
    await secrets.put(id, { KEEP: 'one', DROP: 'two' });
    await secrets.put(id, { KEEP: 'three' });
    expect(await secrets.get(id)).toEqual({ KEEP: 'three' });
    expect(vault.secret(secretNameFor(id, 'DROP'))).toBeUndefined();
  });

  it('purges what it deletes when the vault allows it', async () => {
    const id = newDeploymentId();
    await secrets.put(id, { ONE: '1-secret', TWO: '2-secret' });
    await secrets.delete(id);
    const prefix = id.replace('_', '-');
    expect(vault.secretNames().filter((name) => name.startsWith(prefix))).toEqual([]);
    expect(vault.deletedSecretNames().filter((name) => name.startsWith(prefix))).toEqual([]);
  });

  it('refuses a value larger than Key Vault takes, without echoing it', async () => {
    const big = 'v'.repeat(26 * 1024);
    const error = await errorOf(secrets.put(newDeploymentId(), { BIG: big }));
    expect(error.code).toBe('VALIDATION_ERROR');
    expect(error.message).toContain('BIG');
    expect(error.message).not.toContain('vvvv');
  });

  it('reports an unavailable vault as retryable, and unhealthy until it is back', async () => {
    const id = newDeploymentId();
    await secrets.put(id, { A: 'value-a' });
    vault.failWith(503);
    try {
      const error = await errorOf(secrets.get(id));
      expect(error.code).toBe('DEPENDENCY_UNAVAILABLE');
      expect(error.retryable).toBe(true);
      expect((await secrets.health()).status).toBe('unhealthy');
    } finally {
      vault.failWith(null);
    }
    expect((await secrets.health()).status).toBe('healthy');
  });
});

describe('KeyVaultSecretStore with purge protection', () => {
  it('leaves deleted secrets to Key Vault\'s retention, and recovers a name that is written again', async () => {
    const { vault, secrets } = await startStore({ purgeProtection: true });
    try {
      const id = newDeploymentId();
      await secrets.put(id, { TOKEN: 'first-value' });
      await secrets.delete(id);
      expect(await secrets.get(id)).toEqual({});
      expect(vault.deletedSecretNames()).toContain(secretNameFor(id, 'TOKEN'));

      await secrets.put(id, { TOKEN: 'second-value' });
      expect(await secrets.get(id)).toEqual({ TOKEN: 'second-value' });
      expect(vault.deletedSecretNames()).toEqual([]);
    } finally {
      await secrets.close();
      await vault.stop();
    }
  });
});

describe('KeyVaultSecretStore: app env values (issue 12)', () => {
  const app = (orgId: string, appName = 'web-1a2b3c-production') => ({ orgId, projectId: 'web', environment: 'production' as const, appName });

  it('keeps an app\'s values under a hashed prefix of org and app, replaces the whole set, and tells apps and orgs apart', async () => {
    const { vault, secrets } = await startStore();
    try {
      const mine = app('org_a');
      expect(await secrets.getAppEnv(mine)).toEqual({});
      await secrets.putAppEnv(mine, { GREETING: 'hello', api_key: 'k1' });
      expect(await secrets.getAppEnv(mine)).toEqual({ GREETING: 'hello', api_key: 'k1' });
      expect(await secrets.getAppEnv(app('org_b'))).toEqual({});
      expect(await secrets.getAppEnv(app('org_a', 'web-1a2b3c-staging'))).toEqual({});
      const prefix = appPrefixOf(mine);
      expect(prefix).toMatch(/^app-[0-9a-f]{26}-$/);
      expect(vault.secretNames().every((name) => name.startsWith(prefix) && /^[0-9a-zA-Z-]{1,127}$/.test(name))).toBe(true);
      expect(vault.secret(`${prefix}e-greeting`)?.tags).toEqual({ orgId: 'org_a', appName: mine.appName, envName: 'GREETING' });
      // A deployment's own copy is separate: the app's set changing never changes what a revision references.
      const id = newDeploymentId();
      await secrets.put(id, { GREETING: 'hello' });
      await secrets.putAppEnv(mine, { GREETING: 'bonjour' });
      expect(await secrets.get(id)).toEqual({ GREETING: 'hello' });
      expect(await secrets.getAppEnv(mine)).toEqual({ GREETING: 'bonjour' });
      // The dropped name is deleted and purged, not left soft-deleted.
      expect(vault.deletedSecretNames()).toEqual([]);
      expect(vault.secretNames().filter((name) => name.startsWith(prefix))).toEqual([`${prefix}e-greeting`, `${prefix}index`]);
      await secrets.putAppEnv(mine, {});
      expect(await secrets.getAppEnv(mine)).toEqual({});
      expect(vault.secretNames().filter((name) => name.startsWith(prefix))).toEqual([]);
      await secrets.deleteAppEnv(mine);
      await secrets.deleteAppEnv(mine);
    } finally {
      await secrets.close();
      await vault.stop();
    }
  });

  it('deletes and purges an app\'s values, and writes a name again while its purge is still finishing', async () => {
    const { vault, secrets } = await startStore({ purgeSettleMs: 600 });
    try {
      const mine = app('org_settle');
      await secrets.putAppEnv(mine, { GREETING: 'hello', PORT_NAME: 'http' });
      await secrets.deleteAppEnv(mine);
      expect(vault.secretNames()).toEqual([]);
      expect(vault.deletedSecretNames()).toEqual([]);
      expect(vault.requests.filter((request) => request.method === 'DELETE' && request.path.startsWith('/deletedsecrets/'))).toHaveLength(3);
      // Recreated at once: the first set meets ObjectIsBeingDeleted (409) and is retried until the purge is done.
      await secrets.putAppEnv(mine, { GREETING: 'again' });
      expect(await secrets.getAppEnv(mine)).toEqual({ GREETING: 'again' });
      const puts = vault.requests.filter((request) => request.method === 'PUT' && request.path === `/secrets/${appPrefixOf(mine)}e-greeting`);
      expect(puts.length).toBeGreaterThan(2);
    } finally {
      await secrets.close();
      await vault.stop();
    }
  });

  it('with purge protection, leaves deleted values soft-deleted and recovers a name written again', async () => {
    const { vault, secrets } = await startStore({ purgeProtection: true });
    try {
      const mine = app('org_protected');
      await secrets.putAppEnv(mine, { GREETING: 'hello' });
      await secrets.deleteAppEnv(mine);
      expect(await secrets.getAppEnv(mine)).toEqual({});
      expect(vault.deletedSecretNames()).toEqual([`${appPrefixOf(mine)}e-greeting`, `${appPrefixOf(mine)}index`]);
      await secrets.putAppEnv(mine, { GREETING: 'back' });
      expect(await secrets.getAppEnv(mine)).toEqual({ GREETING: 'back' });
      expect(vault.deletedSecretNames()).toEqual([]);
      // Key Vault recovers the whole secret: the old version is back beside the new one.
      expect(vault.secret(`${appPrefixOf(mine)}e-greeting`)?.versions).toBe(2);
    } finally {
      await secrets.close();
      await vault.stop();
    }
  });
});

describe('KeyVaultSecretStore with a token the vault rejects', () => {
  it('fails as a dependency problem a retry cannot fix, and is unhealthy', async () => {
    const { vault, secrets } = await startStore({}, 'not-the-right-token');
    try {
      const error = await errorOf(secrets.get(newDeploymentId()));
      expect([error.code, error.retryable]).toEqual(['DEPENDENCY_UNAVAILABLE', false]);
      expect(error.message).toContain('401');
      expect((await secrets.health()).status).toBe('unhealthy');
    } finally {
      await secrets.close();
      await vault.stop();
    }
  });
});

describe('resolveSettings', () => {
  const sources = [
    { variable: 'AZURE_SERVICE_BUS_CONNECTION_STRING', secret: 'service-bus-connection-string', required: true },
    { variable: 'APPLICATIONINSIGHTS_CONNECTION_STRING', secret: 'appinsights-connection-string', required: false },
  ] as const;
  let vault: FakeKeyVault;
  let reader: SecretReader;
  beforeAll(async () => {
    vault = await startFakeKeyVault();
    reader = keyVaultSecretReader({ vaultUrl: vault.vaultUrl, credential: fakeCredential(vault.token), verifyChallengeResource: false });
  });
  afterAll(async () => {
    await vault.stop();
  });

  const problemsOf = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      if (error instanceof ConfigError) return { problems: error.problems, message: error.message };
      throw error;
    }
    throw new Error('expected a ConfigError');
  };

  it('takes the environment first and never asks the vault for what it has', async () => {
    const asked: string[] = [];
    const counting: SecretReader = {
      getSecret: (name) => {
        asked.push(name);
        return Promise.resolve({ value: 'from-vault' });
      },
    };
    const settings = await resolveSettings({ AZURE_SERVICE_BUS_CONNECTION_STRING: 'Endpoint=sb://env/' }, sources, counting);
    expect(settings).toEqual({ AZURE_SERVICE_BUS_CONNECTION_STRING: 'Endpoint=sb://env/', APPLICATIONINSIGHTS_CONNECTION_STRING: 'from-vault' });
    expect(asked).toEqual(['appinsights-connection-string']);
  });

  it('falls back to the named Key Vault secret, and leaves an optional one unset when the vault lacks it', async () => {
    vault.setSecret('service-bus-connection-string', 'Endpoint=sb://vault/;SharedAccessKey=abc\n');
    const settings = await resolveSettings({ AZURE_SERVICE_BUS_CONNECTION_STRING: '  ' }, sources, reader);
    expect(settings.AZURE_SERVICE_BUS_CONNECTION_STRING).toBe('Endpoint=sb://vault/;SharedAccessKey=abc');
    expect(settings.APPLICATIONINSIGHTS_CONNECTION_STRING).toBeUndefined();
  });

  it('names the variable and the secret it looked for when a required setting is nowhere', async () => {
    const missing = [{ variable: 'AZURE_COSMOS_CONNECTION_STRING', secret: 'cosmos-connection-string', required: true }] as const;
    const { problems, message } = await problemsOf(resolveSettings({}, missing, reader));
    expect(problems).toHaveLength(1);
    expect(message).toContain('AZURE_COSMOS_CONNECTION_STRING');
    expect(message).toContain('"cosmos-connection-string"');
    const noVault = await problemsOf(resolveSettings({}, missing, null));
    expect(noVault.message).toMatch(/AZURE_COSMOS_CONNECTION_STRING: is not set, and no Key Vault is configured to read secret "cosmos-connection-string"/);
  });

  it('fails, even for an optional setting, when the vault cannot be read, without revealing values', async () => {
    vault.failWith(403);
    try {
      const { problems, message } = await problemsOf(resolveSettings({ AZURE_SERVICE_BUS_CONNECTION_STRING: 'Endpoint=sb://env/;SharedAccessKey=k' }, sources, reader));
      expect(problems.map((problem) => problem.variable)).toEqual(['APPLICATIONINSIGHTS_CONNECTION_STRING']);
      expect(message).toContain('"appinsights-connection-string" could not be read (HTTP 403');
      expect(message).not.toContain('SharedAccessKey');
    } finally {
      vault.failWith(null);
    }
  });
});
