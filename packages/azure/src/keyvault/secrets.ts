import type { AppRef } from '@zepid/core';
import { createHash } from 'node:crypto';
import type { TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import type { DependencyHealth, SecretStore } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, DeployError, ENV_NAME_PATTERN, mapLimit, probe } from '@zepid/core';
import { toVaultError, vaultCode, vaultStatus } from './errors.ts';

/**
 * Secret store on Azure Key Vault: one secret per env variable of a deployment, so a Container App
 * can reference each by URI (`keyVaultUrl` + identity) and the service never hands values around.
 *
 * Naming. Key Vault names are 1-127 of [0-9a-zA-Z-] and case-insensitive; env names are
 * [A-Za-z_][A-Za-z0-9_]* up to 128 and case-sensitive (API_KEY and api_key are two variables). So:
 *   dep-<26 id chars>-e-<name>   when the name has no lowercase letter and fits: `_` → `-`, lowercased,
 *                                e.g. DATABASE_URL → dep-…-e-database-url. Readable, and one-to-one,
 *                                since case carries no information in such names.
 *   dep-<26 id chars>-h-<sha256 of the name, hex>   otherwise. No two names that Key Vault would
 *                                confuse can be told apart in 94 case-insensitive characters, so
 *                                these are hashed; a collision would need a SHA-256 collision.
 *   dep-<26 id chars>-index      the deployment's env names as a JSON array (names are not secret).
 * The `dep-` prefix keeps deployment secrets apart from the service's own settings in a shared vault.
 * Key Vault cannot list by prefix or tag without reading the whole vault, hence the index; tags
 * (deploymentId, envName) are for people browsing the vault.
 *
 * Deletion. Soft delete is always on in Azure: a deleted secret stays recoverable for the vault's
 * retention and its name stays taken. `delete` deletes every secret, waits until Key Vault reports
 * it deleted, then purges it so values do not outlive the deployment. Purge is refused with purge
 * protection on, or without the purge permission (Key Vault Secrets Officer has none); the secret
 * then stays soft-deleted until Key Vault purges it at the end of the retention. If a deleted name is
 * written again (a put after a delete of the same deployment), the secret is recovered and given a
 * new version.
 */

export interface KeyVaultSecretStoreOptions {
  /** `https://<vault>.vault.azure.net` */
  vaultUrl: string;
  credential: TokenCredential;
  /**
   * Key Vault's auth challenge names the resource (`https://vault.azure.net`); the SDK checks that the
   * vault's host lies under it. Off only for a vault reached through a custom domain, or a local fake.
   */
  verifyChallengeResource?: boolean;
  /** How often a delete or recovery is polled until Key Vault finishes it. */
  pollIntervalMs?: number;
}

const DEPLOYMENT_ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const ENV_NAME = new RegExp(ENV_NAME_PATTERN);
const MAX_NAME = 127;
/** Key Vault's limit on a secret value. */
export const MAX_SECRET_VALUE_BYTES = 25 * 1024;
/** Parallel requests per operation: well inside Key Vault's throttling limits, still fast for 100 variables. */
const CONCURRENCY = 8;
const HEALTH_PROBE_SECRET = 'zepid-health-probe';

function prefixOf(deploymentId: string): string {
  if (!DEPLOYMENT_ID.test(deploymentId)) throw new DeployError('VALIDATION_ERROR', `not a deployment id: ${JSON.stringify(deploymentId)}`);
  return `${deploymentId.replace('_', '-')}-`;
}

/** The Key Vault secret name of one env variable of a deployment (see the naming above). */
export function secretNameFor(deploymentId: string, envName: string): string {
  const prefix = prefixOf(deploymentId);
  if (!ENV_NAME.test(envName)) throw new DeployError('VALIDATION_ERROR', `not an env variable name: ${JSON.stringify(envName.slice(0, 140))}`);
  const readable = `${prefix}e-${envName.replace(/_/g, '-').toLowerCase()}`;
  if (!/[a-z]/.test(envName) && readable.length <= MAX_NAME) return readable;
  return `${prefix}h-${createHash('sha256').update(envName).digest('hex')}`;
}

function indexNameFor(deploymentId: string): string {
  return `${prefixOf(deploymentId)}index`;
}

export class KeyVaultSecretStore implements SecretStore {
  private readonly options: KeyVaultSecretStoreOptions;
  private readonly vaultUrl: string;
  private client: SecretClient | null = null;

  constructor(options: KeyVaultSecretStoreOptions) {
    const url = new URL(options.vaultUrl);
    if (url.protocol !== 'https:') throw new Error('vaultUrl must be an https URL');
    this.options = options;
    this.vaultUrl = url.origin;
  }

  /** Nothing to create or open: the client authenticates on its first request. */
  start(): Promise<void> {
    this.client ??= new SecretClient(this.vaultUrl, this.options.credential, {
      disableChallengeResourceVerification: this.options.verifyChallengeResource === false,
      userAgentOptions: { userAgentPrefix: 'zepid-deploy' },
    });
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.client = null;
    return Promise.resolve();
  }

  /** Reads a secret that never exists: a 404 proves the vault answers and accepts our identity. */
  health(): Promise<DependencyHealth> {
    return probe(async () => {
      try {
        await this.secrets().getSecret(HEALTH_PROBE_SECRET);
      } catch (error) {
        if (vaultStatus(error) !== 404) throw toVaultError(error, 'read a secret');
      }
    });
  }

  private secrets(): SecretClient {
    if (this.client === null) throw new DeployError('INTERNAL_ERROR', 'KeyVaultSecretStore is not started');
    return this.client;
  }

  private get pollIntervalMs(): number {
    return this.options.pollIntervalMs ?? 2000;
  }

  /** The value of a secret, or null when it does not exist. */
  private async read(name: string): Promise<string | null> {
    try {
      return (await this.secrets().getSecret(name)).value ?? null;
    } catch (error) {
      if (vaultStatus(error) === 404) return null;
      throw toVaultError(error, `read secret ${name}`);
    }
  }

  private async write(name: string, value: string, tags: Record<string, string>, contentType: string): Promise<void> {
    const set = () => this.secrets().setSecret(name, value, { tags, contentType });
    try {
      await set();
    } catch (error) {
      if (vaultCode(error) !== 'ObjectIsDeletedButRecoverable') throw toVaultError(error, `write secret ${name}`);
      try {
        const poller = await this.secrets().beginRecoverDeletedSecret(name, { intervalInMs: this.pollIntervalMs });
        await poller.pollUntilDone();
        await set();
      } catch (retryError) {
        throw toVaultError(retryError, `recover and write secret ${name}`);
      }
    }
  }

  /** Deletes, waits for Key Vault to finish, and purges when the vault allows it. Absent is fine. */
  private async remove(name: string): Promise<void> {
    try {
      const poller = await this.secrets().beginDeleteSecret(name, { intervalInMs: this.pollIntervalMs });
      await poller.pollUntilDone();
    } catch (error) {
      // 404: already deleted (maybe by an interrupted earlier call); it may still await its purge.
      if (vaultStatus(error) !== 404) throw toVaultError(error, `delete secret ${name}`);
    }
    try {
      await this.secrets().purgeDeletedSecret(name);
    } catch (error) {
      const status = vaultStatus(error);
      // 403: purge protection or no purge permission: Key Vault purges it after the retention.
      if (status !== 403 && status !== 404) throw toVaultError(error, `purge secret ${name}`);
    }
  }

  private async indexOf(deploymentId: string): Promise<string[] | null> {
    const text = await this.read(indexNameFor(deploymentId));
    if (text === null) return null;
    try {
      const names: unknown = JSON.parse(text);
      if (Array.isArray(names) && names.every((name) => typeof name === 'string')) return names;
    } catch {
      // reported below
    }
    throw new DeployError('INTERNAL_ERROR', `Key Vault secret ${indexNameFor(deploymentId)} is not a list of env names`);
  }

  async put(deploymentId: string, values: Record<string, string>): Promise<void> {
    const names = Object.keys(values);
    if (names.length === 0) return;
    for (const name of names) {
      secretNameFor(deploymentId, name);
      if (Buffer.byteLength(values[name] ?? '') > MAX_SECRET_VALUE_BYTES) {
        throw new DeployError('VALIDATION_ERROR', `The value of ${name} is larger than Key Vault's limit of 25 KB`, {
          details: [{ field: `envVariables.${name}`, message: 'is larger than 25 KB' }],
        });
      }
    }
    const previous = (await this.indexOf(deploymentId)) ?? [];
    await mapLimit(names, CONCURRENCY, (name) =>
      this.write(secretNameFor(deploymentId, name), values[name] ?? '', { deploymentId, envName: name }, 'text/plain'),
    );
    // The index goes last: it never names a secret that was not written.
    await this.write(indexNameFor(deploymentId), JSON.stringify(names), { deploymentId }, 'application/json');
    const dropped = previous.filter((name) => !names.includes(name));
    await mapLimit(dropped, CONCURRENCY, (name) => this.remove(secretNameFor(deploymentId, name)));
  }

  async get(deploymentId: string): Promise<Record<string, string>> {
    const names = (await this.indexOf(deploymentId)) ?? [];
    const values = await mapLimit(names, CONCURRENCY, (name) => this.read(secretNameFor(deploymentId, name)));
    const result: Record<string, string> = {};
    names.forEach((name, index) => {
      const value = values[index];
      if (value !== null && value !== undefined) result[name] = value;
    });
    return result;
  }

  /** Versionless URIs, so a revision picks up the value current when it starts. No request is made. */
  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>> {
    try {
      return Promise.resolve(Object.fromEntries(names.map((name) => [name, `${this.vaultUrl}/secrets/${secretNameFor(deploymentId, name)}`])));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  async delete(deploymentId: string): Promise<void> {
    const names = await this.indexOf(deploymentId);
    if (names === null) return;
    await mapLimit(names, CONCURRENCY, (name) => this.remove(secretNameFor(deploymentId, name)));
    // The index goes last, so an interrupted delete can be run again and finish.
    await this.remove(indexNameFor(deploymentId));
  }

  // App env values (issue 12): not built yet in this adapter.
  putAppEnv(_app: AppRef, _values: Record<string, string>): Promise<void> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }

  getAppEnv(_app: AppRef): Promise<Record<string, string>> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }

  deleteAppEnv(_app: AppRef): Promise<void> {
    return Promise.reject(new DeployError('NOT_IMPLEMENTED', 'app env values are not built yet in this secret store (issue 12)'));
  }
}
